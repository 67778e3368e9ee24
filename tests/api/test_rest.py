"""The FHIR REST interactions through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

SITE = "https://hospital.example/mrn"


def patient(mrn: str = "MRN-1", family: str = "Martin", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SITE, "value": mrn}],
        "name": [{"family": family, "given": ["Claire"]}],
        "gender": "female",
        "birthDate": "1979-04-12",
        **extra,
    }


def observation(subject: str, value: float = 5.2, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-10-10T08:30:00Z",
        "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
        **extra,
    }


def only_issue(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert len(body["issue"]) == 1, body
    issue: dict[str, Any] = body["issue"][0]
    return issue


def test_create_read_vread_update_delete(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient())
    assert created.status_code == 201
    body = created.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == f"http://testserver/fhir/Patient/{pid}/_history/1"
    assert created.headers["content-type"].startswith("application/fhir+json")

    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.json() == body
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304

    changed = {**body, "gender": "other"}
    updated = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2" and updated.json()["gender"] == "other"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "other"

    unchanged = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert unchanged.status_code == 200 and unchanged.json()["meta"]["versionId"] == "2"

    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert only_issue(gone)["code"] == "deleted"
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history" and history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 410


def test_update_as_create_with_client_id_and_id_mismatch(client: TestClient) -> None:
    created = client.put("/fhir/Patient/site-42", json={**patient(), "id": "site-42"})
    assert created.status_code == 201
    assert created.headers["location"].endswith("/fhir/Patient/site-42/_history/1")
    mismatch = client.put("/fhir/Patient/site-42", json={**patient(), "id": "other"})
    assert mismatch.status_code == 400
    assert only_issue(mismatch)["expression"] == ["Patient.id"]
    missing = client.put("/fhir/Patient/site-42", json=patient())
    assert missing.status_code == 400


def test_if_match_optimistic_locking(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    first = client.put(f"/fhir/Patient/{pid}", json={**patient(family="A"), "id": pid}, headers={"If-Match": 'W/"1"'})
    assert first.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json={**patient(family="B"), "id": pid}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert "version 2" in only_issue(stale)["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "A"
    assert client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'}).status_code == 412


def test_conditional_create(client: TestClient) -> None:
    condition = {"If-None-Exist": f"identifier={SITE}|MRN-7"}
    first = client.post("/fhir/Patient", json=patient("MRN-7"), headers=condition)
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient("MRN-7"), headers=condition)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    client.post("/fhir/Patient", json=patient("MRN-7"))  # now two patients carry MRN-7
    ambiguous = client.post("/fhir/Patient", json=patient("MRN-7"), headers=condition)
    assert ambiguous.status_code == 412
    assert only_issue(ambiguous)["code"] == "multiple-matches"
    unknown = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": "shoe-size=42"})
    assert unknown.status_code == 400 and "shoe-size" in only_issue(unknown)["diagnostics"]


def test_conditional_update_and_delete(client: TestClient) -> None:
    url = f"/fhir/Patient?identifier={SITE}|MRN-9"
    created = client.put(url, json=patient("MRN-9"))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(url, json=patient("MRN-9", family="Durand"))
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    client.post("/fhir/Patient", json=patient("MRN-9"))
    assert client.put(url, json=patient("MRN-9")).status_code == 412
    assert client.delete(url).status_code == 412
    assert client.delete(f"/fhir/Patient?_id={pid}").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


def test_errors_are_operation_outcomes(client: TestClient) -> None:
    malformed = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",')
    assert malformed.status_code == 400
    assert only_issue(malformed)["code"] == "structure"

    wrong_type = client.post("/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"})
    assert wrong_type.status_code == 415 and only_issue(wrong_type)["code"] == "not-supported"

    unknown = client.post("/fhir/Spaceship", json={"resourceType": "Spaceship"})
    assert unknown.status_code == 404 and only_issue(unknown)["code"] == "not-found"
    assert client.get("/fhir/Spaceship/1").status_code == 404

    big = client.post("/fhir/Patient", content=b" " * 2_000_001)
    assert big.status_code == 413 and only_issue(big)["code"] == "too-costly"

    assert client.get("/fhir/Patient/nope").status_code == 404
    assert client.get("/nowhere").json()["resourceType"] == "OperationOutcome"
    not_allowed = client.patch("/fhir/Patient/1", json={})
    assert not_allowed.status_code == 405 and not_allowed.json()["resourceType"] == "OperationOutcome"

    xml = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 406


def test_invalid_resources_are_422_with_expressions(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    bad_value = observation(f"Patient/{pid}")
    bad_value["valueQuantity"]["value"] = "five"
    response = client.post("/fhir/Observation", json=bad_value)
    assert response.status_code == 422
    assert only_issue(response)["expression"] == ["Observation.valueQuantity.value"]

    bogus_status = client.post("/fhir/Observation", json=observation(f"Patient/{pid}", status="bogus"))
    assert bogus_status.status_code == 422
    issue = only_issue(bogus_status)
    assert issue["code"] == "code-invalid" and issue["expression"] == ["Observation.status"]
    assert "bogus" in issue["diagnostics"]

    wrong_target = client.post("/fhir/Observation", json=observation("Medication/123"))
    assert wrong_target.status_code == 422
    assert only_issue(wrong_target)["expression"] == ["Observation.subject"]

    unknown_element = client.post("/fhir/Patient", json=patient(shoeSize=42))
    assert unknown_element.status_code == 422
    assert only_issue(unknown_element)["expression"] == ["Patient.shoeSize"]

    type_mismatch = client.post("/fhir/Patient", json=observation(f"Patient/{pid}"))
    assert type_mismatch.status_code == 400
    assert client.get("/fhir/Observation").json()["total"] == 0


def test_search_basics(client: TestClient) -> None:
    first = client.post("/fhir/Patient", json=patient("MRN-1", family="Émile")).json()["id"]
    second = client.post("/fhir/Patient", json=patient("MRN-2", family="Dubois")).json()["id"]
    client.post("/fhir/Observation", json=observation(f"Patient/{first}", 3.9))
    client.post("/fhir/Observation", json=observation(f"Patient/{second}", 7.5))

    by_identifier = client.get("/fhir/Patient", params={"identifier": f"{SITE}|MRN-2"}).json()
    assert by_identifier["type"] == "searchset" and by_identifier["total"] == 1
    assert by_identifier["entry"][0]["resource"]["id"] == second
    assert by_identifier["entry"][0]["search"]["mode"] == "match"
    accent_insensitive = client.get("/fhir/Patient", params={"name": "emi"}).json()
    assert [e["resource"]["id"] for e in accent_insensitive["entry"]] == [first]
    low = client.get(
        "/fhir/Observation",
        params={"subject": f"Patient/{first}", "code": "http://loinc.org|6690-2", "value-quantity": "lt4"},
    ).json()
    assert low["total"] == 1
    assert client.get("/fhir/Observation", params={"date": "ge2026-10-11"}).json()["total"] == 0
    assert client.get("/fhir/Observation", params={"date": "2026-10"}).json()["total"] == 2

    paged = client.get("/fhir/Patient", params={"_count": 1, "_sort": "family"}).json()
    assert "total" not in paged and len(paged["entry"]) == 1  # a full page: counting is on request only
    counted_page = client.get("/fhir/Patient", params={"_count": 1, "_total": "accurate"}).json()
    assert counted_page["total"] == 2
    assert paged["entry"][0]["resource"]["id"] == second  # Dubois sorts before Émile
    next_url = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    following = client.get(next_url).json()
    assert [e["resource"]["id"] for e in following["entry"]] == [first]

    with_patients = client.get("/fhir/Observation", params={"_include": "Observation:subject"}).json()
    assert sorted(e["search"]["mode"] for e in with_patients["entry"]) == ["include", "include", "match", "match"]

    unknown = client.get("/fhir/Patient", params={"shoe-size": "42"})
    assert unknown.status_code == 400 and only_issue(unknown)["expression"] == ["shoe-size"]
    lenient = client.get("/fhir/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=lenient"}).json()
    assert lenient["total"] == 2
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome[0]["resource"]["issue"][0]["expression"] == ["shoe-size"]

    counted = client.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert counted["total"] == 2 and "entry" not in counted

    posted = client.post(
        "/fhir/Patient/_search", content=b"family=dubois", headers={"Content-Type": "application/x-www-form-urlencoded"}
    ).json()
    assert [e["resource"]["id"] for e in posted["entry"]] == [second]


def test_patient_everything(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    other = client.post("/fhir/Patient", json=patient("MRN-2")).json()["id"]
    obs = client.post("/fhir/Observation", json=observation(f"Patient/{pid}")).json()["id"]
    client.post("/fhir/Observation", json=observation(f"Patient/{other}"))
    everything = client.get(f"/fhir/Patient/{pid}/$everything").json()
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]}
    assert ids == {("Patient", pid), ("Observation", obs)}
    assert client.get("/fhir/Patient/unknown/$everything").status_code == 404


def test_capability_statement_tells_the_truth(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert {"transaction", "batch", "history-system"} == {i["code"] for i in rest["interaction"]}
    observation_entry = next(r for r in rest["resource"] if r["type"] == "Observation")
    params = {p["name"]: p["type"] for p in observation_entry["searchParam"]}
    assert params["code"] == "token" and params["value-quantity"] == "quantity" and params["subject"] == "reference"
    # Every advertised parameter is really accepted by search.
    for name in params:
        probe = {"_id": "x", "_lastUpdated": "2020"}.get(name, "x")
        answer = client.get("/fhir/Observation", params={name: probe})
        assert answer.status_code in (200, 400), name
        if answer.status_code == 400:
            assert "unknown or unsupported" not in orjson.dumps(answer.json()).decode().lower(), name
