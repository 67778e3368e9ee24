"""_include and _revinclude, with wildcards and :iterate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.testing.fhir_calls import put


@pytest.fixture
def linked(client: TestClient) -> TestClient:
    put(client, {"resourceType": "Organization", "id": "org"})
    put(client, {"resourceType": "Practitioner", "id": "dr"})
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "p1",
            "managingOrganization": {"reference": "Organization/org"},
            "generalPractitioner": [{"reference": "Practitioner/dr"}],
        },
    )
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/dr"}],
        },
    )
    put(client, {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}})
    return client


def found(client: TestClient, resource_type: str, params: list[tuple[str, str]]) -> dict[str, set[str]]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.json()
    modes: dict[str, set[str]] = {}
    for entry in response.json().get("entry", []):
        resource = entry["resource"]
        modes.setdefault(entry["search"]["mode"], set()).add(f"{resource['resourceType']}/{resource['id']}")
    return modes


def test_include_and_revinclude(linked: TestClient) -> None:
    assert found(linked, "Observation", [("_include", "Observation:subject")]) == {
        "match": {"Observation/o1"},
        "include": {"Patient/p1"},
    }
    assert found(linked, "Observation", [("_include", "Observation:*")]) == {
        "match": {"Observation/o1"},
        "include": {"Patient/p1", "Practitioner/dr"},
    }
    assert found(linked, "Observation", [("_include", "Observation:performer:Organization")]) == {
        "match": {"Observation/o1"}
    }
    assert found(linked, "Patient", [("_revinclude", "Observation:subject"), ("_revinclude", "Condition:subject")]) == {
        "match": {"Patient/p1"},
        "include": {"Observation/o1", "Condition/c1"},
    }


def test_iterate_follows_what_was_included(linked: TestClient) -> None:
    params = [("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")]
    assert found(linked, "Observation", params) == {
        "match": {"Observation/o1"},
        "include": {"Patient/p1", "Organization/org"},
    }
    params = [("_revinclude", "Patient:organization"), ("_revinclude:iterate", "Condition:patient")]
    assert found(linked, "Organization", params) == {
        "match": {"Organization/org"},
        "include": {"Patient/p1", "Condition/c1"},
    }
    without_iterate = [("_include", "Observation:subject"), ("_include", "Patient:organization")]
    assert linked.get("/fhir/Observation", params=without_iterate).status_code == 400


@pytest.mark.parametrize("value", ["Observation", "Observation:code", "Spaceship:subject", "Observation:subject:Nope"])
def test_bad_include_values(linked: TestClient, value: str) -> None:
    response = linked.get("/fhir/Observation", params={"_include": value})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_include"]
