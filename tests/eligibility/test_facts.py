"""Eligibility facts (`app.eligibility.facts.clinical_facts`) as `indexer.extract` derives them from a resource's
index rows: one row per distinct coding of `code`, with the status, date span, value and positivity that the
reference evaluator (`app.eligibility.reference`) reads from the resource itself."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from app.eligibility import reference
from app.eligibility.facts import FACT_PARAMETERS
from app.fhir.ucum import RELATIVE_TOLERANCE
from app.store.indexer import extract

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
LOCAL = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
END = (23, 59, 59, 999999)  # the last instant of a day


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def facts(resource: dict[str, Any], res_id: str = "r1") -> list[dict[str, Any]]:
    """The fact rows of a resource; the backfill's restricted extraction must give exactly the same ones."""
    rows = extract(resource["resourceType"], res_id, resource).rows.get("fact", [])
    if resource["resourceType"] in FACT_PARAMETERS:
        only = FACT_PARAMETERS[resource["resourceType"]]
        assert extract(resource["resourceType"], res_id, resource, only=only).rows.get("fact", []) == rows
    return rows


def fact(resource: dict[str, Any]) -> dict[str, Any]:
    rows = facts(resource)
    assert len(rows) == 1, rows
    return rows[0]


def concept(*codings: tuple[str | None, str]) -> dict[str, Any]:
    return {
        "coding": [{"code": code} if system is None else {"system": system, "code": code} for system, code in codings]
    }


def quantity(value: float, code: str | None = None, system: str | None = UCUM) -> dict[str, Any]:
    found: dict[str, Any] = {"value": value}
    if code is not None:
        found |= {"unit": code, "system": system, "code": code} if system else {"unit": code, "code": code}
    return found


def observation(**elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": concept((LOINC, "8099-4")),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-10-20",
        **elements,
    }


def condition(**elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "code": concept((SNOMED, "191627008")),
        "subject": {"reference": "Patient/p1"},
        **elements,
    }


# ------------------------------------------------------------------------------------------ rows and codings


def test_one_row_per_distinct_coding_with_the_same_values() -> None:
    resource = observation(
        code=concept((LOINC, "6690-2"), (LOCAL, "wbc"), (LOINC, "6690-2"), (None, "wbc")),
        valueQuantity=quantity(4.2, "10*3/uL"),
    )
    rows = facts(resource, "obs-1")
    assert [(row["system"], row["code"]) for row in rows] == [(LOINC, "6690-2"), (LOCAL, "wbc"), (None, "wbc")]
    shared = [{k: v for k, v in row.items() if k not in ("system", "code")} for row in rows]
    assert shared[0] == shared[1] == shared[2]
    assert shared[0]["res_type"] == "Observation" and shared[0]["res_id"] == "obs-1"
    assert shared[0]["patient_id"] == "p1" and shared[0]["value"] == 4.2


def test_no_facts_without_a_fact_type_or_a_code() -> None:
    assert facts({"resourceType": "Patient", "id": "p1", "gender": "female"}) == []
    uncoded = observation()
    del uncoded["code"]
    assert facts(uncoded) == []
    assert facts(observation(code={"text": "white cells"})) == []  # text only: no coding
    procedure = {"resourceType": "Procedure", "status": "completed", "code": concept((SNOMED, "80146002"))}
    assert facts(procedure | {"subject": {"reference": "Patient/p1"}}) == []  # coded, but not a fact type


# ------------------------------------------------------------------------------------------ Observation


