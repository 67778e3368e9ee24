"""Expected matches over the official R4 examples: each search's answer equals what a naive scan of the
same examples finds (a reference evaluator written independently of the indexer)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from app.fhir.validation import validation_issues

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "r4-examples" / "examples.ndjson.gz"
CLINICAL = {
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "Procedure",
    "MedicationRequest",
    "AdverseEvent",
    "ResearchStudy",
    "ResearchSubject",
    "Group",
    "DiagnosticReport",
    "Immunization",
}

Resource = dict[str, Any]


def clinical_examples() -> list[Resource]:
    with gzip.open(FIXTURE) as lines:
        resources = [orjson.loads(line) for line in lines]
    return [r for r in resources if r["resourceType"] in CLINICAL and not validation_issues(r)]


def codings(concept: Any) -> list[tuple[str | None, str | None]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in concept.get("coding", [])]


def names(patient: Resource) -> list[str]:
    parts = []
    for name in patient.get("name", []):
        parts += [name.get("family", ""), name.get("text", ""), *name.get("given", [])]
    return [p.lower() for p in parts if p]


def reaches_2013(observation: Resource) -> bool:
    """Does the effective[x] range reach into 2013 or later? A Period without an end is open-ended."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        if isinstance(observation.get(key), str):
            return bool(observation[key][:4] >= "2013")
    period = observation.get("effectivePeriod")
    if isinstance(period, dict):
        return "end" not in period or bool(period["end"][:4] >= "2013")
    return False


# (resource type, query, the naive predicate that says which examples match)
CASES: list[tuple[str, dict[str, str], Callable[[Resource], bool]]] = [
    (
        "Observation",
        {"code": "http://loinc.org|29463-7"},
        lambda r: ("http://loinc.org", "29463-7") in codings(r.get("code")),
    ),
    ("Observation", {"code": "85354-9"}, lambda r: any(c == "85354-9" for _, c in codings(r.get("code")))),
    ("Observation", {"status": "final"}, lambda r: r.get("status") == "final"),
    (
        "Observation",
        {"subject": "Patient/example"},
        lambda r: (r.get("subject") or {}).get("reference") == "Patient/example",
    ),
    (
        "Observation",
        {"value-quantity:missing": "true"},
        lambda r: "valueQuantity" not in r and "valueSampledData" not in r,
    ),
    (
        "Observation",
        {"date": "ge2013"},
        lambda r: reaches_2013(r),
    ),
    ("Patient", {"family": "chalmers"}, lambda r: any(n.startswith("chalmers") for n in names(r))),
    ("Patient", {"name": "pet"}, lambda r: any(n.startswith("pet") for n in names(r))),
    ("Patient", {"gender": "female"}, lambda r: r.get("gender") == "female"),
    ("Patient", {"birthdate": "lt1970"}, lambda r: "birthDate" in r and r["birthDate"][:4] < "1970"),
    (
        "Condition",
        {"clinical-status": "active"},
        lambda r: any(c == "active" for _, c in codings(r.get("clinicalStatus"))),
    ),
    ("Condition", {"subject:missing": "false"}, lambda r: "subject" in r),
]


def test_searches_match_a_naive_scan_of_the_examples(client: TestClient) -> None:
    examples = clinical_examples()
    assert len(examples) > 100
    entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in examples]
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.json()
    for resource_type, query, predicate in CASES:
        expected = {r["id"] for r in examples if r["resourceType"] == resource_type and predicate(r)}
        answer = client.get(f"/fhir/{resource_type}", params={**query, "_count": "1000"})
        assert answer.status_code == 200, answer.json()
        found = {e["resource"]["id"] for e in answer.json().get("entry", [])}
        assert found == expected, (resource_type, query)
        assert expected, f"{resource_type}?{query} matches no example: the case proves nothing"
