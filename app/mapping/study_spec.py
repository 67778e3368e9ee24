"""Study specs (mappings/studies/*.yaml): the strict model of a trial protocol, and its loader."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.eligibility.criteria import Code, Eligibility, Strict, parse_code
from app.mapping.yaml_source import SpecError, load_model

STUDY_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
ResearchStudyStatus = Literal[
    "active",
    "administratively-completed",
    "approved",
    "closed-to-accrual",
    "closed-to-accrual-and-intervention",
    "completed",
    "disapproved",
    "in-review",
    "temporarily-closed-to-accrual",
    "temporarily-closed-to-accrual-and-intervention",
    "withdrawn",
]
Phase = Literal[
    "n-a", "early-phase-1", "phase-1", "phase-1-phase-2", "phase-2", "phase-2-phase-3", "phase-3", "phase-4"
]


class Identifiers(Strict):
    nct: str = Field(pattern=r"^NCT\d{8}$")
    eudract: str | None = Field(default=None, pattern=r"^\d{4}-\d{6}-\d{2}$")
    other: list[str] = Field(default_factory=list)


class Sponsor(Strict):
    name: str
    collaborators: list[str] = Field(default_factory=list)


class Period(Strict):
    start: str = Field(pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$")
    end: str | None = Field(default=None, pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$")


class Design(Strict):
    allocation: Literal["randomized", "non-randomized", "n-a"]
    masking: Literal["none", "single", "double", "triple", "quadruple"]
    masked_roles: list[Literal["participant", "care-provider", "investigator", "outcomes-assessor"]] = Field(
        default_factory=list
    )
    model: Literal["single-group", "parallel", "crossover", "factorial", "sequential"]
    purpose: Literal["treatment", "prevention", "diagnostic", "supportive-care", "screening", "basic-science"]
    ratio: dict[str, int] = Field(default_factory=dict, description="arm id -> allocation weight")
    stratification: list[str] = Field(default_factory=list)
    description: str | None = None


class Dose(Strict):
    value: float = Field(gt=0)
    unit: str = Field(description="UCUM")
    per: Literal["day", "administration", "kg"] = "administration"


class Intervention(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    type: Literal["drug", "biological", "cell-therapy", "placebo", "device", "procedure"]
    description: str | None = None
    code: Code | None = None
    dose: Dose | None = None
    route: Literal["SC", "IV", "PO", "IM"]
    regimen: str = Field(description="the dose schedule as the protocol words it")

    @field_validator("code", mode="before")
    @classmethod
    def _parse_code(cls, value: Any) -> Any:
        return parse_code(value)


class Arm(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    type: Literal["experimental", "active-comparator", "placebo-comparator", "sham-comparator", "no-intervention"]
    description: str
    interventions: list[str] = Field(min_length=1)


class Activity(Strict):
    """Something done at visits: a measurement (with its code), a dose, a scale, a sample."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    code: Code | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _parse_code(cls, value: Any) -> Any:
        return parse_code(value)


