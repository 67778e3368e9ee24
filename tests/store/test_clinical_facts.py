"""The `clinical_fact` rows in the store, on SQLite and PostgreSQL: written with the index rows on create (REST and
big transaction bundles, whose index rows are extracted in worker processes), replaced on update, removed on
delete, rebuilt identically by the backfill (`app.store.facts.write_facts`), and read by population screenings."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, inspect, select

from app.config import Settings
from app.eligibility.reference import evaluate_patient
from app.eligibility.sql import screen
from app.fhir import bundle as bundles
from app.mapping.study_spec import load_studies
from app.store.db import alembic_config
from app.store.facts import write_facts
from app.store.indexer import extract
from app.store.repository import Store
from app.store.schema import Resource, clinical_fact

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
MEASURE = "https://trialbridge.dev/fhir/CodeSystem/measure"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
ROOT = Path(__file__).resolve().parents[2]
COLUMNS = tuple(column.name for column in clinical_fact.columns)
resource_table = Resource.__table__  # type: ignore[attr-defined]

Fact = tuple[Any, ...]


@pytest.fixture
def settings(database_url: str) -> Settings:
    """As tests/conftest.py's, with two validation workers whatever the machine: big bundles use the pool."""
    return Settings(database_url=database_url, max_body_bytes=2_000_000, validation_workers=2)


def _utc(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)  # SQLite reads naive UTC


def _fact(row: Any) -> Fact:
    return tuple(_utc(row[name]) for name in COLUMNS)


def stored(engine: Engine, res_id: str | None = None) -> Counter[Fact]:
    """The clinical_fact rows (of one resource), as a multiset of column tuples."""
    query = select(clinical_fact)
    if res_id is not None:
        query = query.where(clinical_fact.c.res_id == res_id)
    with engine.connect() as conn:
        return Counter(_fact(row._mapping) for row in conn.execute(query))


def derived(resources: list[dict[str, Any]]) -> Counter[Fact]:
    """The facts the indexer derives from stored resources (as read back, with their ids)."""
    return Counter(_fact(row) for r in resources for row in extract(r["resourceType"], r["id"], r).rows.get("fact", []))


def current(engine: Engine) -> list[dict[str, Any]]:
    """Every current (not deleted) stored resource."""
    with engine.connect() as conn:
        rows = conn.execute(select(resource_table.c.content).where(resource_table.c.deleted.is_(False))).scalars()
        return [orjson.loads(c) if isinstance(c, str | bytes) else c for c in rows]


def as_dicts(facts: Counter[Fact]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, fact, strict=True)) for fact in facts.elements()]


def observation(subject: str, value: float, high: float | None = None, **elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8099-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-10-20T10:30:00+02:00",
        "valueQuantity": {"value": value, "unit": "IU/mL", "system": UCUM, "code": "[IU]/mL"},
    }
    if high is not None:
        resource["referenceRange"] = [{"high": {"value": high, "unit": "IU/L", "system": UCUM, "code": "[IU]/L"}}]
    return resource | elements


def ok(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


# ------------------------------------------------------------------------------------------ written on create


def test_rest_create_writes_the_facts(client: TestClient) -> None:
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    patient = ok(client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}), 201)
    created = ok(client.post("/fhir/Observation", json=observation(f"Patient/{patient['id']}", 35, 34000)), 201)
    facts = stored(engine, created["id"])
    assert facts == derived([created]) and stored(engine, patient["id"]) == Counter()
    [fact] = as_dicts(facts)
    canonical_value, canonical_code = fact.pop("canonical_value"), fact.pop("canonical_code")
    assert fact == {
        "res_type": "Observation",
        "res_id": created["id"],
        "patient_id": patient["id"],
        "system": LOINC,
        "code": "8099-4",
        "status": "final",
        "clinical_status": None,
        "lo": datetime(2026, 10, 20, 8, 30, tzinfo=UTC),
        "hi": datetime(2026, 10, 20, 8, 30, 0, 999999, tzinfo=UTC),
        "value": 35.0,
        "unit_system": UCUM,
        "unit_code": "[IU]/mL",
        "positive": 1,  # 35 [IU]/mL = 35000 [IU]/L > 34000 [IU]/L
    }
    assert canonical_code is not None and canonical_value == pytest.approx(35e6, rel=1e-12)  # per m3


