"""The rules both eligibility evaluators and the eligibility facts share: which statuses count, which codes mean
positive, pregnant or taking part, and how values compare (`compare`, with the UCUM tolerance).

A leaf module (no pydantic models, no database): the store's indexer derives the facts with it on the write path,
the reference evaluator and the SQL compiler read the same constants, so the three cannot drift apart.
"""

from __future__ import annotations

import math

from app.fhir.systems import ICD10, ICD10_CM, LOINC, SNOMED
from app.fhir.systems import INTERPRETATION as INTERPRETATION_SYSTEM
from app.fhir.ucum import RELATIVE_TOLERANCE

ICD10_SYSTEMS = (ICD10, ICD10_CM)

VOID_VERIFICATION = frozenset({"refuted", "entered-in-error"})
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
POSITIVE_INTERPRETATIONS = frozenset({"POS", "H", "HH", "A", "AA", "DET"})
NEGATIVE_INTERPRETATIONS = frozenset({"NEG", "N", "L", "LL", "ND"})
POSITIVE_VALUE, NEGATIVE_VALUE = "10828004", "260385009"  # SNOMED CT qualifier values
HCG_CODES = frozenset({"2106-3", "2118-8"})
PREGNANCY_SNOMED = "77386006"
# ResearchSubject statuses meaning the patient took part (off-study: took part, ended; its period says when).
PARTICIPATING = frozenset(
    {"on-study", "on-study-intervention", "on-study-observation", "pending-on-study", "follow-up", "off-study"}
)
ONGOING_PARTICIPATION = PARTICIPATING - {"off-study"}
# Medication uses: the statuses that count, and those meaning a use without an end is ongoing.
STATEMENT_NOT_TAKEN = frozenset({"entered-in-error", "not-taken", "intended"})  # every other status counts
REQUEST_STATUSES, REQUEST_ONGOING = frozenset({"active", "completed"}), frozenset({"active"})
ADMINISTRATION_STATUSES, ADMINISTRATION_ONGOING = frozenset({"completed", "in-progress"}), frozenset({"in-progress"})
STATEMENT_ONGOING = frozenset({"active"})


def _equal(a: float, b: float) -> bool:
    # Canonical values reached by two routes (4000 /mm3, 4.0 10*3/uL) may differ in the last bits.
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)


def compare(value: float, comparator: str, threshold: float) -> bool:
    equal = _equal(value, threshold)
    if comparator == "=":
        return equal
    if comparator == "<":
        return value < threshold and not equal
    if comparator == "<=":
        return value < threshold or equal
    if comparator == ">":
        return value > threshold and not equal
    if comparator == ">=":
        return value > threshold or equal
    raise ValueError(f"unknown comparator {comparator!r}")


__all__ = [
    "ACTIVE_CLINICAL",
    "ADMINISTRATION_ONGOING",
    "ADMINISTRATION_STATUSES",
    "HCG_CODES",
    "ICD10_SYSTEMS",
    "INTERPRETATION_SYSTEM",
    "LOINC",
    "NEGATIVE_INTERPRETATIONS",
    "NEGATIVE_VALUE",
    "OBSERVATION_STATUSES",
    "ONGOING_PARTICIPATION",
    "PARTICIPATING",
    "POSITIVE_INTERPRETATIONS",
    "POSITIVE_VALUE",
    "PREGNANCY_SNOMED",
    "REQUEST_ONGOING",
    "REQUEST_STATUSES",
    "SNOMED",
    "STATEMENT_NOT_TAKEN",
    "STATEMENT_ONGOING",
    "VOID_VERIFICATION",
    "compare",
]
