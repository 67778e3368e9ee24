"""Engines for the two supported databases, and schema migration at start-up."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

log = logging.getLogger("trialbridge.store")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str) -> Engine:
    """An engine tuned per backend: SQLite in WAL mode with a busy timeout, PostgreSQL with a pool."""
    parsed = make_url(url)
    common: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        in_memory = not database or database == ":memory:"
        # A pool as large as the thread pool that uses it (anyio: 40 threads): a smaller one makes
        # concurrent requests queue for connections, and overflow connections are re-opened (and their
        # PRAGMAs re-run) on every request.
        sizing: dict[str, Any] = {"poolclass": NullPool} if in_memory else {"pool_size": 40, "max_overflow": 10}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sizing, **common)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per checkout (a third of a read). A connection the server dropped
    # fails one request and is discarded by the pool; recycling bounds how stale a connection gets.
    return create_engine(
        url, pool_size=40, max_overflow=10, pool_recycle=1800, connect_args={"options": "-c timezone=UTC"}, **common
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves: pysqlite's implicit transactions would begin DEFERRED, and a
        # deferred transaction that reads then writes can fail with SQLITE_BUSY instead of waiting.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the database lock up front (IMMEDIATE); readers use BEGIN.
        mode = connection.info.pop("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe on every start)."""
    command.upgrade(alembic_config(engine), "head")


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database on a thread of its own, after each write.

    By default the commit that takes the log past 1,000 pages does this itself: a 1,000-entry bundle's commit
    then spent ~10 of its ~21 ms copying pages while the validation workers sat idle. Here a writer's
    connection has automatic checkpoints off (`prepare_writer`) and, once it has committed, wakes this thread
    (`written`), which runs a PASSIVE checkpoint: it never waits for or blocks readers and writers, and
    copies what no reader still needs; the log restarts from its beginning at the next write once all of it
    is copied. The checkpoint runs while the server answers and reads the next request, on a core that would
    otherwise wait. SQLite releases the GIL while it checkpoints."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    @staticmethod
    def prepare_writer(dbapi_connection: Any) -> None:
        """Turn a writer's automatic checkpoints off (once per pooled connection)."""
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    def written(self) -> None:
        self._wake.set()

    def checkpoint(self, connection: Any) -> tuple[int, int, int]:
        """(busy, pages in the log, pages copied), as `PRAGMA wal_checkpoint(PASSIVE)` reports them."""
        busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(logged), int(copied)

    def _run(self) -> None:
        connection = self._engine.raw_connection()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    self.checkpoint(connection)
                except Exception:  # a failed checkpoint loses nothing (the log keeps the pages); try at the next write
                    log.exception("SQLite WAL checkpoint failed")
        finally:
            connection.close()

    def close(self) -> None:
        """Stop the thread (the last connection to close checkpoints what is left)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