@pytest.mark.parametrize(
    ("elements", "lo", "hi"),
    [
        (
            {"effectiveDateTime": "2026-10-20T10:30:00+02:00"},
            at(2026, 10, 20, 8, 30),
            at(2026, 10, 20, 8, 30, 0, 999999),
        ),
        ({"effectiveDateTime": "2026-10"}, at(2026, 10, 1), at(2026, 10, 31, *END)),
        ({"effectivePeriod": {"start": "2026-10-01", "end": "2026-10-03"}}, at(2026, 10, 1), at(2026, 10, 3, *END)),
        # an open end: the span ends where it starts
        ({"effectivePeriod": {"start": "2026-10-01T22:00:00-03:00"}}, at(2026, 10, 2, 1), at(2026, 10, 2, 1)),
        ({"effectivePeriod": {"end": "2026-10-03"}}, None, None),  # no start: no span
        (
            {"effectiveInstant": "2026-10-20T10:30:00.250Z"},
            at(2026, 10, 20, 10, 30, 0, 250000),
            at(2026, 10, 20, 10, 30, 0, 250000),
        ),
        ({}, None, None),
    ],
)
def test_observation_status_and_utc_span(elements: dict[str, Any], lo: datetime | None, hi: datetime | None) -> None:
    resource = observation(status="preliminary")
    del resource["effectiveDateTime"]
    row = fact(resource | elements)
    assert row["status"] == "preliminary" and row["clinical_status"] is None
    assert (row["lo"], row["hi"]) == (lo, hi)
    _, span = reference._dated(resource | elements, reference.OBSERVATION_DATE)
    assert (span[0] if span else None) == (lo.date() if lo else None)


def test_observation_value_as_written_and_canonical() -> None:
    per_mm3 = fact(observation(valueQuantity=quantity(4000, "/mm3")))
    per_ul = fact(observation(valueQuantity=quantity(4.0, "10*3/uL")))
    assert (per_mm3["value"], per_mm3["unit_system"], per_mm3["unit_code"]) == (4000.0, UCUM, "/mm3")
    assert (per_ul["value"], per_ul["unit_system"], per_ul["unit_code"]) == (4.0, UCUM, "10*3/uL")
    assert per_mm3["canonical_code"] == per_ul["canonical_code"] is not None
    assert math.isclose(per_mm3["canonical_value"], per_ul["canonical_value"], rel_tol=RELATIVE_TOLERANCE)
    assert math.isclose(per_mm3["canonical_value"], 4e12, rel_tol=1e-9)  # 4000 per mm3 = 4e12 per m3
    local = fact(observation(valueQuantity=quantity(7, "cells", system="http://example.org/units")))
    assert (local["value"], local["unit_code"], local["canonical_value"], local["canonical_code"]) == (
        7.0,
        "cells",
        None,
        None,
    )
    empty = fact(observation())
    assert [empty[k] for k in ("value", "unit_system", "unit_code", "canonical_value", "canonical_code")] == [None] * 5
    assert empty["positive"] is None


def interpreted(*codes: str, system: str | None = INTERPRETATION) -> list[dict[str, Any]]:
    return [concept((system, code)) for code in codes]


def ranged(*highs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"high": high} for high in highs]


