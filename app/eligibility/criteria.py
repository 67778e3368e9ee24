"""The eligibility criteria language: the computable reading of a registry criterion, as strict data.

Each node is a one-key mapping in the study spec (``{age: {min: 18, max: 65}}``,
``{all_of: [...]}``), parsed into the models below. The language is documented in mappings/README.md.
Evaluation lives next door; this module only says what may be written.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.fhir import systems

# Short names for the code systems specs use; a full URL is accepted too.
SYSTEMS = {
    "snomed": systems.SNOMED,
    "icd10": systems.ICD10,
    "icd10cm": systems.ICD10_CM,
    "loinc": systems.LOINC,
    "atc": systems.ATC,
    "rxnorm": systems.RXNORM,
    "measure": systems.MEASURE,
    "meddra": systems.MEDDRA,
    "local-lab": systems.LOCAL_LAB,
}
_CODE = re.compile(r"^(?P<system>[A-Za-z0-9-]+|https?://[^|\s]+)\|(?P<code>[^|\s]+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ICD10_BLOCK = re.compile(r"^([A-Z]\d\d)-([A-Z]\d\d)$")


class CodeRef(Strict):
    """``system|code``; a code ending in ``*`` matches by prefix (ICD-10 and ATC are hierarchical by prefix),
    an ICD-10 block (``icd10|C00-C97``) matches every code whose category falls in it."""

    system: str
    code: str

    @property
    def prefix(self) -> bool:
        return self.code.endswith("*")

    @property
    def block(self) -> tuple[str, str] | None:
        match = _ICD10_BLOCK.match(self.code) if self.system == SYSTEMS["icd10"] else None
        return (match[1], match[2]) if match else None

    def matches(self, system: str | None, code: str | None) -> bool:
        if system != self.system or code is None:
            return False
        if self.prefix:
            return code.startswith(self.code[:-1])
        block = self.block
        if block is not None:
            return block[0] <= code[:3] <= block[1]
        return code == self.code

    def __str__(self) -> str:
        return f"{self.system}|{self.code}"


def parse_code(value: Any) -> Any:
    if isinstance(value, str):
        match = _CODE.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not 'system|code' (system: a URL or one of {', '.join(SYSTEMS)})")
        system = SYSTEMS.get(match["system"], match["system"])
        if not system.startswith("http"):
            raise ValueError(f"unknown code system {match['system']!r}: use a URL or one of {', '.join(SYSTEMS)}")
        return {"system": system, "code": match["code"]}
    return value


Code = Annotated[CodeRef, Field(description="system|code")]


class Window(Strict):
    """A look-back from the screening date: ``{days: 30}``, ``{months: 3}``, ``{years: 5}``."""

    days: int | None = Field(default=None, ge=0)
    months: int | None = Field(default=None, ge=0)
    years: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_unit(self) -> Window:
        if sum(v is not None for v in (self.days, self.months, self.years)) != 1:
            raise ValueError("a window has exactly one of days, months, years")
        return self


class _Coded(Strict):
    codes: list[Code] = Field(min_length=1)

    @field_validator("codes", mode="before")
    @classmethod
    def _parse_codes(cls, value: Any) -> Any:
        return [parse_code(v) for v in value] if isinstance(value, list) else value


class Age(Strict):
    """Age in whole years at the screening date, from Patient.birthDate; ``max`` is inclusive."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    below: int | None = Field(default=None, ge=1, description="exclusive upper bound: 'under 76'")


class Sex(Strict):
    administrative: list[Literal["male", "female", "other", "unknown"]] = Field(min_length=1)


Missing = Literal["absent", "unknown"]


class Condition(_Coded):
    """A Condition (or problem-list entry) with one of the codes, optionally with onset in a window."""

    within: Window | None = None
    exceptions: list[Code] = Field(default_factory=list)
    active_only: bool = False
    missing: Missing = "absent"

    @field_validator("exceptions", mode="before")
    @classmethod
    def _parse_exceptions(cls, value: Any) -> Any:
        return [parse_code(v) for v in value] if isinstance(value, list) else value


class Threshold(Strict):
    value: float
    unit: str


