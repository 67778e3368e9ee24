"""Eligibility over HTTP: the hospital population screened against the three studies, explained; a Bundle
evaluated without storing it; a screening recorded as ResearchSubjects with a Provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
POPULATION = ROOT / "fixtures" / "demo" / "002_hospital_population.json"
AS_OF = "2026-11-01"  # the generator's reference date


@pytest.fixture
def population(client: TestClient) -> dict[str, Any]:
    bundle = json.loads(POPULATION.read_text())
    assert client.post("/fhir", content=POPULATION.read_bytes()).status_code == 200
    return bundle


def _patients(bundle: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def test_the_population_is_screened_against_each_study_with_explanations(
    client: TestClient, population: dict[str, Any]
) -> None:
    patients = _patients(population)
    for study in ("depil-2", "NCT03039673", "msc-sle"):
        body = client.get(f"/api/studies/{study}/eligibility", params={"as-of": AS_OF, "_count": 5}).json()
        assert sum(body["counts"].values()) == len(patients), study
        assert body["as_of"] == AS_OF
        assert [r["patient"] for r in body["results"]] == [f"Patient/{p}" for p in patients[:5]]
        for result in body["results"]:
            assert result["status"] in ("eligible", "ineligible", "incomplete")
            assert all(c["outcome"] in ("pass", "fail", "unknown", "manual") for c in result["criteria"])
            assert all(c["evidence"] for c in result["criteria"] if c["outcome"] != "pass" or c["type"] == "inclusion")
    depil = client.get("/api/studies/depil-2/eligibility", params={"as-of": AS_OF}).json()
    assert depil["study"] == "ResearchStudy/depil-2" and depil["nct"] == "NCT04133233"
    assert depil["counts"]["eligible"] >= 10  # the generator designed 19 who pass every computable criterion


def test_status_filter_paging_and_one_patient(client: TestClient, population: dict[str, Any]) -> None:
    counts = client.get("/api/studies/depil-2/eligibility", params={"as-of": AS_OF, "_count": 1}).json()["counts"]
    seen: list[str] = []
    params: dict[str, Any] = {"as-of": AS_OF, "status": "eligible", "_count": 4}
    while True:
        page = client.get("/api/studies/depil-2/eligibility", params=params).json()
        assert {r["status"] for r in page["results"]} <= {"eligible"}
        seen += [r["patient"] for r in page["results"]]
        if "next_after" not in page:
            break
        params["after"] = page["next_after"]
    assert len(seen) == len(set(seen)) == counts["eligible"]
    one = client.get("/api/studies/depil-2/eligibility", params={"as-of": AS_OF, "patient": "Patient/hosp-p021"}).json()
    (result,) = one["results"]
    assert result["status"] == "ineligible"
    leukocytes = next(c for c in result["criteria"] if c["id"] == "leukocytes")
    assert leukocytes["outcome"] == "fail"
    assert leukocytes["evidence"][0]["reference"].startswith("Observation/")


def test_mistakes_get_operation_outcomes(client: TestClient, population: dict[str, Any]) -> None:
    cases = [
        ("/api/studies/nope/eligibility", {}, 404, None),
        ("/api/studies/depil-2/eligibility", {"as-of": "01/11/2026"}, 400, ["as-of"]),
        ("/api/studies/depil-2/eligibility", {"status": "maybe"}, 400, ["status"]),
        ("/api/studies/depil-2/eligibility", {"patient": "hosp-p001"}, 400, ["patient"]),
        ("/api/studies/depil-2/eligibility", {"patient": "Patient/none"}, 404, None),
    ]
    for path, params, status, expression in cases:
        response = client.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        if expression:
            assert outcome["issue"][0]["expression"] == expression
    assert "depil-2 (NCT04133233)" in client.get("/api/studies/nope/eligibility").json()["issue"][0]["diagnostics"]


def _one_patient(population: dict[str, Any], patient_id: str) -> dict[str, Any]:
    def mine(resource: dict[str, Any]) -> bool:
        if resource["id"] == patient_id and resource["resourceType"] == "Patient":
            return True
        refs = [resource.get(k, {}).get("reference") for k in ("subject", "patient", "individual")]
        return f"Patient/{patient_id}" in refs

    resources = [e["resource"] for e in population["entry"] if mine(e["resource"])]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def test_a_bundle_is_evaluated_without_storing_it(client: TestClient, population: dict[str, Any]) -> None:
    bundle = _one_patient(population, "hosp-p021")
    types = ("Patient", "Observation")
    before = [client.get(f"/fhir/{t}", params={"_summary": "count"}).json()["total"] for t in types]
    response = client.post("/api/studies/depil-2/eligibility", params={"as-of": AS_OF}, content=json.dumps(bundle))
    assert response.status_code == 200, response.text
    body = response.json()
    stored = client.get("/api/studies/depil-2/eligibility", params={"as-of": AS_OF, "patient": "Patient/hosp-p021"})
    assert body["patient"] == "Patient/hosp-p021"
    assert body["criteria"] == stored.json()["results"][0]["criteria"]
    after = [client.get(f"/fhir/{t}", params={"_summary": "count"}).json()["total"] for t in types]
    assert after == before


def test_a_bad_bundle_is_refused_with_the_entry_named(client: TestClient, population: dict[str, Any]) -> None:
    two = _one_patient(population, "hosp-p021")
    two["entry"] += _one_patient(population, "hosp-p022")["entry"]
    response = client.post("/api/studies/depil-2/eligibility", content=json.dumps(two))
    assert response.status_code == 400
    assert "exactly one Patient (it holds 2)" in response.json()["issue"][0]["diagnostics"]
    invalid = _one_patient(population, "hosp-p021")
    observation = next(i for i, e in enumerate(invalid["entry"]) if e["resource"]["resourceType"] == "Observation")
    invalid["entry"][observation]["resource"]["status"] = "bogus"
    response = client.post("/api/studies/depil-2/eligibility", content=json.dumps(invalid))
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == [f"Bundle.entry[{observation}].resource.status"]


def test_screening_writes_research_subjects_once_with_a_provenance(
    client: TestClient, population: dict[str, Any]
) -> None:
    first = client.post("/api/studies/depil-2/screen", params={"as-of": AS_OF}).json()
    counts = client.get("/api/studies/depil-2/eligibility", params={"as-of": AS_OF, "_count": 1}).json()["counts"]
    assert first["research_subjects"] == {"created": sum(counts.values()), "updated": 0, "unchanged": 0}
    provenance = client.get(f"/fhir/{first['provenance']}").json()
    assert len(provenance["target"]) == sum(counts.values())
    assert provenance["entity"][0]["what"]["reference"] == "EvidenceVariable/depil-2-eligibility"
    eligible = client.get(
        "/fhir/ResearchSubject", params={"study": "ResearchStudy/depil-2", "status": "eligible", "_summary": "count"}
    ).json()
    candidates = client.get(
        "/fhir/ResearchSubject", params={"study": "ResearchStudy/depil-2", "status": "candidate", "_summary": "count"}
    ).json()
    assert (eligible["total"], candidates["total"]) == (counts["eligible"], counts["incomplete"])
    again = client.post("/api/studies/depil-2/screen", params={"as-of": AS_OF}).json()
    assert again["research_subjects"] == {"created": 0, "updated": 0, "unchanged": sum(counts.values())}
    assert again["provenance"] is None
