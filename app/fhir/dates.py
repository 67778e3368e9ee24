"""FHIR date, dateTime and instant values as the UTC instant ranges they cover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_PRECISION_STEP = {4: "year", 7: "month", 10: "day"}


def _last_instant_of(low: datetime, unit: str) -> datetime:
    try:
        if unit == "year":
            following = low.replace(year=low.year + 1)
        elif unit == "month":
            following = low.replace(year=low.year + low.month // 12, month=low.month % 12 + 1)
        else:
            following = low + timedelta(days=1)
    except (ValueError, OverflowError):  # the last period of year 9999
        return datetime.max.replace(tzinfo=UTC)
    return following - timedelta(microseconds=1)


def date_range(value: str) -> tuple[datetime, datetime] | None:
    """The instant range a FHIR date/dateTime/instant covers, in UTC: '2024-03' is all of March."""
    try:
        if len(value) in _PRECISION_STEP:
            year = int(value[:4])
            month = int(value[5:7]) if len(value) >= 7 else 1
            day = int(value[8:10]) if len(value) == 10 else 1
            low = datetime(year, month, day, tzinfo=UTC)
            return low, _last_instant_of(low, _PRECISION_STEP[len(value)])
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    low = parsed.astimezone(UTC)
    seconds_part = value[11:].split("+")[0].split("-")[0].rstrip("Z")
    if "." in seconds_part:
        return low, low
    if seconds_part.count(":") == 1:  # hh:mm (allowed in instants written by some clients)
        return low, low + timedelta(minutes=1, microseconds=-1)
    return low, low + timedelta(seconds=1, microseconds=-1)
