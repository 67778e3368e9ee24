"""The three studies as served at /fhir, in R4 and (Accept fhirVersion=5.0) R5, and R5 writes."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from app.fhir.r5 import validate_r5

R5 = "application/fhir+json; fhirVersion=5.0"


def test_the_three_studies_are_served_with_arms_schedules_and_criteria(client: TestClient) -> None:
    bundle = client.get("/fhir/ResearchStudy", params={"_sort": "_id"}).json()
    studies = [e["resource"] for e in bundle["entry"]]
    assert [s["id"] for s in studies] == ["depil-2", "mirocals", "msc-sle"]
    assert [[a["name"] for a in s["arm"]] for s in studies] == [
        ["Active treatment", "Placebo"],
        ["IL-2", "Placebo"],
        ["UC-MSC 1 million cells/kg", "UC-MSC 2 million cells/kg", "UC-MSC 4 million cells/kg"],
    ]
    by_nct = client.get("/fhir/ResearchStudy", params={"identifier": "http://clinicaltrials.gov|NCT03039673"}).json()
    assert [e["resource"]["id"] for e in by_nct["entry"]] == ["mirocals"]
    schedule = client.get("/fhir/PlanDefinition/depil-2-soa").json()
    assert [a["id"] for a in schedule["action"]][:3] == ["screening", "d1", "d2"]
    group = client.get("/fhir/Group/depil-2-eligibility").json()
    assert group["actual"] is False and len(group["characteristic"]) == 18  # 22 computable, 4 composites
    variable = client.get("/fhir/EvidenceVariable/depil-2-eligibility").json()
    assert len(variable["characteristic"]) == 34


def test_start_up_publishes_the_studies_once(client: TestClient) -> None:
    # The client fixture started the app; publishing again (a restart) must not write new versions.
    from app.mapping.study_fhir import install_studies

    app = client.app
    install_studies(app.state.store, app.state.studies)  # type: ignore[attr-defined]
    for path in ("ResearchStudy/depil-2", "PlanDefinition/mirocals-soa", "EvidenceVariable/msc-sle-eligibility"):
        assert client.get(f"/fhir/{path}").json()["meta"]["versionId"] == "1", path


def test_r5_views_of_study_and_eligibility(client: TestClient) -> None:
    response = client.get("/fhir/ResearchStudy/depil-2", headers={"Accept": R5})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; fhirVersion=5.0; charset=utf-8"
    study = response.json()
    validate_r5(study)
    assert study["progressStatus"][0]["state"]["coding"][0]["code"] == "active"
    assert [g["linkId"] for g in study["comparisonGroup"]] == ["ilt101", "placebo"]
    assert study["recruitment"]["eligibility"]["reference"] == "EvidenceVariable/depil-2-eligibility"
    variable = client.get("/fhir/EvidenceVariable/depil-2-eligibility", headers={"Accept": R5}).json()
    validate_r5(variable)
    assert variable["characteristic"][2]["linkId"] == "madrs-above-17"
    searchset = client.get("/fhir/ResearchStudy", headers={"Accept": R5}).json()
    assert {e["resource"]["status"] for e in searchset["entry"]} == {"active"}
    for entry in searchset["entry"]:
        validate_r5(entry["resource"])


def test_types_without_an_r5_view_are_refused_before_searching(client: TestClient) -> None:
    for path in ("/fhir/Patient", "/fhir/Observation/x", "/fhir/metadata"):
        response = client.get(path, headers={"Accept": R5})
        assert response.status_code == 406, path
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == ["Accept"]
    assert client.get("/fhir/Patient", headers={"Accept": "application/fhir+json; fhirVersion=3.0"}).status_code == 406


def _enrol(client: TestClient) -> dict:
    subject = {
        "resourceType": "ResearchSubject",
        "id": "rs-1",
        "status": "on-study",
        "period": {"start": "2021-03-01"},
        "study": {"reference": "ResearchStudy/depil-2"},
        "individual": {"reference": "Patient/p-1"},
        "assignedArm": "Placebo",
    }
    client.put("/fhir/Patient/p-1", content=json.dumps({"resourceType": "Patient", "id": "p-1"}))
    assert client.put("/fhir/ResearchSubject/rs-1", content=json.dumps(subject)).status_code == 201
    return subject


def test_research_subject_in_r5_and_back(client: TestClient) -> None:
    stored = _enrol(client)
    r5 = client.get("/fhir/ResearchSubject/rs-1", headers={"Accept": R5}).json()
    validate_r5(r5)
    assert r5["assignedComparisonGroup"] == "placebo"
    assert r5["subject"] == {"reference": "Patient/p-1"}
    # An R5 client moves the subject to follow-up in the active arm, writing R5.
    r5["progress"].append(
        {
            "subjectState": {"coding": [{"system": "http://hl7.org/fhir/research-subject-state", "code": "follow-up"}]},
            "startDate": "2021-05-01",
        }
    )
    r5["assignedComparisonGroup"] = "ilt101"
    response = client.put("/fhir/ResearchSubject/rs-1", content=json.dumps(r5), headers={"Content-Type": R5})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json; fhirVersion=5.0")
    r4 = client.get("/fhir/ResearchSubject/rs-1").json()
    assert (r4["status"], r4["assignedArm"], r4["individual"]) == (
        "follow-up",
        "Active treatment",
        stored["individual"],
    )
    assert r4["meta"]["versionId"] == "2"


def test_r5_writes_with_mistakes_get_operation_outcomes(client: TestClient) -> None:
    _enrol(client)
    r5 = client.get("/fhir/ResearchSubject/rs-1", headers={"Accept": R5}).json()
    unknown_arm = {**r5, "assignedComparisonGroup": "high-dose"}
    response = client.put("/fhir/ResearchSubject/rs-1", content=json.dumps(unknown_arm), headers={"Content-Type": R5})
    assert response.status_code == 422
    assert response.json()["issue"] == [
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "assignedComparisonGroup 'high-dose' is not a comparison group of ResearchStudy/depil-2: "
            "known linkIds are ilt101, placebo.",
            "expression": ["ResearchSubject.assignedComparisonGroup"],
        }
    ]
    not_r5 = {**r5, "individual": {"reference": "Patient/p-1"}}  # an R4 element in an R5 body
    response = client.put("/fhir/ResearchSubject/rs-1", content=json.dumps(not_r5), headers={"Content-Type": R5})
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["ResearchSubject.individual"]
    patient = client.put(
        "/fhir/Patient/p-1", content=json.dumps({"resourceType": "Patient", "id": "p-1"}), headers={"Content-Type": R5}
    )
    assert patient.status_code == 415
    assert "accepted as FHIR R4 only" in patient.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/ResearchSubject/rs-1").json()["meta"]["versionId"] == "1"
