"""Shared fixtures: every store test runs on SQLite and on a real PostgreSQL server started here.

The PostgreSQL server is a throwaway cluster (app.testing.postgres) started once per test session;
each test gets empty tables (TRUNCATE), so tests are independent without re-creating databases.
Live-server fixtures start `trialbridge serve` as a real process on a loopback port, for the FHIR
clients that others wrote (fhirpy, fhirclient), which cannot talk to an in-process ASGI app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.config import Settings
from app.content import prepare_store
from app.fhir.validator_pool import ValidatorPool, default_workers
from app.main import create_app
from app.mapping.sources import load_sources
from app.mapping.study_spec import load_studies
from app.store.db import make_engine, migrate
from app.store.repository import Store
from app.store.schema import metadata
from app.testing.live import LiveServer, start_live_server, stop_live_server
from app.testing.postgres import PostgresServer

BACKENDS = ["sqlite", "postgresql"]
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database("trialbridge_test")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


def _truncate(engine: Engine) -> None:
    tables = [t.name for t in metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def demo_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database holding the whole demo (terminology, studies, hospital population, imported study
    CSVs), built once per test session for tests that only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.sqlite3'}"
    settings = Settings(database_url=url, load_demo=True)
    engine = make_engine(url)
    migrate(engine)
    validator = ValidatorPool(default_workers())
    try:
        studies = load_studies(settings.mappings_dir / "studies")
        prepare_store(
            engine,
            settings,
            studies,
            load_sources(settings.mappings_dir / "sources"),
            load_demo=True,
            validator=validator,
        )
    finally:
        validator.close()
        engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    _truncate(engine)
    engine.dispose()
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    yield store
    store.close()
    engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=2_000_000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        test_client.headers.update({"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
        yield test_client


# ------------------------------------------------------------------------------------------ live server


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(database_url, tmp_path / "server.log")
    yield server
    stop_live_server(server)
    log = server.log_path.read_text()
    assert "Traceback" not in log, f"the server logged an error:\n{log[-3000:]}"
