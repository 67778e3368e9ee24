"""Named transforms that source specs apply to CSV cells, and the shapes of the code tables they take.

A spec column says ``transform: <name>`` (optionally ``table: <a table of the spec's tables>`` and
``with: [<earlier columns>]``); the engine calls ``TRANSFORMS[name].apply(value, *with_values, table=table)``
once the cell is typed, and the builders receive the result. A transform raises ``TransformError`` with a
sentence a person can act on; the engine reports it with the line and column. Code tables are data in the
spec (validated against ``Transform.table`` when the spec loads), never dicts in this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.eligibility.criteria import SYSTEMS, Code, Strict, parse_code
from app.fhir import ucum

UCUM = ucum.UCUM_SYSTEM
# Plain decimals only: no exponent, no thousands separator, at most 15 digits either side of the point.
_NUMBER = re.compile(r"[+-]?([0-9]{1,15}(\.[0-9]{1,15})?|\.[0-9]{1,15})")
_COMMA_DECIMAL = re.compile(r"[+-]?[0-9]+,[0-9]+")


class TransformError(ValueError):
    """A value the transform cannot map; the message says why and what to write instead.

    ``code`` is the OperationOutcome issue type: ``value`` (a bad value) or ``code-invalid`` (an unknown code);
    ``about`` the input at fault: 0 the transformed cell, n the n-th ``with`` column (reported at that column).
    """

    def __init__(self, message: str, code: str = "value", about: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.about = about


# ------------------------------------------------------------------------------------------ table shapes


class CodingEntry(Strict):
    """One coding of a code table: ``code: system|code`` (system short names as in study specs) and display."""

    code: Code
    display: str

    @field_validator("code", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_code(value)

    def coding(self) -> dict[str, Any]:
        return {"system": self.code.system, "code": self.code.code, "display": self.display}


class Grade(Strict):
    """A CTCAE grade: its NCIt coding and the R4 AdverseEvent.severity it implies."""

    code: Code
    display: str
    severity: CodingEntry

    @field_validator("code", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_code(value)

    def coding(self) -> dict[str, Any]:
        return {"system": self.code.system, "code": self.code.code, "display": self.display}


class ReportedUnit(Strict):
    """A unit a lab may report a test in.

    ``ucum``: the UCUM code the reported unit stands for, when the lab's spelling is not UCUM (``G/L`` is
    ``10*9/L``); omitted when the reported unit is UCUM already. ``one_target_unit_is``: how many reported
    units make one target unit, for conversions UCUM cannot make (mass to substance: haemoglobin
    1 g/dL = 0.6206 mmol/L); omitted, the value is converted through UCUM.
    """

    ucum: str | None = None
    one_target_unit_is: Decimal | None = Field(default=None, gt=0)


class LabTest(Strict):
    """A hospital-local lab test code: what it is, what to code it as, and the units it may come in."""

    display: str = Field(description="the local test's name (the local-lab CodeSystem display)")
    code: Code = Field(description="the target coding: LOINC or a TrialBridge measure code")
    code_display: str
    category: Literal["laboratory", "procedure", "exam"] = "laboratory"
    unit: str | None = Field(default=None, description="target UCUM unit; none: a positive/negative test")
    units: dict[str, ReportedUnit] = Field(default_factory=dict)
    specimen: CodingEntry | None = None
    significant_digits: int = Field(default=6, ge=2, le=15, description="of converted values")

    @field_validator("code", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_code(value)

    @property
    def ordinal(self) -> bool:
        return self.unit is None

    @model_validator(mode="after")
    def _units_convert(self) -> LabTest:
        if self.unit is None:
            if self.units:
                raise ValueError("a positive/negative test (no unit) takes no reported units")
            return self
        if not self.units:
            raise ValueError("a quantitative test needs at least one reported unit")
        target = ucum.conversion(self.unit)
        if target is None:
            raise ValueError(f"unit {self.unit!r} is not a convertible UCUM unit")
        for reported, rule in self.units.items():
            code = rule.ucum or reported
            if not ucum.is_valid(code):
                raise ValueError(f"reported unit {reported!r}: {code!r} is not UCUM; give its UCUM code as ucum")
            if rule.one_target_unit_is is None:
                found = ucum.conversion(code)
                if found is None or found.canonical_code != target.canonical_code:
                    raise ValueError(
                        f"reported unit {reported!r} ({code}) does not convert to {self.unit} through UCUM; "
                        "give one_target_unit_is"
                    )
        return self


# ------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class Transform:
    apply: Callable[..., Any]
    table: Any  # the type the spec's table must validate as; None: the transform takes no table
    inputs: int  # how many `with` columns it takes
    doc: str


def sex_code(value: str, *, table: Mapping[str, str]) -> str:
    """A sex code of the file (``M``/``F``) to Patient.gender (administrative-gender)."""
    try:
        return table[value]
    except KeyError:
        raise TransformError(f"{value!r} is not one of {', '.join(table)}.", "code-invalid") from None


def coding(value: Any, *, table: Mapping[str, CodingEntry]) -> dict[str, Any]:
    """A code of the file to a Coding, through a code table."""
    entry = table.get(str(value))
    if entry is None:
        raise TransformError(f"{value!r} is not one of {', '.join(table)}.", "code-invalid")
    return entry.coding()


def ctcae_grade(value: int, *, table: Mapping[int, Grade]) -> Grade:
    """A CTCAE grade (1-5) to its NCIt coding and the R4 severity it implies."""
    grade = table.get(value)
    if grade is None:
        raise TransformError(f"{value} is not a CTCAE grade ({', '.join(str(g) for g in table)}).", "code-invalid")
    return grade


def meddra_coding(code: str, term: str | None, *, table: None = None) -> dict[str, Any]:
    """A MedDRA preferred term (code and term) to a Coding; the term is the display."""
    coding_: dict[str, Any] = {"system": SYSTEMS["meddra"], "code": code}
    if term:
        coding_["display"] = term
    return coding_


def lab_test(value: str, *, table: Mapping[str, LabTest]) -> LabTest:
    """A local lab test code to its definition (target code, units, specimen)."""
    found = table.get(value)
    if found is None:
        raise TransformError(f"unknown test code {value!r}; known codes: {', '.join(table)}.", "code-invalid")
    return found


@dataclass(frozen=True, slots=True)
class Conversion:
    """How a reported quantity becomes one in the target unit."""

    reported_unit: str  # as the lab wrote it
    reported_code: str  # its UCUM code
    target_unit: str
    factor: float  # target value = reported value * factor
    significant_digits: int

    def apply(self, value: int | float) -> float:
        return round_significant(value * self.factor, self.significant_digits)


def round_significant(value: float, digits: int) -> float:
    """`value` rounded to `digits` significant digits (conversions carry float noise: 3.9999999999999996)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def unit_convert(test: LabTest, reported_unit: str) -> Conversion:
    """The conversion of `reported_unit` to the test's target unit (through UCUM, or the spec's explicit factor)."""
    assert test.unit is not None
    rule = test.units.get(reported_unit)
    if rule is None:
        raise TransformError(
            f"unit {reported_unit!r} is not accepted for {test.display}; use one of {', '.join(test.units)}.",
            "code-invalid",
        )
    code = rule.ucum or reported_unit
    if rule.one_target_unit_is is not None:
        factor = 1 / float(rule.one_target_unit_is)
    else:
        source, target = ucum.conversion(code), ucum.conversion(test.unit)
        assert source is not None and target is not None  # checked when the spec loaded
        factor = source.scale / target.scale
    return Conversion(reported_unit, code, test.unit, factor, test.significant_digits)


