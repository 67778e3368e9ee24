"""Search parameters that repeat others (synonyms such as Patient `phonetic` = `name`, unions such as Observation
`combo-code` = `code` | `component-code`, references restricted to some targets such as Observation `patient`) have
no index rows of their own, and still search, sort, include and chain exactly as their definitions say, on SQLite
and PostgreSQL; migration 0006 removes the rows stored before and its downgrade copies them back."""

from __future__ import annotations

from collections import Counter
from typing import Any

from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.store.db import alembic_config
from app.store.indexer import StoredAs, extract, stored_as
from app.store.repository import Store
from app.store.schema import INDEX_TABLES

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def test_synonyms_unions_and_restricted_references_are_stored_as_other_rows() -> None:
    assert stored_as("Observation", "combo-code") == StoredAs(("code", "component-code"))
    assert stored_as("Observation", "combo-value-quantity") == StoredAs(("component-value-quantity", "value-quantity"))
    assert stored_as("Observation", "combo-code-value-quantity") == StoredAs(
        ("code-value-quantity", "component-code-value-quantity")
    )
    assert stored_as("Patient", "phonetic") == StoredAs(("name",))
    assert stored_as("ResearchSubject", "patient") == StoredAs(("individual",))
    # subject.where(resolve() is Patient): the subject rows that point at a Patient
    assert stored_as("Observation", "patient") == StoredAs(("subject",), ("Patient",))
    assert stored_as("Encounter", "practitioner") == StoredAs(("participant",), ("Practitioner",))
    # the parts are themselves
    assert stored_as("Observation", "code") == StoredAs(("code",))
    assert stored_as("Observation", "subject") == StoredAs(("subject",))


def test_no_rows_for_aliases_and_the_compartment_still_found_through_one() -> None:
    observation = blood_pressure("bp", 150, 95)
    rows = extract("Observation", "bp", observation).rows
    params = Counter(r["param"] for kind, table in rows.items() if kind != "fact" for r in table)
    assert not [p for p in params if p.startswith("combo-")]
    assert params["code"] == 1 and params["component-code"] == 2 and params["component-value-quantity"] == 2
    assert params["component-code-value-quantity"] == 2
    assert params["subject"] == 1 and params["patient"] == 0
    patient = extract("Patient", "p", {"resourceType": "Patient", "name": [{"family": "Durand", "given": ["Zoé"]}]})
    assert {r["param"] for r in patient.rows["string"]} == {"name", "family", "given"}
    # DeviceUseStatement's compartment parameter `subject` is stored as its synonym `patient`
    assert stored_as("DeviceUseStatement", "subject") == StoredAs(("patient",))
    device_use = {
        "resourceType": "DeviceUseStatement",
        "status": "active",
        "subject": {"reference": "Patient/p7"},
        "device": {"reference": "Device/d1"},
    }
    assert extract("DeviceUseStatement", "du", device_use).patient_id == "p7"


def blood_pressure(oid: str, systolic: float, diastolic: float, subject: str = "Patient/p1") -> dict[str, Any]:
    def component(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [component("8480-6", systolic), component("8462-4", diastolic)],
    }


def heart_rate(oid: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "valueQuantity": {"value": value, "unit": "/min", "system": UCUM, "code": "/min"},
    }


def search(client: TestClient, resource_type: str, **params: str) -> list[str]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.json()
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == 201, response.json()


def test_union_parameters_search_and_sort_through_their_parts(client: TestClient) -> None:
    put(client, {"resourceType": "Patient", "id": "p1"})
    for resource in (blood_pressure("bp-high", 150, 95), blood_pressure("bp-low", 110, 70), heart_rate("hr", 72)):
        put(client, resource)
    # combo-code: the Observation's own code or a component's
    assert set(search(client, "Observation", **{"combo-code": f"{LOINC}|8867-4"})) == {"hr"}
    assert set(search(client, "Observation", **{"combo-code": "8480-6"})) == {"bp-high", "bp-low"}
    assert search(client, "Observation", code="8480-6") == []
    # combo-value-quantity: 72 /min is the Observation's value, 150 mm[Hg] a component's
    assert set(search(client, "Observation", **{"combo-value-quantity": "gt120"})) == {"bp-high"}
    assert set(search(client, "Observation", **{"combo-value-quantity": "lt80"})) == {"bp-low", "hr"}
    # combo-code-value-quantity pairs code and value within one element, the Observation or a component
    assert search(client, "Observation", **{"combo-code-value-quantity": "8462-4$gt90"}) == ["bp-high"]
    assert search(client, "Observation", **{"combo-code-value-quantity": "8867-4$lt80"}) == ["hr"]
    assert search(client, "Observation", **{"combo-code-value-quantity": "8867-4$gt80"}) == []
    # :missing and :not read the parts too
    assert search(client, "Observation", **{"combo-value-quantity:missing": "true"}) == []
    assert set(search(client, "Observation", **{"combo-code:not": "8480-6"})) == {"hr"}
    # sorted by the smallest value of any part (R4: ascending sorts by the lowest value)
    assert search(client, "Observation", _sort="combo-value-quantity") == ["bp-low", "hr", "bp-high"]


