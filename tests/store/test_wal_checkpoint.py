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

from app.store.db import WalCheckpointer, make_engine, migrate
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
        for _ in range(count):
            tx.create("Patient", {"resourceType": "Patient", "gender": "female", "name": [{"family": "Durand"}]})


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
        # a backstop only, far above SQLite's default of 1,000 pages
        assert tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WalCheckpointer.BACKSTOP_PAGES
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


def test_back_to_back_writes_keep_the_log_short(sqlite_store: tuple[Store, Path]) -> None:
    """A PASSIVE checkpoint alone never catches up with writers that follow each other at once: the log only
    grew, ~100 MB for these writes, or with the writers' backstop to ~40 MB (10,000 pages). The thread finishes
    under the write lock, so the next writer restarts the log: it peaks at ~3,000 pages (12-20 MB here)."""
    store, path = sqlite_store
    for _ in range(300):
        _write_patients(store, 50)
    time.sleep(0.5)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size < 30 * 2**20
    assert _wait_for(path, 15_000) == 15_000


def test_small_writes_are_checkpointed_within_a_second(sqlite_store: tuple[Store, Path]) -> None:
    store, path = sqlite_store
    _write_patients(store, 1)
    assert _checkpointed_patients(path) == 0  # gathered, not checkpointed at once
    assert _wait_for(path, 1) == 1