@dataclass(frozen=True, slots=True)
class LabResult:
    """A lab cell mapped: a quantity in the target unit (with its conversion), or a positive/negative coding."""

    value: float | None = None
    reported: int | float | None = None
    conversion: Conversion | None = None
    result: dict[str, Any] | None = None  # the valueCodeableConcept coding of an ordinal test


def parse_number(text: str) -> int | float:
    """A plain decimal number (``12``, ``-0.5``): int when it has no point. Raises TransformError otherwise."""
    cleaned = text.strip()
    if not _NUMBER.fullmatch(cleaned):
        hint = " (use a point as the decimal separator)" if _COMMA_DECIMAL.fullmatch(cleaned) else ""
        raise TransformError(f"{text!r} is not a number{hint}.")
    return float(cleaned) if "." in cleaned else int(cleaned)


def lab_result(value: str, test: LabTest, unit: str | None, *, table: Mapping[str, CodingEntry]) -> LabResult:
    """A lab value: numeric in an accepted unit (converted), or ``POS``/``NEG`` for a positive/negative test."""
    if test.ordinal:
        if unit:
            raise TransformError(
                f"{test.display} is a positive/negative test: leave unit empty (got {unit!r}).", about=2
            )
        entry = table.get(value)
        if entry is None:
            raise TransformError(
                f"{test.display} is a positive/negative test: write one of {', '.join(table)}, not {value!r}."
            )
        return LabResult(result=entry.coding())
    number = parse_number(value)
    if not unit:
        raise TransformError(f"{test.display} needs a unit (one of {', '.join(test.units)}).", "required", about=2)
    try:
        conversion = unit_convert(test, unit)
    except TransformError as exc:
        raise TransformError(str(exc), exc.code, about=2) from None  # the unit column is at fault
    return LabResult(value=conversion.apply(number), reported=number, conversion=conversion)


TRANSFORMS: dict[str, Transform] = {
    "sex_code": Transform(
        sex_code, dict[str, Literal["male", "female", "other", "unknown"]], 0, "code -> Patient.gender"
    ),
    "coding": Transform(coding, dict[str, CodingEntry], 0, "code -> Coding, through a code table"),
    "ctcae_grade": Transform(ctcae_grade, dict[int, Grade], 0, "CTCAE grade -> NCIt coding and severity"),
    "meddra_coding": Transform(meddra_coding, None, 1, "MedDRA PT code (with: its term) -> Coding"),
    "lab_test": Transform(lab_test, dict[str, LabTest], 0, "local test code -> its definition"),
    "lab_result": Transform(
        lab_result, dict[str, CodingEntry], 2, "value (with: test, unit) -> converted quantity or result coding"
    ),
}


__all__ = [
    "TRANSFORMS",
    "CodingEntry",
    "Conversion",
    "Grade",
    "LabResult",
    "LabTest",
    "ReportedUnit",
    "Transform",
    "TransformError",
    "lab_result",
    "parse_number",
    "round_significant",
    "unit_convert",
]
