"""Parameters stored as other parameters' rows, continued: the cases tests/store/test_alias_parameters.py does not
cover. Target-restricted references on other types than Observation (Encounter, Appointment), with their
patient compartment; _include with a :target; _sort on a synonym; :missing on unions; and the derivation's own
invariants (every alias reads parameters that have rows; migration 0006's frozen list is what the code derives)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

import app.store.migrations.versions as versions
from app.fhir.definitions import resource_types, search_parameters
from app.store.indexer import _aliases, extract, indexed_parameters, stored_as
from app.store.schema import INDEX_TABLES

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == 201, response.json()


def search(client: TestClient, resource_type: str, **params: str) -> list[str]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.json()
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def included(client: TestClient, resource_type: str, **params: str) -> set[str]:
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.json()
    entries = response.json().get("entry", [])
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries if e["search"]["mode"] == "include"
    }


def people(client: TestClient) -> None:
    put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Durand"}]})
    put(client, {"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    put(client, {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}]})
    put(client, {"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/p1"}})
    put(client, {"resourceType": "Location", "id": "loc1", "name": "Ward 3"})


def test_encounter_patient_and_practitioner_and_its_compartment(client: TestClient) -> None:
    """Encounter `patient` (its only compartment parameter) and `practitioner` are restricted `subject` and
    `participant` rows: searches see only rows to the named type, and the compartment is still found."""
    people(client)
    klass = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    put(
        client,
        {
            "resourceType": "Encounter",
            "id": "enc-p",
            "status": "finished",
            "class": klass,
            "subject": {"reference": "Patient/p1"},
            "participant": [{"individual": {"reference": "RelatedPerson/rp1"}}],
        },
    )
    put(
        client,
        {
            "resourceType": "Encounter",
            "id": "enc-g",
            "status": "finished",
            "class": klass,
            "subject": {"reference": "Group/g1"},
            "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
        },
    )
    assert search(client, "Encounter", patient="p1") == ["enc-p"]
    assert search(client, "Encounter", patient="Group/g1") == []
    assert search(client, "Encounter", subject="Group/g1") == ["enc-g"]
    assert search(client, "Encounter", **{"patient:missing": "true"}) == ["enc-g"]
    assert search(client, "Encounter", **{"patient:missing": "false"}) == ["enc-p"]
    assert search(client, "Encounter", practitioner="dr1") == ["enc-g"]
    assert search(client, "Encounter", practitioner="RelatedPerson/rp1") == []
    assert search(client, "Encounter", participant="RelatedPerson/rp1") == ["enc-p"]
    assert search(client, "Encounter", **{"practitioner:missing": "true"}) == ["enc-p"]
    # the compartment: through the subject rows that point at a Patient
    everything = client.get("/fhir/Patient/p1/$everything").json()
    encounters = {e["resource"]["id"] for e in everything["entry"] if e["resource"]["resourceType"] == "Encounter"}
    assert encounters == {"enc-p"}
    assert search(client, "Patient", **{"_has:Encounter:patient:status": "finished"}) == ["p1"]
    assert search(client, "Practitioner", **{"_has:Encounter:practitioner:status": "finished"}) == ["dr1"]


def test_appointment_actor_restrictions_search_and_include_with_a_target(client: TestClient) -> None:
    """Appointment `patient`, `practitioner` and `location` are one `actor` row each, told apart by its target."""
    people(client)
    participants = [
        {"actor": {"reference": reference}, "status": "accepted"}
        for reference in ("Patient/p1", "Practitioner/dr1", "Location/loc1")
    ]
    put(client, {"resourceType": "Appointment", "id": "a1", "status": "booked", "participant": participants})
    put(
        client,
        {
            "resourceType": "Appointment",
            "id": "a2",
            "status": "booked",
            "participant": [{"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"}],
        },
    )
    assert search(client, "Appointment", patient="p1") == ["a1"]
    assert search(client, "Appointment", patient="dr1") == []  # a Practitioner's id is not a patient
    assert set(search(client, "Appointment", practitioner="dr1")) == {"a1", "a2"}
    assert search(client, "Appointment", location="Location/loc1") == ["a1"]
    assert search(client, "Appointment", **{"patient:missing": "true"}) == ["a2"]
    assert search(client, "Appointment", **{"location:missing": "false"}) == ["a1"]
    assert search(client, "Appointment", **{"patient.name": "durand"}) == ["a1"]
    # _include of a restricted reference: only its targets, and a :target narrows (or empties) them further
    assert included(client, "Appointment", _id="a1", _include="Appointment:patient") == {"Patient/p1"}
    assert included(client, "Appointment", _id="a1", _include="Appointment:practitioner:Practitioner") == {
        "Practitioner/dr1"
    }
    assert included(client, "Appointment", _id="a1", _include="Appointment:patient:Practitioner") == set()
    assert included(client, "Appointment", _id="a1", _include="Appointment:actor:Location") == {"Location/loc1"}
    assert included(client, "Appointment", _id="a1", _include="Appointment:actor") == {
        "Patient/p1",
        "Practitioner/dr1",
        "Location/loc1",
    }
    assert included(client, "Practitioner", _id="dr1", _revinclude="Appointment:practitioner") == {
        "Appointment/a1",
        "Appointment/a2",
    }
    assert included(client, "Practitioner", _id="dr1", _revinclude="Appointment:patient") == set()
    assert included(client, "Location", _id="loc1", _revinclude="Appointment:location:Location") == {"Appointment/a1"}


def test_sort_on_a_synonym_and_missing_on_unions(client: TestClient) -> None:
    for pid, family in (("durand", "Durand"), ("abel", "Abel"), ("martin", "Martin")):
        put(client, {"resourceType": "Patient", "id": pid, "name": [{"family": family}]})
    put(client, {"resourceType": "Patient", "id": "nameless"})
    # phonetic is stored as name: the same order, and no value sorts last either way
    assert search(client, "Patient", _sort="phonetic") == ["abel", "durand", "martin", "nameless"]
    assert search(client, "Patient", _sort="-phonetic") == ["martin", "durand", "abel", "nameless"]
    assert search(client, "Patient", _sort="phonetic") == search(client, "Patient", _sort="name")
    assert search(client, "Patient", **{"phonetic:missing": "true"}) == ["nameless"]

    def observation(oid: str, **more: Any) -> dict[str, Any]:
        code = {"coding": [{"system": LOINC, "code": "55277-8"}]}
        return {"resourceType": "Observation", "id": oid, "status": "final", "code": code, **more}

    positive = {"coding": [{"system": SNOMED, "code": "10828004"}]}
    put(client, observation("own-value", valueCodeableConcept=positive))
    put(
        client,
        observation(
            "component-value",
            component=[{"code": {"coding": [{"system": LOINC, "code": "29893-5"}]}, "valueCodeableConcept": positive}],
        ),
    )
    put(client, observation("quantity", valueQuantity={"value": 3.0, "unit": "log copies/mL"}))
    both = ["component-value", "own-value"]
    assert sorted(search(client, "Observation", **{"combo-value-concept:missing": "false"})) == both
    assert search(client, "Observation", **{"combo-value-concept:missing": "true"}) == ["quantity"]
    assert sorted(search(client, "Observation", **{"combo-code-value-concept:missing": "false"})) == both
    assert sorted(search(client, "Observation", **{"combo-value-concept": f"{SNOMED}|10828004"})) == both
    # the quantity Observation has a code-value-quantity row (its own code and value), the others none
    assert search(client, "Observation", **{"combo-code-value-quantity:missing": "false"}) == ["quantity"]
    assert sorted(search(client, "Observation", **{"combo-code-value-quantity:missing": "true"})) == both


def test_every_alias_reads_parameters_with_rows_and_migration_0006_lists_them_all() -> None:
    """What `stored_as` points at must be rows extraction writes: never another alias (a synonym of a union, a
    union of a restricted reference, ... would read nothing), and of the same type (same index table). The frozen
    list of migration 0006 must be what the code derives: a parameter that stops being an alias would otherwise
    lack the rows 0006 deleted, and a new one would keep stale rows."""
    spec = importlib.util.spec_from_file_location(
        "migration_0006", Path(versions.__path__[0]) / "0006_no_alias_index_rows.py"
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    derived = set()
    for resource_type in resource_types():
        aliases = _aliases(resource_type)
        params = search_parameters(resource_type)
        indexed = indexed_parameters(resource_type)
        for code, stored in aliases.items():
            assert code in indexed, (resource_type, code)
            for part in stored.params:
                assert part not in aliases, (resource_type, code, part)
                assert part in indexed and params[part].type == params[code].type, (resource_type, code, part)
                assert stored_as(resource_type, part).params == (part,)
            if stored.target_types:
                assert params[code].type == "reference"
            derived.add((INDEX_TABLES[params[code].type].name, resource_type, code, stored.params, stored.target_types))
    assert derived == set(migration.ALIASES)
    # and extraction never writes an alias's rows
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "10828004"}]},
        "dataAbsentReason": {"text": "n/a"},
    }
    written = {
        r["param"]
        for kind, rows in extract("Observation", "o", observation).rows.items()
        for r in rows
        if kind != "fact"
    }
    assert not written & set(_aliases("Observation"))
