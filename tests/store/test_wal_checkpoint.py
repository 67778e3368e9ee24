"""SQLite's write-ahead log is copied into the database by the store's checkpoint thread, not by commits.

The database file alone (opened `immutable`, which reads no log) shows what has been checkpointed: the writes
reach it without any commit checkpointing, and stay in the log when the thread is stopped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.db import make_engine, migrate
from app.store.repository import Store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "wal.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as conn:  # the schema into the file, so that the file alone can be read
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store = Store(engine)
    yield store, path
    store.close()
    engine.dispose()


def _write_patients(store: Store, count: int) -> None:
    with store.transaction() as tx:
        for number in range(count):
            tx.create("Patient", {"resourceType": "Patient", "gender": "female", "id": f"x{number}"})


def _checkpointed_patients(path: Path) -> int:
    """Patients in the database file itself, ignoring the log (-1 while a checkpoint is half-way)."""
    try:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM resource WHERE res_type = 'Patient'").fetchone()[0])
    except sqlite3.DatabaseError:
        return -1


def _wait_for(path: Path, expected: int) -> int:
    deadline = time.monotonic() + 10
    while (found := _checkpointed_patients(path)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_writers_do_not_checkpoint_and_the_thread_does(sqlite_store: tuple[Store, Path]) -> None:
    store, path = sqlite_store
    with store.transaction() as tx:
        assert tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    for _ in range(5):  # 1,500 resources: well past the 1,000 log pages at which a commit would checkpoint
        _write_patients(store, 300)
    assert _wait_for(path, 1500) == 1500


def test_without_the_thread_the_writes_stay_in_the_log(sqlite_store: tuple[Store, Path]) -> None:
    store, path = sqlite_store
    _write_patients(store, 10)
    assert _wait_for(path, 10) == 10
    store.close()  # no more checkpoints: what follows is in the log only, yet readable through SQLite
    for _ in range(5):
        _write_patients(store, 300)
    time.sleep(0.5)
    assert _checkpointed_patients(path) == 10
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM resource WHERE res_type = 'Patient'").scalar() == 1510
