"""Calendar arithmetic for eligibility: the days a FHIR date covers, windows back from the screening date, ages."""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from typing import Any

from app.eligibility.criteria import Window

# A FHIR date, dateTime or instant: the date part is all that counts here (the local date as written).
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T.*)?)?)?$")

Span = tuple[date, date]


def date_span(value: Any) -> Span | None:
    """The first and last day a FHIR date/dateTime/instant covers, by its date part as written (no time-zone
    shift): `2026-10-27T08:20:00+01:00` is 27 October, `2021-10` all of October, `2021` the whole year.
    None when `value` is not a date."""
    match = _DATE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day = (int(part) if part else None for part in match.groups())
    try:
        if month is None:
            return date(year, 1, 1), date(year, 12, 31)  # type: ignore[arg-type]
        if day is None:
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])  # type: ignore[arg-type]
        found = date(year, month, day)  # type: ignore[arg-type]
        return found, found
    except ValueError:
        return None


def minus_months(day: date, months: int) -> date:
    """`months` calendar months before `day`; the day is clamped to the month's end (31 March - 1 month = 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    if year < 1:
        return date.min
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def minus_window(day: date, window: Window) -> date:
    """The first day of the closed window [day - window, day] (calendar arithmetic for months and years)."""
    if window.days is not None:
        try:
            return day - timedelta(days=window.days)
        except OverflowError:
            return date.min
    months = window.months if window.months is not None else 12 * (window.years or 0)
    return minus_months(day, months)


def whole_years(born: date, on: date) -> int:
    """Age in whole years on `on`: the 66th birthday is 66; someone born on 29 February ages on 1 March."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def describe_window(window: Window) -> str:
    """`90 days`, `1 month`, `5 years`."""
    for unit in ("days", "months", "years"):
        count = getattr(window, unit)
        if count is not None:
            return f"{count} {unit[:-1] if count == 1 else unit}"
    raise AssertionError("a window has one unit")  # pragma: no cover - the model guarantees it


__all__ = ["Span", "date_span", "describe_window", "minus_months", "minus_window", "whole_years"]