IU_ML = quantity(35, "[IU]/mL")
POSITIVITY = {
    "POS beats N": ({"interpretation": interpreted("N", "POS")}, 1),
    "H beats N in one concept": ({"interpretation": [concept((INTERPRETATION, "N"), (INTERPRETATION, "H"))]}, 1),
    "N": ({"interpretation": interpreted("N")}, 0),
    "no system counts": ({"interpretation": interpreted("POS", system=None)}, 1),
    "foreign system ignored": ({"interpretation": interpreted("POS", system="http://example.org/flags")}, None),
    "foreign POS, then the high": (
        {"interpretation": interpreted("POS", system="http://example.org/flags"), "valueQuantity": IU_ML}
        | {"referenceRange": ranged(quantity(40, "[IU]/mL"))},
        0,
    ),
    "interpretation beats the high": (
        {"interpretation": interpreted("N"), "valueQuantity": IU_ML, "referenceRange": ranged(quantity(34))},
        0,
    ),
    "SNOMED positive": ({"valueCodeableConcept": concept((SNOMED, "10828004"))}, 1),
    "SNOMED negative": ({"valueCodeableConcept": concept((SNOMED, "260385009"))}, 0),
    "positive qualifier in another system": ({"valueCodeableConcept": concept((LOCAL, "10828004"))}, None),
    "bare high": ({"valueQuantity": IU_ML, "referenceRange": ranged({"value": 34})}, 1),
    "bare high above": ({"valueQuantity": IU_ML, "referenceRange": ranged({"value": 36})}, 0),
    "same unit": ({"valueQuantity": IU_ML, "referenceRange": ranged(quantity(34, "[IU]/mL"))}, 1),
    "same non-UCUM unit": (
        {"valueQuantity": quantity(5, "u", "http://example.org/u")}
        | {"referenceRange": ranged(quantity(4, "u", "http://example.org/u"))},
        1,
    ),
    "canonical: 35 [IU]/mL > 34000 [IU]/L": (
        {"valueQuantity": IU_ML, "referenceRange": ranged(quantity(34000, "[IU]/L"))},
        1,
    ),
    "canonical: 35 [IU]/mL <= 36000 [IU]/L": (
        {"valueQuantity": IU_ML, "referenceRange": ranged(quantity(36000, "[IU]/L"))},
        0,
    ),
    "incomparable units": ({"valueQuantity": IU_ML, "referenceRange": ranged(quantity(34, "mg/dL"))}, None),
    "a high with a unit text only": (
        {"valueQuantity": IU_ML, "referenceRange": ranged({"value": 34, "unit": "IU"})},
        None,
    ),
    "a high but no value": ({"referenceRange": ranged(quantity(34, "[IU]/mL"))}, None),
    "equal within tolerance, canonical": (
        {"valueQuantity": quantity(4000, "/mm3"), "referenceRange": ranged(quantity(4.0, "10*3/uL"))},
        0,
    ),
    # canonical 1100000.0 > 1099999.9999999998 [IU]/m3, but equal within the tolerance
    "canonically greater in the last bits": (
        {"valueQuantity": quantity(1.1, "[IU]/mL"), "referenceRange": ranged(quantity(1100, "[IU]/L"))},
        0,
    ),
    "greater in the last bits as written": (  # 0.1 + 0.2 = 0.30000000000000004
        {"valueQuantity": quantity(0.1 + 0.2, "mg"), "referenceRange": ranged(quantity(0.3, "mg"))},
        0,
    ),
    "above every high": (
        {"valueQuantity": IU_ML, "referenceRange": ranged(quantity(34, "[IU]/mL"), quantity(30000, "[IU]/L"))},
        1,
    ),
    "below one high": (
        {"valueQuantity": IU_ML, "referenceRange": ranged(quantity(34, "[IU]/mL"), quantity(40000, "[IU]/L"))},
        0,
    ),
    "incomparable highs skipped": (
        {"valueQuantity": IU_ML, "referenceRange": ranged(quantity(50, "mg"), quantity(34, "[IU]/mL"))},
        1,
    ),
}


@pytest.mark.parametrize(("elements", "positive"), list(POSITIVITY.values()), ids=list(POSITIVITY))
def test_positivity_mirrors_the_reference_evaluator(elements: dict[str, Any], positive: int | None) -> None:
    resource = observation(**elements)
    assert fact(resource)["positive"] == positive
    read = reference.positivity(resource)
    assert (None if isinstance(read, str) else int(read[0])) == positive, read


# ------------------------------------------------------------------------------------------ Condition


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        (("confirmed", "refuted"), "refuted"),
        (("unconfirmed", "entered-in-error"), "entered-in-error"),
        (("confirmed",), "confirmed"),
        ((), None),
    ],
)
def test_condition_verification_status_is_void_when_any_coding_is(codes: tuple[str, ...], status: str | None) -> None:
    elements = {"verificationStatus": concept(*((VERIFICATION, code) for code in codes))} if codes else {}
    resource = condition(**elements)
    assert fact(resource)["status"] == status
    assert reference._void(resource) == (status in reference.VOID_VERIFICATION)


@pytest.mark.parametrize(
    ("codes", "clinical"),
    [
        (("inactive", "active"), "active"),
        (("remission", "relapse"), "relapse"),
        (("resolved", "inactive"), "resolved"),
        ((), None),
    ],
)
def test_condition_clinical_status_prefers_an_active_code(codes: tuple[str, ...], clinical: str | None) -> None:
    elements = {"clinicalStatus": concept(*((CLINICAL, code) for code in codes))} if codes else {}
    resource = condition(**elements)
    row = fact(resource)
    assert row["clinical_status"] == clinical and row["positive"] is None and row["value"] is None
    assert reference._clinical(resource)[0] == (None if clinical is None else clinical in reference.ACTIVE_CLINICAL)


