"""Chained parameters and reverse chaining (_has), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.testing.fhir_calls import match_ids, put

SITE = "https://hospital.example/mrn"


def ids(client: TestClient, path: str, **params: str) -> set[str]:
    return match_ids(client, path, params)


@pytest.fixture
def population(client: TestClient) -> TestClient:
    put(client, {"resourceType": "Organization", "id": "org-a", "name": "Hôpital Saint-Louis"})
    put(client, {"resourceType": "Organization", "id": "org-b", "name": "CHU Nîmes"})
    for pid, mrn, birth, org in (("p1", "A1", "1980-01-01", "org-a"), ("p2", "B2", "1995-06-30", "org-b")):
        put(
            client,
            {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": SITE, "value": mrn}],
                "birthDate": birth,
                "managingOrganization": {"reference": f"Organization/{org}"},
            },
        )
    for oid, pid, code in (("o1", "p1", "6690-2"), ("o2", "p2", "718-7"), ("o3", "p2", "6690-2")):
        put(
            client,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        )
    put(
        client,
        {
            "resourceType": "Observation",
            "id": "o-group",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
            "subject": {"reference": "Group/g1"},
        },
    )
    return client


def test_chained_parameters(population: TestClient) -> None:
    client = population
    assert ids(client, "Observation", **{"subject:Patient.identifier": f"{SITE}|B2"}) == {"o2", "o3"}
    assert ids(client, "Observation", **{"subject.birthdate": "lt1990"}) == {"o1"}
    assert ids(client, "Observation", **{"patient.birthdate": "ge1990", "code": "6690-2"}) == {"o3"}
    two_levels = {"subject:Patient.organization.name": "chu"}
    assert ids(client, "Observation", **two_levels) == {"o2", "o3"}
    assert ids(client, "Observation", **{"subject:Patient.name:exact": "nobody"}) == set()


def test_reverse_chaining(population: TestClient) -> None:
    client = population
    assert ids(client, "Patient", **{"_has:Observation:subject:code": "718-7"}) == {"p2"}
    assert ids(client, "Patient", **{"_has:Observation:patient:code": "6690-2"}) == {"p1", "p2"}
    nested = {"_has:Patient:organization:_has:Observation:subject:code": "718-7"}
    assert ids(client, "Organization", **nested) == {"org-b"}


@pytest.mark.parametrize(
    ("path", "name", "reason"),
    [
        ("Observation", "code.text", "only reference parameters can be chained"),
        ("Observation", "subject:Patient.shoe-size", "shoe-size"),
        ("Observation", "subject:Medication.code", "cannot refer to Medication"),
        ("Patient", "_has:Observation:code:status", "not a reference search parameter"),
        ("Patient", "_has:Spaceship:subject:code", "not a resource type"),
        ("Patient", "_has:Observation", "must read _has:Type:reference-parameter:search-parameter"),
        ("Organization", "_has:Observation:patient:code", "cannot refer to Organization"),
    ],
)
def test_invalid_chains_are_errors(population: TestClient, path: str, name: str, reason: str) -> None:
    response = population.get(f"/fhir/{path}", params={name: "x"})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == [name]
    assert reason in issue["diagnostics"]