def test_big_transaction_bundle_facts_come_from_the_workers(client: TestClient) -> None:
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    assert client.app.state.fhir_service.validator.workers == 2  # type: ignore[attr-defined]
    subject = f"urn:uuid:{uuid.uuid4()}"
    highs = {}  # entry index -> whether the Observation is above its reference high
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "gender": "male"}]
    for n in range(60):
        highs[len(resources)] = 20 + n > 50
        resources.append(observation(subject, 20 + n, 50_000))  # [IU]/mL against [IU]/L: canonical comparison
    for n in range(6):
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": ATC, "code": f"N06AB0{n}"}]},
                "subject": {"reference": subject},
                "authoredOn": f"2026-0{n + 1}-15",
            }
        )
        resources.append(
            {
                "resourceType": "Condition",
                "code": {"coding": [{"system": SNOMED, "code": "191627008"}, {"system": LOCAL, "code": f"bp{n}"}]},
                "subject": {"reference": subject},
                "recordedDate": f"2026-0{n + 1}-01",
            }
        )
    assert len(resources) >= 70
    entries = [
        {
            "fullUrl": subject if i == 0 else f"urn:uuid:{uuid.uuid4()}",
            "resource": r,
            "request": {"method": "POST", "url": r["resourceType"]},
        }
        for i, r in enumerate(resources)
    ]
    body = ok(client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}), 200)
    ids = [entry["response"]["location"].split("/")[1] for entry in body["entry"]]
    everything = current(engine)
    mine = [r for r in everything if r["id"] in set(ids)]
    assert len(mine) == len(resources)
    facts = stored(engine)
    assert facts == derived(everything)
    patient_facts = [f for f in as_dicts(facts) if f["patient_id"] == ids[0]]
    assert sorted(Counter(f["res_type"] for f in patient_facts).items()) == [
        ("Condition", 12),  # two codings each
        ("MedicationRequest", 6),
        ("Observation", 60),
    ]
    assert {f["res_id"] for f in patient_facts} == set(ids[1:])
    by_id = {f["res_id"]: f for f in patient_facts}
    for index, above in highs.items():
        assert by_id[ids[index]]["positive"] == int(above), index
    request = by_id[ids[61]]
    assert (request["res_type"], request["code"], request["status"]) == ("MedicationRequest", "N06AB00", "active")
    assert (request["lo"], request["hi"]) == (
        datetime(2026, 1, 15, tzinfo=UTC),
        datetime(2026, 1, 15, 23, 59, 59, 999999, tzinfo=UTC),
    )


# ------------------------------------------------------------------------------------------ update and delete


