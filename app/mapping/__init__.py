"""Declarative mappings: the specs under mappings/ applied to source records (no web framework here)."""
