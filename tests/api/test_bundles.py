"""Transaction and batch bundles at POST /fhir, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

SITE = "https://hospital.example/mrn"
LOINC = "http://loinc.org"


def patient(mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SITE, "value": mrn}], "gender": "female"}


def observation(subject: str, value: float = 5.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }


def post_entry(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def count(client: TestClient, resource_type: str) -> int:
    total: int = client.get(f"/fhir/{resource_type}", params={"_summary": "count"}).json()["total"]
    return total


def test_transaction_rewrites_urn_uuid_references(client: TestClient) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    response = client.post(
        "/fhir",
        json=transaction(
            post_entry(observation(patient_url)),  # refers to an entry that comes later
            post_entry(patient("MRN-1"), patient_url),
        ),
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["type"] == "transaction-response"
    obs_response, patient_response = (e["response"] for e in body["entry"])
    assert obs_response["status"] == "201 Created" and patient_response["status"] == "201 Created"
    assert patient_response["etag"] == 'W/"1"' and "lastModified" in patient_response
    patient_id = patient_response["location"].split("/")[1]
    obs_id = obs_response["location"].split("/")[1]
    stored = client.get(f"/fhir/Observation/{obs_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_with_invalid_500th_entry_creates_nothing(client: TestClient) -> None:
    versions_before = client.get("/fhir/_history").json()["total"]  # what start-up published (studies, terminology)
    entries = [post_entry(patient(f"MRN-{i}")) for i in range(499)]
    bad = observation("Patient/x")
    bad["status"] = "bogus"
    entries.append(post_entry(bad))
    response = client.post("/fhir", json=transaction(*entries))
    assert response.status_code == 422
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": response.json()["issue"][0]["diagnostics"],
                "expression": ["Bundle.entry[499].resource.status"],
            }
        ],
    }
    assert "bogus" in response.json()["issue"][0]["diagnostics"]
    assert count(client, "Patient") == 0
    assert client.get("/fhir/_history").json()["total"] == versions_before


def test_transaction_failing_at_execution_rolls_back(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json={**patient("MRN-1"), "id": "p1"})
    response = client.post(
        "/fhir",
        json=transaction(
            post_entry(patient("MRN-2")),
            {
                "resource": {**patient("MRN-1"), "id": "p1"},
                "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 'W/"7"'},
            },
        ),
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert count(client, "Patient") == 1


def test_conditional_references(client: TestClient) -> None:
    client.post("/fhir/Patient", json=patient("ONE"))
    client.post("/fhir/Patient", json=patient("TWICE"))
    client.post("/fhir/Patient", json=patient("TWICE"))

    one = client.post("/fhir", json=transaction(post_entry(observation(f"Patient?identifier={SITE}|ONE"))))
    assert one.status_code == 200
    obs_id = one.json()["entry"][0]["response"]["location"].split("/")[1]
    target = client.get("/fhir/Patient", params={"identifier": f"{SITE}|ONE"}).json()["entry"][0]["resource"]["id"]
    assert client.get(f"/fhir/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{target}"

    none = client.post("/fhir", json=transaction(post_entry(observation(f"Patient?identifier={SITE}|NOBODY"))))
    assert none.status_code == 400
    issue = none.json()["issue"][0]
    assert issue["code"] == "not-found"
    assert issue["expression"] == ["Bundle.entry[0].resource.subject.reference"]

    two = client.post("/fhir", json=transaction(post_entry(observation(f"Patient?identifier={SITE}|TWICE"))))
    assert two.status_code == 412
    assert two.json()["issue"][0]["code"] == "multiple-matches"
    assert count(client, "Observation") == 1


def test_if_none_exist_in_transaction_and_duplicates_inside_one_bundle(client: TestClient) -> None:
    condition = f"identifier={SITE}|MRN-5"
    bundle = transaction(
        post_entry(patient("MRN-5"), "urn:uuid:a", ifNoneExist=condition),
        post_entry(patient("MRN-5"), "urn:uuid:b", ifNoneExist=condition),
        post_entry(observation("urn:uuid:b")),
    )
    first = client.post("/fhir", json=bundle).json()
    statuses = [e["response"]["status"] for e in first["entry"]]
    assert statuses == ["201 Created", "200 OK", "201 Created"]
    second = client.post("/fhir", json=bundle).json()
    assert [e["response"]["status"] for e in second["entry"]] == ["200 OK", "200 OK", "201 Created"]
    assert count(client, "Patient") == 1
    patient_id = client.get("/fhir/Patient").json()["entry"][0]["resource"]["id"]
    subjects = {e["resource"]["subject"]["reference"] for e in client.get("/fhir/Observation").json()["entry"]}
    assert subjects == {f"Patient/{patient_id}"}


def test_processing_order_delete_post_put_get(client: TestClient) -> None:
    client.put("/fhir/Patient/old", json={**patient("OLD"), "id": "old"})
    response = client.post(
        "/fhir",
        json=transaction(
            {"request": {"method": "GET", "url": f"Patient?identifier={SITE}|NEW"}},
            {"resource": {**patient("PUT"), "id": "put-1"}, "request": {"method": "PUT", "url": "Patient/put-1"}},
            post_entry(patient("NEW")),
            {"request": {"method": "DELETE", "url": "Patient/old"}},
        ),
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 200, response.json()
    entries = response.json()["entry"]
    searchset = entries[0]["resource"]
    assert searchset["type"] == "searchset" and searchset["total"] == 1  # GET ran after the POST
    assert entries[1]["resource"]["id"] == "put-1"
    assert entries[3]["response"]["status"] == "204 No Content"
    assert client.get("/fhir/Patient/old").status_code == 410


def test_batch_entries_are_independent(client: TestClient) -> None:
    bad = observation("Patient/x")
    bad["status"] = "bogus"
    response = client.post(
        "/fhir",
        json=transaction(
            post_entry(patient("B-1")),
            post_entry(bad),
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            post_entry(patient("B-2")),
            kind="batch",
        ),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422", "404", "201 Created"]
    outcome = body["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert count(client, "Patient") == 2


def test_bundle_shape_errors(client: TestClient) -> None:
    wrong_kind = client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"})
    assert wrong_kind.status_code == 400 and wrong_kind.json()["issue"][0]["expression"] == ["Bundle.type"]
    no_request = client.post("/fhir", json=transaction({"resource": patient("X")}))
    assert no_request.status_code == 400
    assert no_request.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    mismatch = client.post(
        "/fhir", json=transaction({"resource": patient("X"), "request": {"method": "POST", "url": "Observation"}})
    )
    assert mismatch.status_code == 400
    dangling = client.post("/fhir", json=transaction(post_entry(observation("urn:uuid:nowhere"))))
    assert dangling.status_code == 400
    assert dangling.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject.reference"]
    twice = client.post(
        "/fhir",
        json=transaction(
            {"resource": {**patient("X"), "id": "same"}, "request": {"method": "PUT", "url": "Patient/same"}},
            {"resource": {**patient("Y"), "id": "same"}, "request": {"method": "PUT", "url": "Patient/same"}},
        ),
    )
    assert twice.status_code == 400
    assert count(client, "Patient") == 0


def test_a_conditional_put_after_hundreds_of_creates_updates_the_resource_created_in_the_bundle(
    client: TestClient,
) -> None:
    """Creates are written every few hundred resources: an identity decided before that (a conditional PUT
    resolving to a conditional create of the same bundle) must still find the resource, not create it twice."""
    condition = "identifier=https://hospital.example/mrn|flush-1"
    first = {
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition},
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "https://hospital.example/mrn", "value": "flush-1"}],
        },
    }
    filler = [{"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}}] * 450
    last = {
        "request": {"method": "PUT", "url": f"Patient?{condition}"},
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "https://hospital.example/mrn", "value": "flush-1"}],
            "gender": "female",
        },
    }
    response = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [first, *filler, last]}
    )
    assert response.status_code == 200, response.json()
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"].startswith("201")
    assert entries[-1]["response"]["etag"] == 'W/"2"'
    assert (
        entries[-1]["response"]["location"].split("/_history")[0]
        == entries[0]["response"]["location"].split("/_history")[0]
    )
    found = client.get("/fhir/Patient", params={"identifier": "https://hospital.example/mrn|flush-1"}).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["gender"] == "female"


def test_an_unnormalisable_coding_in_a_bundle_is_the_clients_mistake(client: TestClient) -> None:
    """Terminology normalisation runs before the checks on new resources; a coding too malformed for it must
    still come back as a 422 pointing at it, not a 500."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "urn:oid:2.999.1.1.1", "code": "TREG-CD4-PCT"}, {"system": {"x": 1}, "code": "y"}]
        },
    }
    for size in (1, 70):
        entries = [{"request": {"method": "POST", "url": "Observation"}, "resource": observation}] * size
        response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert response.status_code == 422, response.json()
        assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0].resource.code.coding[1].system")
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0
