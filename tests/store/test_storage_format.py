"""Index rows written at driver level (app/store/bulk.py) use the storage format SQLAlchemy itself reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects.sqlite import DATETIME
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

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
