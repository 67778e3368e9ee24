"""Engines for the two supported databases, and schema migration at start-up."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
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


# The sqlite3 module asks for an adapter for every parameter that is not exactly an int, float, str or bytearray: a
# None or a bool costs two failed attribute look-ups, each formatting an error message, before it is bound as NULL
# or as an integer anyway (~1 µs; ingest binds ~20 NULLs per resource). Registered, they are found in a dict and
# bound the same way. Process-wide, like the module's own registry.
sqlite3.register_adapter(type(None), {None: None}.get)
sqlite3.register_adapter(bool, int)


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
        # After a burst of writes the log may have grown long; once it restarts, cut the file back to this.
        cursor.execute("PRAGMA journal_size_limit=67108864")
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
    """Copies SQLite's write-ahead log back into the database on a thread of its own, after writes.

    By default the commit that takes the log past 1,000 pages does this itself: a 1,000-entry bundle's commit
    then spent ~10 of its ~21 ms copying pages while the validation workers sat idle. Here a writer's
    connection checkpoints itself only as a backstop (`BACKSTOP_PAGES`, set in `before_write`, should this
    thread fall behind or fail), and a commit wakes this thread (`written`), which runs a PASSIVE checkpoint:
    it never waits for or blocks readers and writers, and copies what no reader still needs. It runs while the
    server answers and reads the next request, on a core that would otherwise wait; SQLite releases the GIL.

    The log restarts from its beginning only when a writer begins after everything was copied. With writes
    back to back a PASSIVE checkpoint never gets there (the next writer is already adding pages), so once the
    log is long the next writer first copies what was added meanwhile (`before_write`), then restarts it.
    Small writes are gathered (up to `GATHER_SECONDS`) so that a stream of single-resource writes costs a
    checkpoint (two syncs) a second, not one each."""

    BACKSTOP_PAGES = 10_000  # ~40 MB of log: a writer checkpoints itself past this
    LONG_LOG_PAGES = 1_000  # SQLite's own default threshold
    BIG_WRITE = 200  # resources written: checkpoint at once
    GATHER_SECONDS = 1.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.restart_due = False
        self._wake = threading.Event()
        self._written = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    def before_write(self, pooled: Any) -> None:
        """Called by a writer holding the store's write lock, before it begins, with its pooled connection.
        Its automatic checkpoints become a backstop (once per connection). When the log is long, it copies what
        was written during the thread's last checkpoint (little: that checkpoint copied the rest), so that it
        finds the log fully copied and restarts it from its beginning."""
        if not pooled.info.get("wal_backstop"):
            pooled.driver_connection.execute(f"PRAGMA wal_autocheckpoint={self.BACKSTOP_PAGES}")
            pooled.info["wal_backstop"] = True
        if self.restart_due:
            self.restart_due = False
            self.checkpoint(pooled.driver_connection)

    def written(self, resources: int) -> None:
        """A write transaction that wrote `resources` resources has committed."""
        self._written += resources  # a lost update under a race only delays a checkpoint
        self._wake.set()

    @staticmethod
    def checkpoint(connection: Any) -> tuple[int, int, int]:
        """(busy, pages in the log, pages copied), as `PRAGMA wal_checkpoint(PASSIVE)` reports them."""
        cursor = connection.cursor()
        try:  # read to the end and close: a statement left open keeps a read mark, and the log cannot restart
            ((busy, logged, copied),) = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            cursor.close()
        return int(busy), int(logged), int(copied)

    def _run(self) -> None:
        connection = None
        while True:
            self._wake.wait()
            deadline = time.monotonic() + self.GATHER_SECONDS
            while not self._stopping:  # gather small writes: until BIG_WRITE resources or GATHER_SECONDS
                self._wake.clear()
                remaining = deadline - time.monotonic()
                if self._written >= self.BIG_WRITE or remaining <= 0:
                    break
                self._wake.wait(remaining)
            if self._stopping:
                break
            self._written = 0
            try:
                if connection is None:
                    connection = self._engine.raw_connection()
                _, logged, _ = self.checkpoint(connection)
                if logged >= self.LONG_LOG_PAGES:
                    self.restart_due = True  # see `before_write`
            except Exception:  # nothing is lost (the log keeps the pages); retried at the next write
                log.exception("SQLite WAL checkpoint failed")
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Stop the thread (the last connection to close checkpoints what is left)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
