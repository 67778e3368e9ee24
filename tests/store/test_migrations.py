"""Alembic migrations build exactly the schema the code declares, on both databases, and re-run cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.store.db import make_engine, migrate
from app.store.schema import metadata


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: start-up runs it every time
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert differences == []
    assert {"resource", "resource_history", "idx_token", "idx_reference", "alembic_version"} <= tables
