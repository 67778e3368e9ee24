"""A transaction's references are resolved where its resources are checked (the validation workers) when the bundle
holds no conditional reference, and by the request thread before anything is written when it does. Both ways give
the same stored resources and the same errors; bundles here are big enough (>= 64 entries) for the workers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.fhir.references import may_hold_conditional_references

SITE = "https://hospital.example/mrn"
BASE = "http://testserver/fhir"
ENTRIES = 70


def observation(subject: str, performer: str | None = None, value: float = 5.0) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }
    if performer is not None:
        resource["performer"] = [{"reference": performer}]
    return resource


def bundle(conditional: bool, subject: str | None = None) -> dict[str, Any]:
    """A patient (by urn:uuid) and observations of it, some with an absolute reference to this server and one to
    another server; with `conditional`, one more observation whose subject is a conditional reference."""
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {"resourceType": "Patient", "identifier": [{"system": SITE, "value": "NEW"}]},
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for i in range(ENTRIES):
        performer = f"{BASE}/Practitioner/doc" if i % 2 else "https://other.example/fhir/Practitioner/x"
        entries.append(
            {
                "resource": observation(subject or patient_url, performer, value=i),
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    if conditional:
        entries.append(
            {
                "resource": observation(f"Patient?identifier={SITE}|KNOWN"),
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture
def known_patient(client: TestClient) -> str:
    known = {"resourceType": "Patient", "identifier": [{"system": SITE, "value": "KNOWN"}]}
    response = client.post("/fhir/Patient", json=known)
    assert response.status_code == 201
    return str(response.json()["id"])


def _stored_observations(client: TestClient, response: dict[str, Any]) -> list[dict[str, Any]]:
    locations = [e["response"]["location"] for e in response["entry"][1:]]
    return [client.get(f"/fhir/{'/'.join(location.split('/')[:2])}").json() for location in locations]


@pytest.mark.parametrize("conditional", [False, True], ids=["in-the-workers", "before-writing"])
def test_both_ways_store_the_same_references(client: TestClient, known_patient: str, conditional: bool) -> None:
    sent = bundle(conditional)
    assert may_hold_conditional_references(json.dumps(sent).encode()) is conditional  # the way it takes
    response = client.post("/fhir", json=sent)
    assert response.status_code == 200, response.json()
    body = response.json()
    patient_id = body["entry"][0]["response"]["location"].split("/")[1]
    stored = _stored_observations(client, body)
    assert len(stored) == ENTRIES + conditional
    for i, resource in enumerate(stored[:ENTRIES]):
        assert resource["subject"] == {"reference": f"Patient/{patient_id}"}
        expected = "Practitioner/doc" if i % 2 else "https://other.example/fhir/Practitioner/x"
        assert resource["performer"] == [{"reference": expected}]
    if conditional:
        assert stored[-1]["subject"] == {"reference": f"Patient/{known_patient}"}
    # the references are searchable as stored: the index rows were made from the resolved resources
    found = client.get("/fhir/Observation", params={"subject": f"Patient/{patient_id}", "_summary": "count"})
    assert found.json()["total"] == ENTRIES


@pytest.mark.parametrize("conditional", [False, True], ids=["in-the-workers", "before-writing"])
def test_an_unknown_urn_rejects_the_bundle_the_same_way(
    client: TestClient, known_patient: str, conditional: bool
) -> None:
    sent = bundle(conditional)
    sent["entry"][50]["resource"]["subject"] = {"reference": "urn:uuid:nobody"}
    response = client.post("/fhir", json=sent)
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert [(i["code"], i["expression"]) for i in issues] == [
        ("not-found", ["Bundle.entry[50].resource.subject.reference"])
    ]
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0


def test_an_unknown_urn_and_an_invalid_resource_are_both_reported(client: TestClient) -> None:
    sent = bundle(conditional=False)
    sent["entry"][10]["resource"]["subject"] = {"reference": "urn:uuid:nobody"}
    sent["entry"][60]["resource"]["status"] = "bogus"
    response = client.post("/fhir", json=sent)
    assert response.status_code == 400  # an unresolvable reference is the client's request, before validity
    assert [i["expression"] for i in response.json()["issue"]] == [
        ["Bundle.entry[10].resource.subject.reference"],
        ["Bundle.entry[60].resource.status"],
    ]


def test_representation_shows_the_references_as_resolved(client: TestClient) -> None:
    response = client.post("/fhir", json=bundle(conditional=False), headers={"Prefer": "return=representation"})
    assert response.status_code == 200
    entries = response.json()["entry"]
    patient_id = entries[0]["resource"]["id"]
    assert all(e["resource"]["subject"] == {"reference": f"Patient/{patient_id}"} for e in entries[1:])
    assert entries[2]["resource"]["performer"] == [{"reference": "Practitioner/doc"}]
    assert all(e["resource"]["meta"]["versionId"] == "1" for e in entries)
