"""Alembic migrations build exactly the schema the code declares, on both databases, and re-run cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from app.store.db import alembic_config, make_engine, migrate
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


def _fact_code_index(engine: Engine) -> list[str | None]:
    index = next(ix for ix in inspect(engine).get_indexes("clinical_fact") if ix["name"] == "ix_clinical_fact_code")
    return list(index["column_names"])


def _coding_statistics(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT stxname FROM pg_statistic_ext ORDER BY stxname").scalars())


def test_migration_0007_orders_the_fact_code_index_by_patient_and_its_downgrade_does_not(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    postgresql = engine.dialect.name == "postgresql"
    key = ["res_type", "code", "system", "patient_id"]
    assert _fact_code_index(engine)[:4] == key
    if postgresql:
        assert _coding_statistics(engine) == ["clinical_fact_coding"]
    config = alembic_config(engine)
    command.downgrade(config, "0006")
    try:
        downgraded = _fact_code_index(engine)
        assert downgraded[:3] == key[:3] and "patient_id" not in downgraded[:4]
        if postgresql:
            assert _coding_statistics(engine) == []
    finally:
        command.upgrade(config, "head")
    assert _fact_code_index(engine)[:4] == key
    engine.dispose()
