"""Each search parameter type and modifier, with edge cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.testing.fhir_calls import match_ids as ids
from app.testing.fhir_calls import put

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SITE = "https://hospital.example/mrn"


@pytest.fixture
def patients(client: TestClient) -> TestClient:
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "mr",
            "birthDate": "1980-03-15",
            "active": True,
            "meta": {
                "tag": [{"system": "https://trialbridge.dev/tag", "code": "depil2"}],
                "profile": ["http://hl7.org/fhir/StructureDefinition/Patient"],
                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
            },
            "identifier": [
                {
                    "system": SITE,
                    "value": "123",
                    "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record"},
                }
            ],
            "name": [{"family": "Müller-Lüdenscheidt", "given": ["Ana"]}],
        },
    )
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "ss",
            "birthDate": "1980",
            "active": False,
            "identifier": [
                {
                    "system": "urn:oid:1.2.250.1.213.1.4.8",
                    "value": "123",
                    "type": {"coding": [{"system": V2_0203, "code": "SS"}]},
                }
            ],
            "name": [{"family": "Muller", "given": ["Anatole"]}],
        },
    )
    put(client, {"resourceType": "Patient", "id": "bare", "name": [{"text": "Zoé"}]})
    return client


def test_token_forms(patients: TestClient) -> None:
    assert ids(patients, "Patient", {"identifier": "123"}) == {"mr", "ss"}
    assert ids(patients, "Patient", {"identifier": f"{SITE}|123"}) == {"mr"}
    assert ids(patients, "Patient", {"identifier": f"{SITE}|"}) == {"mr"}
    assert ids(patients, "Patient", {"identifier": "|123"}) == set()  # both identifiers have a system
    assert ids(patients, "Patient", {"identifier:of-type": f"{V2_0203}|MR|123"}) == {"mr"}
    assert ids(patients, "Patient", {"identifier:of-type": f"{V2_0203}|SS|123"}) == {"ss"}
    assert ids(patients, "Patient", {"identifier:text": "medical"}) == {"mr"}
    assert ids(patients, "Patient", {"active": "true"}) == {"mr"}
    assert ids(patients, "Patient", {"active:not": "true"}) == {"ss", "bare"}
    assert ids(patients, "Patient", {"_tag": "https://trialbridge.dev/tag|depil2"}) == {"mr"}
    assert ids(patients, "Patient", {"_security": "R"}) == {"mr"}
    assert ids(patients, "Patient", {"_profile": "http://hl7.org/fhir/StructureDefinition/Patient"}) == {"mr"}
    for bad in ({"identifier:of-type": "MR|123"}, {"gender:of-type": "a|b|c"}):
        assert patients.get("/fhir/Patient", params=bad).status_code == 400


def test_string_forms(patients: TestClient) -> None:
    assert ids(patients, "Patient", {"family": "muller"}) == {"mr", "ss"}  # accent-insensitive prefix
    assert ids(patients, "Patient", {"family:exact": "Muller"}) == {"ss"}
    assert ids(patients, "Patient", {"family:contains": "LUDEN"}) == {"mr"}
    assert ids(patients, "Patient", {"given": "ana"}) == {"mr", "ss"}
    assert ids(patients, "Patient", {"name": "zoe"}) == {"bare"}
    assert ids(patients, "Patient", [("given", "ana"), ("given", "anat")]) == {"ss"}  # repeated: AND
    assert ids(patients, "Patient", {"family": "zz,mull"}) == {"mr", "ss"}  # comma: OR


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1980", {"mr", "ss"}),  # eq: the stored range lies within 1980
        ("1980-03", {"mr"}),  # 'ss' (all of 1980) is not within March
        ("ge1980-03-15", {"mr", "ss"}),  # ss's range reaches to 1980-12-31
        ("gt1980-03-15", {"ss"}),
        ("lt1980-03-15", {"ss"}),
        ("le1980-03-15", {"mr", "ss"}),
        ("sa1979-12-31", {"mr", "ss"}),
        ("eb1980-06-01", {"mr"}),
        ("ne1980-03-15", {"ss"}),
        ("ap1980-03-15", {"mr", "ss"}),
    ],
)
def test_date_prefixes_and_partial_dates(patients: TestClient, value: str, expected: set[str]) -> None:
    assert ids(patients, "Patient", {"birthdate": value}) == expected


def test_missing_on_each_type(patients: TestClient) -> None:
    assert ids(patients, "Patient", {"birthdate:missing": "true"}) == {"bare"}
    assert ids(patients, "Patient", {"identifier:missing": "false"}) == {"mr", "ss"}
    assert ids(patients, "Patient", {"family:missing": "true"}) == {"bare"}
    assert ids(patients, "Patient", {"organization:missing": "true"}) == {"mr", "ss", "bare"}
    assert patients.get("/fhir/Patient", params={"family:missing": "maybe"}).status_code == 400


def test_number_reference_and_uri(client: TestClient) -> None:
    put(
        client,
        {
            "resourceType": "RiskAssessment",
            "id": "r1",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.8}],
        },
    )
    put(
        client,
        {
            "resourceType": "RiskAssessment",
            "id": "r2",
            "status": "final",
            "subject": {"reference": "Group/p1"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    )
    assert ids(client, "RiskAssessment", {"probability": "0.8"}) == {"r1"}
    assert ids(client, "RiskAssessment", {"probability": "1"}) == {"r1"}  # 1 means [0.5, 1.5)
    assert ids(client, "RiskAssessment", {"probability": "gt0.5"}) == {"r1"}
    assert ids(client, "RiskAssessment", {"subject": "p1"}) == {"r1", "r2"}  # id alone: any type
    assert ids(client, "RiskAssessment", {"subject:Group": "p1"}) == {"r2"}
    assert ids(client, "RiskAssessment", {"subject": "Patient/p1"}) == {"r1"}
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"identifier": {"system": SITE, "value": "123"}},
        },
    )
    assert ids(client, "Observation", {"subject:identifier": f"{SITE}|123"}) == {"o1"}
    put(
        client,
        {
            "resourceType": "ValueSet",
            "id": "vs",
            "status": "active",
            "url": "https://trialbridge.dev/fhir/ValueSet/mood-stabilisers",
        },
    )
    assert ids(client, "ValueSet", {"url": "https://trialbridge.dev/fhir/ValueSet/mood-stabilisers"}) == {"vs"}
    assert ids(client, "ValueSet", {"url:below": "https://trialbridge.dev/fhir"}) == {"vs"}
    assert ids(client, "ValueSet", {"url": "https://trialbridge.dev/fhir"}) == set()


def test_last_updated_and_id(patients: TestClient) -> None:
    assert ids(patients, "Patient", {"_id": "mr,bare"}) == {"mr", "bare"}
    assert ids(patients, "Patient", {"_lastUpdated": "gt2000-01-01"}) == {"mr", "ss", "bare"}
    assert ids(patients, "Patient", {"_lastUpdated": "lt2000-01-01"}) == set()