class Observation(_Coded):
    """A measured value compared with a threshold, or a positive/negative result.

    ``unit`` is UCUM; values in other units of the same dimension are converted. ``alternatives`` carry
    the same threshold in units UCUM cannot reach (haemoglobin 10 g/dL = 6.2 mmol/L needs a molar mass).
    """

    comparator: Literal["<", "<=", ">", ">=", "="] | None = None
    value: float | None = None
    unit: str | None = None
    alternatives: list[Threshold] = Field(default_factory=list)
    positive: bool | None = Field(default=None, description="true: positive result (interpretation/range)")
    lookback: Window | None = None
    which: Literal["latest", "any", "all"] = "latest"
    missing: Missing = "unknown"

    @model_validator(mode="after")
    def _threshold_or_positive(self) -> Observation:
        has_threshold = self.comparator is not None and self.value is not None and self.unit is not None
        if has_threshold == (self.positive is not None):
            raise ValueError("give either comparator + value + unit, or positive: true/false")
        if self.positive is None and (self.comparator is None) != (self.value is None):
            raise ValueError("comparator and value go together")
        return self


class Medication(_Coded):
    """A medication (MedicationStatement, MedicationRequest, MedicationAdministration) current or in a window."""

    within: Window | None = Field(default=None, description="absent: current at the screening date")
    ever: bool = Field(default=False, description="any use before the screening date, however long ago")
    min_duration: Window | None = None
    missing: Missing = "absent"

    @model_validator(mode="after")
    def _window_or_ever(self) -> Medication:
        if self.ever and self.within is not None:
            raise ValueError("give within or ever, not both")
        return self


class Pregnancy(Strict):
    """Pregnancy (Condition) or a positive hCG in the window; lactation by its Condition code."""

    within: Window = Field(default_factory=lambda: Window(days=30))
    include_lactation: bool = True
    missing: Missing = "absent"


class OtherStudy(Strict):
    """Participation (ResearchSubject on-study/follow-up...) in another interventional study now or recently."""

    within: Window = Field(default_factory=lambda: Window(days=30))
    missing: Missing = "absent"


EXPRESSION_KINDS = (
    "age", "sex", "condition", "observation", "medication", "pregnancy", "other_study", "all_of", "any_of", "not",
    "at_least",
)  # fmt: skip


class AtLeast(Strict):
    n: int = Field(ge=1)
    of: list[Expression] = Field(min_length=1)


class Expression(Strict):
    """Exactly one of the node kinds."""

    age: Age | None = None
    sex: Sex | None = None
    condition: Condition | None = None
    observation: Observation | None = None
    medication: Medication | None = None
    pregnancy: Pregnancy | None = None
    other_study: OtherStudy | None = None
    all_of: list[Expression] | None = Field(default=None, min_length=1)
    any_of: list[Expression] | None = Field(default=None, min_length=1)
    not_: Expression | None = Field(default=None, alias="not")
    at_least: AtLeast | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> Expression:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            kinds = (
                "age, sex, condition, observation, medication, pregnancy, other_study, all_of, any_of, not, at_least"
            )
            raise ValueError(f"an expression has exactly one of {kinds}; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        name = next(name for name in type(self).model_fields if getattr(self, name) is not None)
        return "not" if name == "not_" else name

    @property
    def node(self) -> Any:
        return getattr(self, "not_" if self.kind == "not" else self.kind)


AtLeast.model_rebuild()


class Criterion(Strict):
    """One registry criterion: its text, whether it includes or excludes, and how it is decided."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    type: Literal["inclusion", "exclusion"]
    text: str = Field(min_length=1)
    expression: Expression | None = None
    manual: bool = False
    reason: str | None = Field(default=None, description="why data cannot decide it (manual criteria)")

    @model_validator(mode="after")
    def _computable_or_manual(self) -> Criterion:
        if self.manual == (self.expression is not None):
            raise ValueError("a criterion has either an expression or manual: true (with a reason)")
        if self.manual and not self.reason:
            raise ValueError("a manual criterion says why data cannot decide it (reason)")
        return self


class Eligibility(Strict):
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Eligibility:
        ids = [c.id for c in self.criteria]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"criterion ids must be unique: {', '.join(duplicates)}")
        return self
