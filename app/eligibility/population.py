"""What a population screening returns: counts per status over the population, and a page of patients.

`app.eligibility.sql.screen` builds these from the rows of its one statement. Evidence is not here: the
caller runs the reference evaluator (`app.eligibility.reference`) on a page's patients for that, which
gives the same outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.eligibility.criteria import Criterion
from app.eligibility.outcome import Outcome, Status

STATUSES: tuple[Status, ...] = ("eligible", "ineligible", "incomplete")
OUTCOME_CODES: dict[int, Outcome] = {0: "pass", 1: "fail", 2: "unknown"}  # as the statement writes them


@dataclass(frozen=True, slots=True)
class ScreeningRow:
    patient_id: str
    status: Status
    outcomes: dict[str, Outcome]  # criterion id -> outcome, in the criteria's order; manual ones: "manual"


@dataclass(frozen=True, slots=True)
class Screening:
    counts: dict[Status, int]  # over the whole population (or the patients asked for), whatever the page
    rows: list[ScreeningRow]  # the page, by patient id

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def next_after(self, limit: int | None) -> str | None:
        """The `after` of the following page when this one is full (it may then be empty), else None."""
        if limit is None or limit <= 0 or len(self.rows) < limit:
            return None
        return self.rows[-1].patient_id


def read_screening(
    rows: Sequence[Mapping[Any, Any]], computable: Sequence[str], criteria: Sequence[Criterion]
) -> Screening:
    """The statement's rows (counts n_<status> on each; a NULL patient_id when the page is empty)."""
    first = rows[0]
    counts: dict[Status, int] = {name: int(first[f"n_{name}"] or 0) for name in STATUSES}
    page = [_row(row, computable, criteria) for row in rows if row["patient_id"] is not None]
    return Screening(counts, page)


def _row(row: Mapping[Any, Any], computable: Sequence[str], criteria: Sequence[Criterion]) -> ScreeningRow:
    decided = {criterion_id: OUTCOME_CODES[row[f"o{k}"]] for k, criterion_id in enumerate(computable)}
    outcomes: dict[str, Outcome] = {criterion.id: decided.get(criterion.id, "manual") for criterion in criteria}
    return ScreeningRow(str(row["patient_id"]), row["status"], outcomes)


__all__ = ["OUTCOME_CODES", "STATUSES", "Screening", "ScreeningRow", "read_screening"]
