"""Calendar arithmetic for eligibility: the days a FHIR date covers, windows back from the screening date, ages."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from typing import Any

from app.eligibility.criteria import Window
from app.fhir.dates import date_range

Span = tuple[date, date]


def date_span(value: Any) -> Span | None:
    """The first and last UTC day a FHIR date/dateTime/instant covers, as the index tables store it
    (`app.fhir.dates.date_range`): `2026-10-27T23:30:00-05:00` is 28 October (04:30 UTC), `2021-10` all
    of October, `2021` the whole year. None when `value` is not a date."""
    bounds = date_range(value) if isinstance(value, str) else None
    if bounds is None:
        return None
    return bounds[0].date(), bounds[1].date()


def period_span(period: Any) -> Span | None:
    """The days a Period covers: its start's first day to its end's last day; without an end, its start's
    first day only (the index keeps an open end, so nothing later is known); None without a start."""
    if not isinstance(period, dict):
        return None
    start, end = date_span(period.get("start")), date_span(period.get("end"))
    if start is None:
        return None
    return start[0], end[1] if end is not None else start[0]


def timing_span(timing: Any) -> Span | None:
    """The days a Timing covers, as its date index rows say: the span of its events and its boundsPeriod."""
    if not isinstance(timing, dict):
        return None
    spans = [span for event in timing.get("event") or () if (span := date_span(event)) is not None]
    bounds = period_span((timing.get("repeat") or {}).get("boundsPeriod"))
    if bounds is not None:
        spans.append(bounds)
    if not spans:
        return None
    return min(span[0] for span in spans), max(span[1] for span in spans)


def written_date(value: Any) -> str | None:
    """How evidence shows a date: a partial or plain date as written, a date-time as its UTC day."""
    if not isinstance(value, str):
        return None
    span = date_span(value)
    if len(value) <= 10 or span is None:
        return value[:10]
    return span[0].isoformat()


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


__all__ = [
    "Span",
    "date_span",
    "describe_window",
    "minus_months",
    "minus_window",
    "period_span",
    "timing_span",
    "whole_years",
    "written_date",
]
