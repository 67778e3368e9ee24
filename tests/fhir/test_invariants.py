"""The FHIR invariants checked beyond the models, through validate_resource (what every write runs)."""

from __future__ import annotations

from typing import Any

import pytest

from app.fhir.errors import FhirError
from app.fhir.validation import validate_resource


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        **extra,
    }


def issues_of(resource: dict[str, Any]) -> list[tuple[str, list[str]]]:
    with pytest.raises(FhirError) as caught:
        validate_resource(resource)
    assert caught.value.status == 422
    return [(i.code, list(i.expression)) for i in caught.value.issues]


def test_quantity_code_needs_system() -> None:
    bad = observation(valueQuantity={"value": 12.1, "code": "g/dL", "unit": "g/dL"})
    assert issues_of(bad) == [("invariant", ["Observation.valueQuantity.system"])]
    validate_resource(observation(valueQuantity={"value": 12.1, "unit": "g/dL"}))  # no code: allowed


def test_period_start_after_end() -> None:
    bad = observation(effectivePeriod={"start": "2026-03-02", "end": "2026-03-01T10:00:00Z"})
    assert issues_of(bad) == [("invariant", ["Observation.effectivePeriod.start"])]
    validate_resource(observation(effectivePeriod={"start": "2026-03-01", "end": "2026-03-01T10:00:00Z"}))


def test_range_low_above_high() -> None:
    bad = observation(referenceRange=[{"low": {"value": 12, "unit": "g/dL"}, "high": {"value": 10, "unit": "g/dL"}}])
    assert issues_of(bad) == [("invariant", ["Observation.referenceRange[0].low"])]


def test_local_reference_must_be_contained() -> None:
    bad = observation(subject={"reference": "#p1"})
    assert issues_of(bad) == [("invariant", ["Observation.subject.reference"])]
    validate_resource(observation(subject={"reference": "#p1"}, contained=[{"resourceType": "Patient", "id": "p1"}]))


def test_observation_value_and_data_absent_reason_and_component_code() -> None:
    absent = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}]}
    assert issues_of(observation(valueString="x", dataAbsentReason=absent)) == [
        ("invariant", ["Observation.dataAbsentReason"])
    ]
    same_code = observation(
        valueString="x", component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}}]
    )
    assert issues_of(same_code) == [("invariant", ["Observation.component[0].code"])]


def test_an_observation_whose_code_coding_is_null_gets_a_422_naming_it() -> None:
    """The models let an explicit null list through; the invariants then read it as no coding (found by the memo's
    hypothesis test: it crashed with a TypeError, a 500)."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": None, "text": "Diplotype Call"},
        "component": [{"code": {"coding": None}, "valueString": "x"}],
        "valueString": "*1/*4",
    }
    try:
        validate_resource(observation)
    except FhirError as error:
        assert error.status == 422
        assert "Observation.code.coding" in [e for issue in error.issues for e in issue.expression]
    else:
        raise AssertionError("a null coding was accepted")