@pytest.mark.parametrize(
    ("elements", "lo", "hi"),
    [
        ({"onsetDateTime": "2026-09-15", "recordedDate": "2026-10-05"}, at(2026, 9, 15), at(2026, 9, 15, *END)),
        ({"recordedDate": "2026-10-05T09:00:00+02:00"}, at(2026, 10, 5, 7), at(2026, 10, 5, 7, 0, 0, 999999)),
        (
            {"onsetPeriod": {"start": "2026-01", "end": "2026-03-10"}, "recordedDate": "2026-10-05"},
            at(2026, 1, 1),
            at(2026, 3, 10, *END),
        ),
        ({"onsetPeriod": {"end": "2026-03-10"}, "recordedDate": "2026-10-05"}, at(2026, 10, 5), at(2026, 10, 5, *END)),
        ({"onsetString": "as a child", "recordedDate": "2026-10-05"}, at(2026, 10, 5), at(2026, 10, 5, *END)),
        ({"onsetString": "as a child"}, None, None),
    ],
)
def test_condition_onset_wins_over_recorded_date(elements: dict[str, Any], lo: Any, hi: Any) -> None:
    resource = condition(**elements)
    row = fact(resource)
    assert (row["lo"], row["hi"]) == (lo, hi)
    _, span = reference._dated(resource, reference.CONDITION_DATE)
    assert (span[0] if span else None) == (lo.date() if lo else None)


# ------------------------------------------------------------------------------------------ medications


def medication(resource_type: str, status: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "status": status,
        "medicationCodeableConcept": concept((ATC, "N06AB06"), (ATC, "N06AB06")),
        "subject": {"reference": "Patient/p1"},
        **elements,
    }


@pytest.mark.parametrize(
    ("elements", "lo", "hi"),
    [
        (
            {
                "authoredOn": "2026-08-20",
                "dispenseRequest": {"validityPeriod": {"start": "2026-09-01", "end": "2026-12-01"}},
            },
            at(2026, 9, 1),
            at(2026, 12, 1, *END),
        ),
        (
            {"authoredOn": "2026-08-20", "dispenseRequest": {"validityPeriod": {"start": "2026-09-01"}}},
            at(2026, 9, 1),
            None,
        ),
        (
            {"authoredOn": "2026-08-20", "dispenseRequest": {"numberOfRepeatsAllowed": 2}},
            at(2026, 8, 20),
            at(2026, 8, 20, *END),
        ),
        ({}, None, None),
    ],
)
def test_medication_request_validity_period_else_authored_on(elements: dict[str, Any], lo: Any, hi: Any) -> None:
    row = fact(medication("MedicationRequest", "active", intent="order", **elements))
    assert (row["system"], row["code"], row["status"]) == (ATC, "N06AB06", "active")
    assert (row["lo"], row["hi"]) == (lo, hi)


def test_medication_statement_and_administration_spans() -> None:
    open_ended = fact(medication("MedicationStatement", "active", effectivePeriod={"start": "2026-05-02"}))
    assert (open_ended["status"], open_ended["lo"], open_ended["hi"]) == ("active", at(2026, 5, 2), None)
    closed = fact(
        medication("MedicationStatement", "completed", effectivePeriod={"start": "2026-05", "end": "2026-06"})
    )
    assert (closed["lo"], closed["hi"]) == (at(2026, 5, 1), at(2026, 6, 30, *END))
    given = fact(medication("MedicationAdministration", "completed", effectiveDateTime="2026-10-01T08:00:00Z"))
    assert (given["status"], given["lo"], given["hi"]) == (
        "completed",
        at(2026, 10, 1, 8),
        at(2026, 10, 1, 8, 0, 0, 999999),
    )
    assert given["res_type"] == "MedicationAdministration" and given["patient_id"] == "p1"