def test_restricted_references_search_include_and_chain(client: TestClient) -> None:
    put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Durand"}]})
    put(client, {"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    put(client, heart_rate("of-patient", 72))
    put(client, heart_rate("of-group", 80) | {"subject": {"reference": "Group/g1"}})
    put(client, heart_rate("of-nobody", 90) | {"subject": {"identifier": {"system": "urn:x", "value": "1"}}})
    assert search(client, "Observation", patient="p1") == ["of-patient"]
    assert search(client, "Observation", patient="Patient/p1") == ["of-patient"]
    assert search(client, "Observation", subject="Group/g1") == ["of-group"]
    assert search(client, "Observation", patient="Group/g1") == []
    assert set(search(client, "Observation", **{"patient:missing": "true"})) == {"of-group", "of-nobody"}
    assert search(client, "Observation", **{"patient.name": "durand"}) == ["of-patient"]
    assert search(client, "Patient", **{"_has:Observation:patient:code": "8867-4"}) == ["p1"]
    assert set(search(client, "Observation", **{"subject:identifier": "urn:x|1"})) == {"of-nobody"}
    assert search(client, "Observation", **{"patient:identifier": "urn:x|1"}) == []
    response = client.get("/fhir/Observation", params={"code": "8867-4", "_include": "Observation:patient"})
    included = [e["resource"]["id"] for e in response.json()["entry"] if e["search"]["mode"] == "include"]
    assert included == ["p1"]
    response = client.get("/fhir/Patient", params={"_id": "p1", "_revinclude": "Observation:patient"})
    included = [e["resource"]["id"] for e in response.json()["entry"] if e["search"]["mode"] == "include"]
    assert included == ["of-patient"]


def test_synonym_parameters_search_include_and_chain(client: TestClient) -> None:
    put(client, {"resourceType": "Patient", "id": "zoe", "name": [{"family": "Durand", "given": ["Zoé"]}]})
    put(client, {"resourceType": "Patient", "id": "max", "name": [{"family": "Martin", "given": ["Max"]}]})
    put(client, {"resourceType": "ResearchStudy", "id": "s1", "status": "active"})
    for subject_id, patient in (("rs-zoe", "zoe"), ("rs-max", "max")):
        put(
            client,
            {
                "resourceType": "ResearchSubject",
                "id": subject_id,
                "status": "on-study",
                "study": {"reference": "ResearchStudy/s1"},
                "individual": {"reference": f"Patient/{patient}"},
            },
        )
    assert search(client, "Patient", phonetic="durand") == ["zoe"]
    assert search(client, "ResearchSubject", patient="Patient/max") == ["rs-max"]
    assert search(client, "ResearchSubject", **{"patient.name": "zoe"}) == ["rs-zoe"]
    assert search(client, "Patient", **{"_has:ResearchSubject:patient:status": "on-study"}) in (
        ["max", "zoe"],
        ["zoe", "max"],
    )
    response = client.get("/fhir/ResearchSubject", params={"_id": "rs-zoe", "_include": "ResearchSubject:patient"})
    included = [e["resource"]["id"] for e in response.json()["entry"] if e["search"]["mode"] == "include"]
    assert included == ["zoe"]
    response = client.get("/fhir/Patient", params={"_id": "max", "_revinclude": "ResearchSubject:patient"})
    included = [e["resource"]["id"] for e in response.json()["entry"] if e["search"]["mode"] == "include"]
    assert included == ["rs-max"]


def index_rows(store: Store) -> Counter[tuple[Any, ...]]:
    rows: Counter[tuple[Any, ...]] = Counter()
    with store.engine.connect() as conn:
        for kind, table in INDEX_TABLES.items():
            if kind != "fact":
                rows.update((table.name, *row) for row in conn.execute(select(table)))
    return rows


def test_migration_0006_removes_alias_rows_and_its_downgrade_restores_them(store: Store) -> None:
    with store.transaction() as tx:
        tx.create("Patient", {"resourceType": "Patient", "name": [{"family": "Durand"}]}, "zoe")
        tx.create("Observation", blood_pressure("bp", 150, 95, "Patient/zoe"), "bp")
        tx.create("Observation", heart_rate("hr", 72) | {"subject": {"reference": "Patient/zoe"}}, "hr")
    written = index_rows(store)
    config = alembic_config(store.engine)
    command.downgrade(config, "0005")
    try:
        restored = index_rows(store) - written
        # what the earlier extraction wrote for the aliases: their parts' rows under their own name
        param = [c.name for c in INDEX_TABLES["token"].columns].index("param") + 1
        by_param = Counter((row[0], row[param]) for row in restored.elements())
        assert by_param == {
            ("idx_token", "combo-code"): 4,  # bp: its code and two component codes; hr: its code
            ("idx_quantity", "combo-value-quantity"): 3,
            ("idx_composite", "combo-code-value-quantity"): 3,
            ("idx_string", "phonetic"): 1,
            ("idx_reference", "patient"): 2,  # the subject of each Observation is a Patient
        }
        assert not written - index_rows(store)  # nothing else changed
    finally:
        command.upgrade(config, "head")
    assert index_rows(store) == written
