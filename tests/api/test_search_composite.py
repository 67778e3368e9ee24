"""Composite search parameters: both components must hold within the same element."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def blood_pressure(oid: str, systolic: float, diastolic: float) -> dict[str, Any]:
    def component(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [component("8480-6", systolic), component("8462-4", diastolic)],
    }


def ids(client: TestClient, **params: str) -> set[str]:
    response = client.get("/fhir/Observation", params=params)
    assert response.status_code == 200, response.json()
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


def test_component_code_value_quantity_pairs_within_one_component(client: TestClient) -> None:
    for resource in (
        blood_pressure("high", 150, 95),
        blood_pressure("normal", 118, 76),
        blood_pressure("mixed", 135, 60),
    ):
        assert client.put(f"/fhir/Observation/{resource['id']}", json=resource).status_code == 201
    systolic_over_140 = {"component-code-value-quantity": f"{LOINC}|8480-6$gt140"}
    assert ids(client, **systolic_over_140) == {"high"}
    # 'mixed' has a component over 100 (systolic 135) but its diastolic is 60: no cross-component match.
    assert ids(client, **{"component-code-value-quantity": "8462-4$gt90"}) == {"high"}
    assert ids(client, **{"combo-code-value-quantity": f"8462-4$lt70|{UCUM}|mm[Hg]"}) == {"mixed"}
    either = {"component-code-value-quantity": "8480-6$gt140,8462-4$lt70"}
    assert ids(client, **either) == {"high", "mixed"}


def test_code_value_concept_and_string(client: TestClient) -> None:
    positive = {"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]}
    for oid, code, value in (("hcg-pos", "2106-3", positive), ("other", "8099-4", positive)):
        resource = {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueCodeableConcept": value,
        }
        client.put(f"/fhir/Observation/{oid}", json=resource)
    client.put(
        "/fhir/Observation/note",
        json={
            "resourceType": "Observation",
            "id": "note",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "2106-3"}]},
            "valueString": "Négatif",
        },
    )
    assert ids(client, **{"code-value-concept": f"{LOINC}|2106-3$http://snomed.info/sct|10828004"}) == {"hcg-pos"}
    assert ids(client, **{"code-value-string": "2106-3$negatif"}) == {"note"}


def test_malformed_composite_value(client: TestClient) -> None:
    response = client.get("/fhir/Observation", params={"code-value-quantity": "8480-6"})
    assert response.status_code == 400
    assert "'$'" in response.json()["issue"][0]["diagnostics"]
    unsupported = client.get("/fhir/MolecularSequence", params={"chromosome-window-coordinate": "1$lt10$gt5"})
    assert unsupported.status_code == 400
