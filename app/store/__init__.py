"""Persistence: tables, migrations, the repository and the search indexes."""
