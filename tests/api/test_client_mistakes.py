"""Client mistakes found in review: each is a 4xx OperationOutcome, never a 500, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_conditions_must_select(client: TestClient) -> None:
    client.put("/fhir/Patient/only", json={"resourceType": "Patient", "id": "only"})
    for condition in ("_format=json", "_count=1", "_offset=1"):
        assert client.delete(f"/fhir/Patient?{condition}").status_code == 400, condition
        assert client.put(f"/fhir/Patient?{condition}", json={"resourceType": "Patient"}).status_code == 400
        created = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": condition})
        assert created.status_code == 400, condition
    assert client.get("/fhir/Patient/only").status_code == 200


def test_bundle_entry_shapes(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    cases = [
        {"request": {"method": "DELETE", "url": "Patient/p1/_history/1"}},
        {"request": {"method": [], "url": "Patient"}},
        {"request": {"method": "POST", "url": "Patient", "ifNoneExist": 5}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "DELETE", "url": "?_id=p1"}},
        {"request": {"method": "POST", "url": "/"}, "resource": {}},
    ]
    for entry in cases:
        response = client.post("/fhir", json=bundle(entry))
        assert response.status_code == 400, (entry, response.json())
        assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")
    assert client.get("/fhir/Patient/p1").status_code == 200


def test_nulls_nul_characters_and_unvalidatable_types(client: TestClient) -> None:
    null_coding = {"resourceType": "Observation", "status": "final", "code": {"coding": None, "text": "x"}}
    response = client.post("/fhir/Observation", json=null_coding)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Observation.code.coding"]
    in_bundle = client.post(
        "/fhir", json=bundle({"request": {"method": "POST", "url": "Observation"}, "resource": null_coding})
    )
    assert in_bundle.status_code == 422
    nul = client.post("/fhir/Patient", content=b'{"resourceType": "Patient", "gender": "fe\\u0000male"}')
    assert nul.status_code == 400
    unvalidatable = client.post(
        "/fhir/RiskEvidenceSynthesis", json={"resourceType": "RiskEvidenceSynthesis", "status": "draft"}
    )
    assert unvalidatable.status_code == 422
    assert unvalidatable.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"value-quantity": "sNaN"}, 400),
        ({"value-quantity": "1e999999999999999999"}, 400),
        ({"date": "ap0001"}, 200),  # approximately year 1: the range is clamped, not overflowed
        ({"date": "ap9999-12-31"}, 200),
        ({"_offset": "99999999999999999999"}, 400),
        ({"_count": "²"}, 400),
        ({"_lastUpdated:not": "2024"}, 400),
        ({"_page": "W1sxXV0"}, 400),  # a forged token: [[1]]
    ],
)
def test_search_inputs_are_answered_not_crashed(client: TestClient, params: dict[str, str], status: int) -> None:
    response = client.get("/fhir/Observation", params=params)
    assert response.status_code == status, response.json()
    if status == 400:
        assert response.json()["issue"][0]["expression"] == [next(iter(params))]


def test_version_and_etag_digits(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert client.get("/fhir/Patient/p1/_history/%C2%B2").status_code == 404
    assert client.get("/fhir/Patient/p1/_history", params={"_count": "²"}).status_code == 400
    stale = client.put(
        "/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers={"If-Match": 'W/"²"'.encode()}
    )
    assert stale.status_code == 400


def test_batch_isolates_a_failing_entry(client: TestClient) -> None:
    response = client.post(
        "/fhir",
        json=bundle(
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {"resourceType": "Observation", "status": "final", "code": {"coding": None}},
            },
            kind="batch",
        ),
    )
    assert response.status_code == 200
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created", "422"]


def test_duplicate_full_urls_are_refused(client: TestClient) -> None:
    twice = [
        {
            "fullUrl": "urn:uuid:same",
            "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient"},
        }
        for _ in range(2)
    ]
    response = client.post("/fhir", json=bundle(*twice))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].fullUrl"]
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_conditional_update_never_overwrites_an_unmatched_resource(client: TestClient) -> None:
    client.put("/fhir/Patient/taken", json={"resourceType": "Patient", "id": "taken", "gender": "male"})
    body = {"resourceType": "Patient", "id": "taken", "gender": "female"}
    rest = client.put("/fhir/Patient?identifier=https://x|nobody", json=body)
    assert rest.status_code == 409
    entry = {"request": {"method": "PUT", "url": "Patient?identifier=https://x|nobody"}, "resource": body}
    in_bundle = client.post("/fhir", json=bundle(entry))
    assert in_bundle.status_code == 409
    assert in_bundle.json()["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    assert client.get("/fhir/Patient/taken").json()["gender"] == "male"


@pytest.mark.parametrize("meta", ["x", 5, ["versionId", "1"]], ids=["string", "number", "array"])
def test_a_meta_that_is_not_an_object_is_refused_where_it_is(client: TestClient, meta: Any) -> None:
    """New resources are stamped (id, meta) before they are checked: a malformed meta must still come back
    as the client's mistake, in a bundle of any size, and nothing is stored."""
    patient = {"resourceType": "Patient", "meta": meta}
    single = client.post("/fhir/Patient", json=patient)
    assert single.status_code in (400, 422), single.json()
    assert single.json()["issue"][0]["expression"][0].startswith("Patient.meta")
    for size in (1, 70):  # inline, and through the worker pool
        entries = [{"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}}] * size
        entries[-1] = {"request": {"method": "POST", "url": "Patient"}, "resource": patient}
        response = client.post("/fhir", json=bundle(*entries))
        assert response.status_code == 422, response.json()
        assert response.json()["issue"][0]["expression"][0].startswith(f"Bundle.entry[{size - 1}].resource.meta")
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


@pytest.mark.parametrize(
    "embedded_type",
    [None, 5, "", "NoSuchResource", {"x": 1}, "absent"],
    ids=["null", "number", "empty", "unknown", "object", "absent"],
)
def test_an_embedded_resource_needs_a_resource_type(client: TestClient, embedded_type: Any) -> None:
    """The R4B models crash (TypeError, KeyError) on a contained resource whose resourceType is not a type name,
    and accept one without a resourceType: both are a 422 pointing at it, alone and in a bundle."""
    contained: dict[str, Any] = {"id": "home"}
    if embedded_type != "absent":
        contained["resourceType"] = embedded_type
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"}, "contained": [contained]}
    response = client.post("/fhir/Encounter", json=encounter)
    assert response.status_code == 422, response.json()
    assert response.json()["issue"][0]["expression"] == ["Encounter.contained[0].resourceType"]
    in_bundle = client.post(
        "/fhir", json=bundle({"request": {"method": "POST", "url": "Encounter"}, "resource": encounter})
    )
    assert in_bundle.status_code == 422
    assert in_bundle.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.contained[0].resourceType"]
    assert client.get("/fhir/Encounter", params={"_summary": "count"}).json()["total"] == 0


def test_a_contained_resource_of_a_type_without_a_model_is_named(client: TestClient) -> None:
    contained = {"resourceType": "MedicinalProduct", "id": "mp"}
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"}, "contained": [contained]}
    response = client.post("/fhir/Encounter", json=encounter)
    assert response.status_code == 422, response.json()
    assert response.json()["issue"][0]["expression"] == ["Encounter.contained[0].resourceType"]
    assert response.json()["issue"][0]["code"] == "not-supported"