class Visit(Strict):
    """A nominal visit: a study day (relative to the first dose's day) and its window in days."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    day: int
    window_before: int = Field(default=0, ge=0)
    window_after: int = Field(default=0, ge=0)
    activities: list[str] = Field(default_factory=list)
    repeat: int | None = Field(default=None, ge=2, description="repeated this many times, every `every` days")
    every: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _repeat_pairs(self) -> Visit:
        if (self.repeat is None) != (self.every is None):
            raise ValueError("repeat and every go together")
        return self


class Objective(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    type: Literal["primary", "secondary", "exploratory"]
    text: str


class OutcomeMeasure(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    type: Literal["primary", "secondary", "exploratory"]
    name: str
    time_frame: str
    description: str | None = None
    measure: Code | None = None

    @field_validator("measure", mode="before")
    @classmethod
    def _parse_code(cls, value: Any) -> Any:
        return parse_code(value)


class StudySpec(Strict):
    id: str = Field(pattern=STUDY_ID)
    acronym: str
    title: str
    identifiers: Identifiers
    status: ResearchStudyStatus
    phase: Phase
    sponsor: Sponsor
    conditions: list[Code] = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    description: str
    period: Period
    planned_enrollment: int = Field(gt=0)
    design: Design
    interventions: list[Intervention] = Field(min_length=1)
    arms: list[Arm] = Field(min_length=1)
    first_dose_day: Literal[0, 1] = Field(1, description="the study day number of the first dose (D0 or D1)")
    activities: list[Activity] = Field(default_factory=list)
    schedule: list[Visit] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    outcome_measures: list[OutcomeMeasure] = Field(min_length=1)
    eligibility: Eligibility

    @field_validator("conditions", mode="before")
    @classmethod
    def _parse_conditions(cls, value: Any) -> Any:
        return [parse_code(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _references_resolve(self) -> StudySpec:
        problems = []
        interventions = {i.id for i in self.interventions}
        arms = {a.id for a in self.arms}
        activities = {a.id for a in self.activities}
        for kind, ids in (("intervention", [i.id for i in self.interventions]), ("arm", [a.id for a in self.arms])):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                problems.append(f"duplicate {kind} ids: {', '.join(duplicates)}")
        for arm in self.arms:
            problems += [
                f"arm {arm.id!r} names unknown intervention {i!r}" for i in arm.interventions if i not in interventions
            ]
        problems += [f"design.ratio names unknown arm {a!r}" for a in self.design.ratio if a not in arms]
        visit_ids = [v.id for v in self.schedule]
        problems += [f"duplicate visit id {v!r}" for v in sorted({v for v in visit_ids if visit_ids.count(v) > 1})]
        for visit in self.schedule:
            problems += [
                f"visit {visit.id!r} names unknown activity {a!r}" for a in visit.activities if a not in activities
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def arm(self, arm_id: str) -> Arm:
        return next(a for a in self.arms if a.id == arm_id)

    def intervention(self, intervention_id: str) -> Intervention:
        return next(i for i in self.interventions if i.id == intervention_id)

    def visits(self) -> Iterator[tuple[str, str, int, int, int]]:
        """Every nominal visit occurrence: (id, name, day, window_before, window_after), repeats expanded."""
        for visit in self.schedule:
            if visit.repeat is None:
                yield visit.id, visit.name, visit.day, visit.window_before, visit.window_after
                continue
            for n in range(visit.repeat):
                yield (
                    f"{visit.id}-{n + 1}",
                    f"{visit.name} {n + 1}",
                    visit.day + n * (visit.every or 0),
                    visit.window_before,
                    visit.window_after,
                )

    def study_day(self, days_after_first_dose: int) -> int:
        """The study day of a date this many calendar days after the first dose (CDISC --DY: a D1 study has
        no day 0, the day before D1 is day -1; a D0 study counts straight through)."""
        if days_after_first_dose >= 0:
            return days_after_first_dose + self.first_dose_day
        return days_after_first_dose

    def days_after_first_dose(self, study_day: int) -> int:
        """The inverse of :meth:`study_day`."""
        return study_day - self.first_dose_day if study_day >= self.first_dose_day else study_day

    def occurrence(self, visit_id: str, study_day: int | None) -> str:
        """A recorded visit as a nominal visit id: a repeating visit named by its base id (`course`) becomes
        the occurrence for that day (`course-4`: the one whose window holds it, else the nearest)."""
        visit = next((v for v in self.schedule if v.id == visit_id), None)
        if visit is None or visit.repeat is None or study_day is None:
            return visit_id
        occurrences = [v for v in self.visits() if v[0].rsplit("-", 1)[0] == visit_id and v[0] != visit_id]
        inside = [v for v in occurrences if v[2] - v[3] <= study_day <= v[2] + v[4]]
        return min(inside or occurrences, key=lambda v: abs(study_day - v[2]))[0]

    def nominal_visit(self, study_day: int) -> str | None:
        """The visit whose window holds this study day (the closest nominal day wins a tie)."""
        best: tuple[int, str] | None = None
        for visit_id, _, day, before, after in self.visits():
            if day - before <= study_day <= day + after:
                distance = abs(study_day - day)
                if best is None or distance < best[0]:
                    best = (distance, visit_id)
        return best[1] if best else None


@dataclass(frozen=True)
class StudyRegistry:
    """The loaded study specs, by id and by NCT number."""

    studies: Mapping[str, StudySpec]

    def find(self, key: str) -> StudySpec | None:
        """A study by its id or NCT number (case-insensitive)."""
        lowered = key.strip().lower()
        if lowered in self.studies:
            return self.studies[lowered]
        return next((s for s in self.studies.values() if s.identifiers.nct.lower() == lowered), None)

    def __iter__(self) -> Iterator[StudySpec]:
        return iter(self.studies.values())

    def __len__(self) -> int:
        return len(self.studies)


def load_study(path: Path) -> StudySpec:
    spec = load_model(path, StudySpec)
    if spec.id != path.stem:
        raise SpecError(path, [(1, f"the study id {spec.id!r} must equal the file name {path.stem!r}")])
    return spec


def load_studies(directory: Path) -> StudyRegistry:
    """Every mappings/studies/*.yaml; SpecError (file, line, reason) on the first bad one."""
    studies = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = load_study(path)
        studies[spec.id] = spec
    return StudyRegistry(studies)