def test_update_replaces_and_delete_removes_the_facts(client: TestClient) -> None:
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    ok(client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"}))
    two_codings = {"coding": [{"system": LOINC, "code": "8099-4"}, {"system": LOCAL, "code": "tpo"}]}
    first = ok(client.put("/fhir/Observation/o1", json=observation("Patient/p1", 35, 34000, id="o1", code=two_codings)))
    other = ok(client.put("/fhir/Observation/o2", json=observation("Patient/p1", 10, 34000, id="o2")))
    before = stored(engine, "o1")
    assert before == derived([first])
    assert sorted((f["system"], f["code"]) for f in as_dicts(before)) == [(LOINC, "8099-4"), (LOCAL, "tpo")]
    assert {f["value"] for f in as_dicts(before)} == {35.0} and {f["positive"] for f in as_dicts(before)} == {1}
    others = stored(engine, "o2")

    updated = ok(client.put("/fhir/Observation/o1", json=observation("Patient/p1", 12.5, 34000, id="o1")), 200)
    assert updated["meta"]["versionId"] == "2"
    after = stored(engine, "o1")
    assert after == derived([updated]) and not (after & before)  # exactly the new rows, none of the old
    assert [(f["system"], f["code"], f["value"], f["positive"]) for f in as_dicts(after)] == [
        (LOINC, "8099-4", 12.5, 0)
    ]
    assert stored(engine, "o2") == others == derived([other])

    assert client.delete("/fhir/Observation/o1").status_code in (200, 204)
    assert stored(engine, "o1") == Counter()
    assert stored(engine, "o2") == others
    revived = ok(client.put("/fhir/Observation/o1", json=observation("Patient/p1", 40, None, id="o1")))
    assert stored(engine, "o1") == derived([revived])
    assert [(f["value"], f["positive"]) for f in as_dicts(stored(engine, "o1"))] == [(40.0, None)]


# ------------------------------------------------------------------------------------------ the backfill


def load(store: Store, resources: list[dict[str, Any]], method: str = "PUT") -> None:
    """Through the FHIR transaction path, as PUTs (or DELETEs) with the resources' ids."""
    entries = [
        {"request": {"method": method, "url": f"{r['resourceType']}/{r['id']}"}}
        | ({"resource": r} if method == "PUT" else {})
        for r in resources
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    bundles.process(store, bundle, bundles.BundleOptions("http://testserver/fhir"))


def population() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for p in range(12):
        pid = f"p{p:02d}"
        resources.append({"resourceType": "Patient", "id": pid})
        resources.append(observation(f"Patient/{pid}", 30 + p, 40_000, id=f"obs-{pid}"))
        interpreted = {"interpretation": [{"coding": [{"system": INTERPRETATION, "code": "POS" if p % 2 else "N"}]}]}
        resources.append(observation(f"Patient/{pid}", p, None, id=f"obs-{pid}-flag", **interpreted))
        resources.append(
            {
                "resourceType": "Condition",
                "id": f"cond-{pid}",
                "code": {"coding": [{"system": SNOMED, "code": "191627008"}, {"system": LOCAL, "code": "bp"}]},
                "clinicalStatus": {"coding": [{"code": "active" if p % 3 else "resolved"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "onsetDateTime": f"2025-{p + 1:02d}-10",
            }
        )
        resources.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"ms-{pid}",
                "status": "active",
                "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "N05AN01"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectivePeriod": {"start": "2026-01-01"} | ({"end": "2026-06-30"} if p % 2 else {}),
            }
        )
    return resources


def test_write_facts_rebuilds_exactly_what_ingest_wrote(store: Store) -> None:
    resources = population()
    load(store, resources)
    load(store, [observation("Patient/p03", 99, 40_000, id="obs-p03")])  # an update
    load(store, [r for r in resources if r["id"] in ("obs-p05", "cond-p07")], method="DELETE")
    snapshot = stored(store.engine)
    assert snapshot == derived(current(store.engine))
    ids = sorted({f["res_id"] for f in as_dicts(snapshot)})
    assert "obs-p05" not in ids and "cond-p07" not in ids and len(ids) == 12 * 4 - 2
    assert {f["value"] for f in as_dicts(stored(store.engine, "obs-p03"))} == {99.0}

    with store.engine.begin() as conn:
        conn.execute(delete(clinical_fact))
    assert stored(store.engine) == Counter()
    first, last = ids[len(ids) // 3], ids[2 * len(ids) // 3]
    in_range = Counter({f: n for f, n in snapshot.items() if first <= f[COLUMNS.index("res_id")] < last})
    assert 0 < in_range.total() < snapshot.total()
    with store.engine.begin() as conn:
        assert write_facts(conn, first=first, last=last, batch=5) == in_range.total()
    assert stored(store.engine) == in_range  # only that range
    with store.engine.begin() as conn:
        written = write_facts(conn, last=first, batch=7) + write_facts(conn, first=last)
    assert written == snapshot.total() - in_range.total()
    assert stored(store.engine) == snapshot
    with store.engine.begin() as conn:  # over rows already there: replaced, not doubled
        assert write_facts(conn, batch=3) == snapshot.total()
        assert write_facts(conn, first=first, last=last) == in_range.total()
    assert stored(store.engine) == snapshot


def test_migration_0005_backfills_the_facts(store: Store) -> None:
    load(store, population())
    snapshot = stored(store.engine)
    config = alembic_config(store.engine)
    command.downgrade(config, "0004")  # drops clinical_fact
    try:
        assert "clinical_fact" not in inspect(store.engine).get_table_names()
    finally:
        command.upgrade(config, "head")  # creates it and fills it from the stored resources
    assert snapshot.total() == 12 * 5 and stored(store.engine) == snapshot


# ------------------------------------------------------------------------------------------ screening


def test_screening_reads_the_current_facts(store: Store) -> None:
    spec = load_studies(ROOT / "mappings" / "studies").find("depil-2")
    assert spec is not None
    as_of, study = date(2026, 11, 1), "ResearchStudy/depil-2"
    madrs = {"coding": [{"system": MEASURE, "code": "madrs-total"}]}
    score = {"unit": "score", "system": UCUM, "code": "{score}"}
    patient = {"resourceType": "Patient", "id": "pt", "gender": "male", "birthDate": "1980-05-01"}

    def state(madrs_value: float, tpo_value: float) -> tuple[dict[str, Any], dict[str, Any]]:
        resources = [
            patient,
            observation("Patient/pt", 0, None, id="madrs", code=madrs, effectiveDateTime="2026-10-25")
            | {"valueQuantity": {"value": madrs_value} | score},
            observation("Patient/pt", tpo_value, 34_000, id="tpo", effectiveDateTime="2026-10-25"),
            observation("Patient/pt", 5, 34_000, id="tg", code={"coding": [{"system": LOINC, "code": "8098-6"}]}),
        ]
        load(store, resources)
        outcomes = screen(store.engine, spec.eligibility, as_of, study).rows
        assert [row.patient_id for row in outcomes] == ["pt"]
        expected = evaluate_patient(spec.eligibility, resources, as_of, study)
        return outcomes[0].outcomes, {c.id: c.outcome for c in expected.criteria}

    found, expected = state(25, 20)  # MADRS 25 > 17; anti-TPO 20 [IU]/mL < 34000 [IU]/L: negative
    assert (found["madrs-above-17"], found["thyroid-antibodies"]) == ("pass", "pass")
    assert found == expected
    found, expected = state(12, 20)  # the MADRS Observation updated below the threshold
    assert (found["madrs-above-17"], found["thyroid-antibodies"]) == ("fail", "pass")
    assert found == expected
    found, expected = state(12, 40)  # anti-TPO updated above its reference high: positive, excluded
    assert (found["madrs-above-17"], found["thyroid-antibodies"]) == ("fail", "fail")
    assert found == expected


def test_condition_statuses_as_long_as_token_codes_are_stored(client: TestClient) -> None:
    """A Condition's verification / clinical status may be a long local code (no void or active coding to prefer):
    the fact keeps it (PostgreSQL refused it as too long for the column once: 422 on a valid resource)."""
    local = "L" * 200
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/long-status"},
        "code": {"coding": [{"system": SNOMED, "code": "191627008"}]},
        "verificationStatus": {"coding": [{"system": "https://x.example/local", "code": local}]},
        "clinicalStatus": {"coding": [{"system": "https://x.example/local", "code": local + "C"}]},
    }
    created = ok(client.post("/fhir/Condition", json=condition), 201)
    rows = as_dicts(stored(client.app.state.store.engine, created["id"]))  # type: ignore[attr-defined]
    assert [(row["status"], row["clinical_status"]) for row in rows] == [(local, local + "C")]
