"""What an eligibility evaluation returns: per criterion an outcome and its evidence, per patient a status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["pass", "fail", "unknown", "manual"]
Status = Literal["eligible", "ineligible", "incomplete"]
CriterionType = Literal["inclusion", "exclusion"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """A resource that decided a node (reference, date, value and unit or code), or a note saying why nothing could."""

    reference: str | None = None
    date: str | None = None
    value: float | str | bool | None = None
    unit: str | None = None
    code: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        fields = {
            "reference": self.reference,
            "date": self.date,
            "value": self.value,
            "unit": self.unit,
            "code": self.code,
            "note": self.note,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    type: CriterionType
    text: str
    outcome: Outcome
    evidence: tuple[Evidence, ...] = ()
    reason: str | None = None  # manual criteria: why data cannot decide

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "text": self.text,
            "outcome": self.outcome,
            "evidence": [evidence.to_json() for evidence in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class PatientResult:
    patient: str  # "Patient/{id}"
    status: Status
    criteria: tuple[CriterionResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "status": self.status,
            "criteria": [criterion.to_json() for criterion in self.criteria],
        }


def outcome_of(criterion_type: CriterionType, truth: bool | None) -> Outcome:
    """inclusion true -> pass, false -> fail; exclusion true -> fail, false -> pass; unknown -> unknown."""
    if truth is None:
        return "unknown"
    return "pass" if truth == (criterion_type == "inclusion") else "fail"


def status_of(outcomes: list[Outcome] | tuple[Outcome, ...]) -> Status:
    """ineligible if any criterion fails, else incomplete if one is unknown, else eligible (manual: to confirm)."""
    if "fail" in outcomes:
        return "ineligible"
    if "unknown" in outcomes:
        return "incomplete"
    return "eligible"


__all__ = ["CriterionResult", "Evidence", "Outcome", "PatientResult", "Status", "outcome_of", "status_of"]
