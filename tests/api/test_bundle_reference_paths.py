"""A transaction's references are resolved where its resources are checked (the validation workers) when the bundle
holds no conditional reference, and by the request thread before anything is written when it does. Both ways give
the same stored resources and the same errors; bundles here are big enough (>= 64 entries) for the workers."""

from __future__ import annotations

import json
import sys
import uuid
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.fhir.bundle import WRITE_AT_LEAST
from app.fhir.errors import conflict
from app.fhir.references import may_hold_conditional_references
from app.fhir.validator_pool import ValidatorPool
from app.store.repository import WriteTransaction

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


def bundle(conditional: bool, subject: str | None = None, observations: int = ENTRIES) -> dict[str, Any]:
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
    for i in range(observations):
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


@pytest.mark.parametrize("conditional", [False, True], ids=["in-the-workers", "before-writing"])
def test_the_server_takes_the_way_the_body_calls_for(
    client: TestClient, known_patient: str, conditional: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[bool] = []
    check_each = ValidatorPool.check_each

    def spy(self: ValidatorPool, *args: Any, **kwargs: Any) -> Any:
        taken.append(kwargs.get("references") is not None)
        return check_each(self, *args, **kwargs)

    monkeypatch.setattr(ValidatorPool, "check_each", spy)
    assert client.post("/fhir", json=bundle(conditional)).status_code == 200
    assert taken == [not conditional]


def test_unresolved_references_are_reported_in_entry_order_either_way(client: TestClient) -> None:
    """A PUT's references are resolved before writing, a POST's in the checks: the report is in entry order."""
    sent = bundle(conditional=False)
    sent["entry"][3]["resource"]["subject"] = {"reference": "urn:uuid:nobody"}
    put = observation("urn:uuid:nobody-either")
    sent["entry"].insert(
        2, {"resource": {**put, "id": "o-put"}, "request": {"method": "PUT", "url": "Observation/o-put"}}
    )
    response = client.post("/fhir", json=sent)
    assert response.status_code == 400
    assert [i["expression"] for i in response.json()["issue"]] == [
        ["Bundle.entry[2].resource.subject.reference"],
        ["Bundle.entry[4].resource.subject.reference"],
    ]


def test_a_put_naming_a_new_resources_full_url_is_resolved_too(client: TestClient) -> None:
    sent = bundle(conditional=False)
    patient_url = sent["entry"][0]["fullUrl"]
    sent["entry"].append(
        {
            "resource": {**observation(patient_url), "id": "o-put"},
            "request": {"method": "PUT", "url": "Observation/o-put"},
        }
    )
    response = client.post("/fhir", json=sent)
    assert response.status_code == 200, response.json()
    patient_id = response.json()["entry"][0]["response"]["location"].split("/")[1]
    assert client.get("/fhir/Observation/o-put").json()["subject"] == {"reference": f"Patient/{patient_id}"}


def test_a_matched_if_none_exist_and_an_unstampable_post_in_a_bundle_resolved_in_the_workers(
    client: TestClient, known_patient: str
) -> None:
    sent = bundle(conditional=False)
    sent["entry"][5]["request"]["ifNoneExist"] = "identifier=none-such"  # matches nothing: created
    sent["entry"].append(
        {
            "resource": {"resourceType": "Patient", "identifier": [{"system": SITE, "value": "KNOWN"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SITE}|KNOWN"},
        }
    )
    matched = client.post("/fhir", json=sent)
    assert matched.status_code == 200, matched.json()
    assert matched.json()["entry"][-1]["response"]["location"].startswith(f"Patient/{known_patient}/")
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 2  # KNOWN and the new one

    broken = bundle(conditional=False)
    broken["entry"][7]["resource"]["meta"] = "not an object"
    response = client.post("/fhir", json=broken)
    assert response.status_code == 422
    assert any(i["expression"] == ["Bundle.entry[7].resource.meta"] for i in response.json()["issue"])


def test_a_write_failing_while_the_workers_check_leaves_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates are written while the next verdicts are awaited: a failure there is reported once every check is
    in (here a 409 from the database), and the transaction leaves nothing behind."""
    flush = WriteTransaction.flush
    failed: list[str] = []

    def failing_once(self: WriteTransaction) -> None:
        caller = sys._getframe(1).f_code.co_name
        if caller == "write_meanwhile" and self._pending_resources and not failed:
            failed.append(caller)
            raise conflict("simulated: another request wrote the same resource")
        flush(self)

    monkeypatch.setattr(WriteTransaction, "flush", failing_once)
    monkeypatch.setattr(Future, "done", lambda self: False)  # every verdict is awaited: the writes happen then
    response = client.post("/fhir", json=bundle(conditional=False, observations=3 * WRITE_AT_LEAST))
    assert failed == ["write_meanwhile"]
    assert response.status_code == 409
    assert "simulated" in response.json()["issue"][0]["diagnostics"]
    monkeypatch.undo()
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0
