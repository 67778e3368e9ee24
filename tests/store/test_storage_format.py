"""Index rows written at driver level (app/store/bulk.py) use the storage format SQLAlchemy itself reads."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects.sqlite import DATETIME
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

import app.store.db  # noqa: F401 - registers the sqlite3 adapters tested below
from app.store.bulk import _sqlite_datetime

_SQLALCHEMY_SQLITE = DATETIME().bind_processor(SQLiteDialect())
OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
)


@given(moment=st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 30)), zone=OFFSETS)
def test_sqlite_datetimes_are_sqlalchemys_text_of_the_utc_instant(moment: datetime, zone: timezone) -> None:
    aware = moment.replace(tzinfo=zone)
    expected = _SQLALCHEMY_SQLITE(aware.astimezone(UTC).replace(tzinfo=None))
    assert _sqlite_datetime(aware) == expected
    assert len(expected) == 26  # microseconds always written: text order is time order


def test_none_and_booleans_bind_as_sqlite_binds_them_without_adapters(tmp_path: Path) -> None:
    """The store registers adapters for None and bool (the sqlite3 module's look-up for them is slow when none is
    registered): what reaches the database is what the module binds on its own, NULL and 0 / 1."""
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    assert sqlite3.adapters[(bool, sqlite3.PrepareProtocol)](True) == 1
    connection = sqlite3.connect(tmp_path / "bind.sqlite3")
    connection.execute("CREATE TABLE t (a, b, c)")
    connection.executemany("INSERT INTO t VALUES (?, ?, ?)", [(None, True, False)])
    assert connection.execute("SELECT a, typeof(a), b, typeof(b), c FROM t").fetchall() == [
        (None, "null", 1, "integer", 0)
    ]
    connection.close()
