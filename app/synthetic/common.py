"""Shared pieces of the synthetic generator: subjects, local date-times, number formats, scale items.

Everything here is deterministic: randomness comes only from the `random.Random` a caller passes in,
and dates only from fixed calendars (never the clock).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

Cell = str | int | None
Row = dict[str, Cell]

# Standard time offsets from UTC, in hours; both countries follow the EU summer-time rule.
UTC_OFFSET = {"FR": 1, "UK": 0}


@dataclass
class Subject:
    """One enrolment.csv row, plus the study days the other files need."""

    subject: str
    site: str
    site_patient_id: str
    sex: str
    birth_date: date
    consent_date: date
    randomisation_date: date | None = None
    arm: str = ""
    status: str = ""
    end_date: date | None = None
    end_reason: str = ""
    death_date: date | None = None
    strata: str = ""
    country: str = "FR"
    first_dose: date | None = None  # day 1 (or day 0) of the subject's study time
    last_day: int = 0  # the last study day with data (a visit, a dose or the end of follow-up)

    def day(self, study_day: int, first_dose_day: int = 1) -> date:
        """The calendar date of a study day (no day 0 when the first dose is day 1)."""
        assert self.first_dose is not None
        offset = study_day - first_dose_day
        if first_dose_day == 1 and study_day < 0:
            offset += 1
        return self.first_dose + timedelta(days=offset)

    def row(self, study: str) -> Row:
        return {
            "study": study,
            "site": self.site,
            "subject": self.subject,
            "site_patient_id": self.site_patient_id,
            "sex": self.sex,
            "birth_date": self.birth_date.isoformat(),
            "consent_date": self.consent_date.isoformat(),
            "randomisation_date": iso(self.randomisation_date),
            "arm": self.arm,
            "status": self.status,
            "end_date": iso(self.end_date),
            "end_reason": self.end_reason,
            "death_date": iso(self.death_date),
            "strata": self.strata,
        }


@dataclass
class StudyData:
    """The rows of each CSV file of one study, and the deliberate edge cases (id, why) to document."""

    study: str
    files: dict[str, list[Row]]
    notes: list[tuple[str, str]] = field(default_factory=list)


def iso(value: date | None) -> str:
    return value.isoformat() if value is not None else ""


def fixed(value: float, digits: int) -> str:
    """A number with a fixed count of decimals, as a laboratory prints it."""
    return f"{round(value, digits):.{digits}f}"


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _last_sunday(year: int, month: int) -> date:
    last = date(year, month, 31)
    return last - timedelta(days=(last.weekday() + 1) % 7)


def summer_time(day: date) -> bool:
    """EU summer time on a morning of `day` (from the last Sunday of March to the last Sunday of October)."""
    return _last_sunday(day.year, 3) <= day < _last_sunday(day.year, 10)


def local_datetime(day: date, hour: int, minute: int, country: str = "FR") -> str:
    """An ISO 8601 date-time with the local UTC offset of that day (`2021-03-04T09:30:00+01:00`)."""
    offset = UTC_OFFSET[country] + (1 if summer_time(day) else 0)
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+{offset:02d}:00"


def birth_date_for_age(rng: random.Random, on: date, age: int) -> date:
    """A birth date that makes someone exactly `age` years old on `on`."""
    latest = date(on.year - age, on.month, min(on.day, 28))
    return latest - timedelta(days=rng.randint(0, 360))


def site_patient_ids(rng: random.Random, count: int, first_digit: str = "8") -> list[str]:
    """Distinct 10-digit hospital patient numbers."""
    seen: set[str] = set()
    numbers: list[str] = []
    while len(numbers) < count:
        number = first_digit + f"{rng.randint(0, 10**9 - 1):09d}"
        if number not in seen:
            seen.add(number)
            numbers.append(number)
    return numbers


def spread(rng: random.Random, total: int, caps: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Item scores summing to `total`: one point at a time on a weighted item that is not yet at its cap."""
    if total > sum(caps):
        raise ValueError(f"a total of {total} does not fit items capped at {list(caps)}")
    scores = [0] * len(caps)
    for _ in range(total):
        open_items = [index for index, cap in enumerate(caps) if scores[index] < cap]
        chosen = rng.choices(open_items, [weights[index] for index in open_items])[0]
        scores[chosen] += 1
    return scores


def shift(rng: random.Random, scores: Sequence[int], target: int, caps: Sequence[int]) -> list[int]:
    """Move item scores one point at a time until they sum to `target` (items with more points lose first)."""
    result = list(scores)
    target = int(clamp(target, 0, sum(caps)))
    while sum(result) > target:
        candidates = [index for index, value in enumerate(result) if value > 0]
        chosen = rng.choices(candidates, [result[index] for index in candidates])[0]
        result[chosen] -= 1
    while sum(result) < target:
        candidates = [index for index, value in enumerate(result) if value < caps[index]]
        chosen = rng.choices(candidates, [1 + result[index] for index in candidates])[0]
        result[chosen] += 1
    return result


def csv_text(columns: Sequence[str], rows: Iterable[Row]) -> str:
    """CSV with exactly the contract's columns; a key outside them raises (unknown columns are an error)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()
