"""Index extraction: what rows a resource produces, and the date ranges FHIR values cover."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.fhir.dates import date_range
from app.store.indexer import extract, normalize_text


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2024-12", datetime(2024, 12, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)),
        (
            "2024-03-01T10:00:00+02:00",
            datetime(2024, 3, 1, 8, tzinfo=UTC),
            datetime(2024, 3, 1, 8, 0, 0, 999999, tzinfo=UTC),
        ),
        (
            "2024-03-01T10:00:00.250Z",
            datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC),
            datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC),
        ),
        ("9999-12", datetime(9999, 12, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_date_ranges(value: str, low: datetime, high: datetime) -> None:
    assert date_range(value) == (low, high)


def test_bad_dates_give_no_range() -> None:
    assert date_range("2024-13") is None
    assert date_range("yesterday") is None


def test_observation_rows_and_compartment() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2", "display": "Leukocytes"}]},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-02"},
        "valueQuantity": {"value": 4, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }
    index = extract("Observation", "o1", observation)
    assert index.patient_id == "p1"
    tokens = {(r["param"], r["system"], r["code"]) for r in index.rows["token"]}
    assert ("code", "http://loinc.org", "6690-2") in tokens and ("status", None, "final") in tokens
    # combo-code is code | component-code: no rows of its own, search reads its parts' rows
    assert not any(r.get("param", "").startswith("combo-") for rows in index.rows.values() for r in rows)
    references = {(r["param"], r["target_type"], r["target_id"]) for r in index.rows["reference"]}
    assert references == {("subject", "Patient", "p1")}  # `patient` is read from the subject rows
    dates = [(r["param"], r["low"], r["high"]) for r in index.rows["date"]]
    assert dates == [("date", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, 23, 59, 59, 999999, tzinfo=UTC))]
    quantities = {(r["param"], r["value"], r["code"]) for r in index.rows["quantity"]}
    assert quantities == {("value-quantity", 4.0, "10*3/uL")}
    assert all(r["patient_id"] == "p1" and r["res_id"] == "o1" for rows in index.rows.values() for r in rows)


def test_patient_strings_and_where_filtered_telecom() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Lefèvre", "given": ["Zoé"]}],
        "telecom": [{"system": "phone", "value": "+33 1 23"}, {"system": "email", "value": "z@x.fr"}],
    }
    index = extract("Patient", "p9", patient)
    assert index.patient_id == "p9"
    strings = {(r["param"], r["value"]) for r in index.rows["string"]}
    assert ("family", "lefevre") in strings and ("given", "zoe") in strings and ("name", "zoe") in strings
    tokens = {(r["param"], r["code"]) for r in index.rows["token"]}
    assert ("phone", "+33 1 23") in tokens and ("email", "z@x.fr") in tokens
    assert ("phone", "z@x.fr") not in tokens and ("email", "+33 1 23") not in tokens


def test_normalize_text() -> None:
    assert normalize_text("Émile DURAND") == "emile durand"


def test_a_reference_to_another_server_is_a_url_not_a_local_resource() -> None:
    """It must not put the resource in the compartment of a local patient who happens to have the same id."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "https://other.example/fhir/Patient/p1"},
    }
    index = extract("Observation", "o1", observation)
    assert index.patient_id is None
    rows = [(r["param"], r["target_type"], r["target_id"], r["url"]) for r in index.rows["reference"]]
    assert ("subject", None, None, "https://other.example/fhir/Patient/p1") in rows
    assert all(r["patient_id"] is None for rows in index.rows.values() for r in rows)
