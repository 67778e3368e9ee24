"""Study specs: strict loading with file:line errors, and spec -> FHIR R4 (golden files) -> R5 views."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.eligibility.criteria import Expression
from app.fhir.r5 import R5Context, to_r4, to_r5, validate_r5
from app.fhir.validation import validate_resource
from app.mapping.study_fhir import (
    criterion_kind_code_system,
    r5_definition,
    study_resources,
)
from app.mapping.study_spec import StudyRegistry, load_studies, load_study
from app.mapping.yaml_source import SpecError

ROOT = Path(__file__).resolve().parents[2]
STUDIES_DIR = ROOT / "mappings" / "studies"
GOLDEN = ROOT / "tests" / "golden" / "studies"
# TRIALBRIDGE_UPDATE_GOLDEN=1 rewrites the expected files; read the diff before committing it.
UPDATE = os.environ.get("TRIALBRIDGE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def studies() -> StudyRegistry:
    return load_studies(STUDIES_DIR)


def _context(studies: StudyRegistry) -> R5Context:
    arms = {f"ResearchStudy/{s.id}": study_resources(s)[0]["arm"] for s in studies}
    return R5Context(study_arms=arms.get, expression_definition=r5_definition)


def test_the_three_studies_load_with_their_registry_identifiers(studies: StudyRegistry) -> None:
    assert {s.id: s.identifiers.nct for s in studies} == {
        "depil-2": "NCT04133233",
        "mirocals": "NCT03039673",
        "msc-sle": "NCT03562065",
    }
    assert studies.find("nct04133233") is studies.find("depil-2")
    assert studies.find("NCT00000000") is None
    depil = studies.find("depil-2")
    assert depil is not None
    assert depil.design.ratio == {"ilt101": 2, "placebo": 1}
    assert [v.day for v in depil.schedule] == [-7, 1, 2, 3, 4, 5, 15, 22, 29, 36, 60]


def test_every_criterion_is_computable_or_manual_with_a_reason(studies: StudyRegistry) -> None:
    for study in studies:
        for criterion in study.eligibility.criteria:
            assert (criterion.expression is None) == criterion.manual, criterion.id
            if criterion.manual:
                assert criterion.reason, criterion.id
    depil = studies.find("depil-2")
    assert depil is not None
    kinds = {c.id: c.expression.kind for c in depil.eligibility.criteria if c.expression}
    assert kinds["madrs-above-17"] == "observation"
    assert kinds["thyroid-antibodies"] == "any_of"
    assert kinds["other-study"] == "other_study"
    assert sum(c.manual for c in depil.eligibility.criteria) == 12


def test_study_day_follows_the_cdisc_convention(studies: StudyRegistry) -> None:
    depil, msc = studies.find("depil-2"), studies.find("msc-sle")
    assert depil is not None and msc is not None
    # D1 studies have no day 0: the day of the first dose is 1, the day before is -1.
    assert [depil.study_day(n) for n in (-2, -1, 0, 1, 14)] == [-2, -1, 1, 2, 15]
    assert [msc.study_day(n) for n in (-1, 0, 10)] == [-1, 0, 10]
    assert all(depil.days_after_first_dose(depil.study_day(n)) == n for n in range(-30, 90))
    assert depil.nominal_visit(16) == "w3"
    assert depil.nominal_visit(10) is None
    mirocals = studies.find("mirocals")
    assert mirocals is not None
    assert mirocals.nominal_visit(29 + 28 * 3) == "course-4"


@pytest.mark.parametrize("study_id", ["depil-2", "mirocals", "msc-sle"])
def test_study_resources_match_the_golden_files_and_validate(studies: StudyRegistry, study_id: str) -> None:
    spec = studies.find(study_id)
    assert spec is not None
    for resource in study_resources(spec):
        validate_resource(resource)
        path = GOLDEN / study_id / f"{resource['resourceType']}-{resource['id']}.json"
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n")
        assert resource == json.loads(path.read_text()), f"{path.name} differs from the golden file"
    validate_resource(criterion_kind_code_system())


def test_depil2_research_study_says_what_the_registry_says(studies: StudyRegistry) -> None:
    spec = studies.find("depil-2")
    assert spec is not None
    study, schedule, group, variable, visits = study_resources(spec)
    assert study["status"] == "active"
    assert study["phase"]["coding"][0]["code"] == "phase-2"
    assert [(a["id"], a["name"], a["type"]["coding"][0]["code"]) for a in study["arm"]] == [
        ("ilt101", "Active treatment", "experimental"),
        ("placebo", "Placebo", "placebo-comparator"),
    ]
    assert {i["value"] for i in study["identifier"]} >= {"NCT04133233", "2018-002777-22"}
    assert study["protocol"] == [{"reference": "PlanDefinition/depil-2-soa"}]
    assert study["enrollment"] == [{"reference": "Group/depil-2-eligibility"}]
    # Schedule: D5 sits 4 days after D1; screening before it; activities nested with their codes.
    actions = {a["id"]: a for a in schedule["action"]}
    d5 = actions["d5"]["relatedAction"][0]
    assert (d5["actionId"], d5["relationship"], d5["offsetRange"]["low"]["value"]) == ("d1", "after-start", 4)
    assert actions["screening"]["relatedAction"][0]["relationship"] == "before-start"
    assert "relatedAction" not in actions["d1"]
    assert any(
        sub.get("code", [{}])[0].get("coding", [{}])[0].get("code") == "treg-pct-cd4" for sub in actions["d5"]["action"]
    )
    # Group: flat characteristics; exclusions are exclude=true; age as a Range in years.
    by_id = {c["extension"][0]["valueId"]: c for c in group["characteristic"]}
    assert by_id["age"]["valueRange"]["low"]["value"] == 18 and by_id["age"]["valueRange"]["high"]["value"] == 65
    assert by_id["age"]["exclude"] is False
    assert by_id["leukocytes"]["valueQuantity"] == {
        "comparator": "<", "value": 4.0, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"
    }  # fmt: skip
    assert by_id["leukocytes"]["exclude"] is True
    assert "thyroid-antibodies" not in by_id  # any-of: not flat; the EvidenceVariable carries it
    assert "unreliable" not in by_id  # manual
    # EvidenceVariable: all 34 criteria in order, manual ones say why.
    assert len(variable["characteristic"]) == len(spec.eligibility.criteria) == 34
    manual = [c for c in variable["characteristic"] if "definitionCodeableConcept" in c]
    assert [c["code"] for c in visits["concept"]][:3] == ["screening", "d1", "d2"]
    assert visits["url"] == "https://trialbridge.dev/fhir/CodeSystem/depil-2/visit"
    assert len(manual) == 12 and all(
        c["definitionCodeableConcept"]["text"].startswith("Manual review: ") for c in manual
    )


def test_not_flattens_into_an_excluded_characteristic(studies: StudyRegistry) -> None:
    spec = studies.find("mirocals")
    assert spec is not None
    group = study_resources(spec)[2]
    riluzole = next(c for c in group["characteristic"] if c["extension"][0]["valueId"] == "riluzole-naive")
    assert riluzole["exclude"] is True
    assert riluzole["valueCodeableConcept"]["coding"] == [{"system": "http://www.whocc.no/atc", "code": "N07XX02"}]
    age = next(c for c in group["characteristic"] if c["extension"][0]["valueId"] == "age")
    assert age["valueRange"]["high"]["value"] == 75  # "less than 76"


@pytest.mark.parametrize("study_id", ["depil-2", "mirocals", "msc-sle"])
def test_r5_views_validate_and_round_trip_to_the_same_r4(studies: StudyRegistry, study_id: str) -> None:
    spec = studies.find(study_id)
    assert spec is not None
    context = _context(studies)
    for resource in study_resources(spec):
        if resource["resourceType"] not in ("ResearchStudy", "EvidenceVariable"):
            continue
        r5 = to_r5(resource, context)
        validate_r5(r5)
        assert _canonical(to_r4(r5, context)) == _canonical(resource)


def test_r5_research_study_uses_the_r5_elements(studies: StudyRegistry) -> None:
    spec = studies.find("depil-2")
    assert spec is not None
    r5 = to_r5(study_resources(spec)[0], _context(studies))
    assert r5["status"] == "active"
    assert r5["progressStatus"] == [
        {
            "state": {"coding": [{"system": "http://hl7.org/fhir/research-study-status", "code": "active"}]},
            "actual": True,
        }
    ]
    assert [(g["linkId"], g["name"]) for g in r5["comparisonGroup"]] == [
        ("ilt101", "Active treatment"),
        ("placebo", "Placebo"),
    ]
    assert r5["recruitment"]["targetNumber"] == 18
    assert r5["recruitment"]["eligibility"] == {"reference": "EvidenceVariable/depil-2-eligibility"}
    assert next(m["name"] for m in r5["outcomeMeasure"]) == "Change of Treg response"
    assert {p["role"]["coding"][0]["code"] for p in r5["associatedParty"]} == {"sponsor", "collaborator"}
    assert not any(k in r5 for k in ("arm", "sponsor", "enrollment"))


def test_r5_evidence_variable_nests_any_of_and_not(studies: StudyRegistry) -> None:
    spec = studies.find("depil-2")
    assert spec is not None
    r5 = to_r5(study_resources(spec)[3], _context(studies))
    by_link = {c["linkId"]: c for c in r5["characteristic"]}
    thyroid = by_link["thyroid-antibodies"]
    assert thyroid["exclude"] is True
    combination = thyroid["definitionByCombination"]
    assert combination["code"] == "any-of"
    assert [c["definitionByTypeAndValue"]["type"]["coding"][0]["code"] for c in combination["characteristic"]] == [
        "8099-4",
        "8098-6",
    ]
    haemoglobin = by_link["haemoglobin"]["definitionByCombination"]
    assert [c["definitionByTypeAndValue"]["valueQuantity"]["code"] for c in haemoglobin["characteristic"]] == [
        "g/dL",
        "mmol/L",
    ]
    cancer = by_link["cancer"]["definitionByCombination"]["characteristic"]
    assert cancer[1]["exclude"] is True  # the listed exceptions
    assert cancer[0]["timeFromEvent"][0]["range"]["low"] == {
        "value": -5, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"
    }  # fmt: skip
    mirocals = studies.find("mirocals")
    assert mirocals is not None
    riluzole = next(
        c
        for c in to_r5(study_resources(mirocals)[3], _context(studies))["characteristic"]
        if c["linkId"] == "riluzole-naive"
    )
    assert riluzole["exclude"] is True  # an inclusion criterion that is a `not`


def test_research_subject_r5_links_the_comparison_group_by_its_link_id(studies: StudyRegistry) -> None:
    context = _context(studies)
    r4 = {
        "resourceType": "ResearchSubject",
        "id": "s1",
        "status": "on-study",
        "period": {"start": "2021-03-01"},
        "study": {"reference": "ResearchStudy/depil-2"},
        "individual": {"reference": "Patient/p1"},
        "assignedArm": "Placebo",
        "consent": {"reference": "Consent/c1"},
    }
    r5 = to_r5(r4, context)
    validate_r5(r5)
    assert r5["subject"] == {"reference": "Patient/p1"}
    assert r5["assignedComparisonGroup"] == "placebo"
    assert r5["progress"][0]["subjectState"]["coding"][0] == {
        "system": "http://hl7.org/fhir/research-subject-state",
        "code": "on-study",
    }
    assert r5["consent"] == [{"reference": "Consent/c1"}]
    assert to_r4(r5, context) == r4
    # An arm name the study does not have survives the trip in the R4 cross-version extension.
    odd = {**r4, "assignedArm": "Arm from another protocol version"}
    assert to_r4(to_r5(odd, context), context) == odd


def test_criteria_expressions_round_trip_through_the_evidence_variable(studies: StudyRegistry) -> None:
    for study in studies:
        variable = study_resources(study)[3]
        for characteristic, criterion in zip(variable["characteristic"], study.eligibility.criteria, strict=True):
            if criterion.expression is None:
                continue
            stored = json.loads(characteristic["definitionExpression"]["expression"])
            assert Expression.model_validate(stored) == criterion.expression


# ------------------------------------------------------------------------------------------- bad specs


def _write_spec(tmp_path: Path, text: str, name: str = "depil-2") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _depil_text() -> str:
    return (STUDIES_DIR / "depil-2.yaml").read_text()


def test_an_unknown_key_names_the_file_line_and_field(tmp_path: Path) -> None:
    text = _depil_text().replace("planned_enrollment: 18", "planned_enrollment: 18\nplanned_enrolment: 18")
    path = _write_spec(tmp_path, text)
    line = text.splitlines().index("planned_enrolment: 18") + 1
    with pytest.raises(SpecError) as caught:
        load_study(path)
    assert str(caught.value) == f"{path}:{line}: planned_enrolment: Extra inputs are not permitted"


def test_a_criterion_with_a_bad_code_system_names_its_line(tmp_path: Path) -> None:
    text = _depil_text().replace("atc|N05AN01", "whocc|N05AN01")
    path = _write_spec(tmp_path, text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "whocc|N05AN01" in row)
    with pytest.raises(SpecError) as caught:
        load_study(path)
    assert caught.value.problems[0][0] == line
    assert "unknown code system 'whocc'" in caught.value.problems[0][1]
    assert "eligibility.criteria.3.expression.medication.codes" in caught.value.problems[0][1]


def test_a_criterion_both_manual_and_computable_is_refused(tmp_path: Path) -> None:
    unreliable = next(line + "\n" for line in _depil_text().splitlines() if "thought to be unreliable" in line)
    text = _depil_text().replace(unreliable, unreliable + "      expression: {age: {min: 18}}\n")
    with pytest.raises(SpecError, match="either an expression or manual: true"):
        load_study(_write_spec(tmp_path, text))


def test_dangling_ids_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    dangling = _depil_text().replace("interventions: [placebo]", "interventions: [placebo-kit]")
    with pytest.raises(SpecError, match="arm 'placebo' names unknown intervention 'placebo-kit'"):
        load_study(_write_spec(tmp_path, dangling))
    duplicate = _depil_text().replace("status: active\n", "status: active\nstatus: completed\n", 1)
    line = duplicate.splitlines().index("status: completed") + 1
    with pytest.raises(SpecError) as caught:
        load_study(_write_spec(tmp_path, duplicate))
    assert caught.value.problems[0][0] == line
    assert "duplicate key 'status'" in caught.value.problems[0][1]


def test_malformed_yaml_and_a_file_name_that_is_not_the_id(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_study(_write_spec(tmp_path, "id: depil-2\narms: [unclosed\n"))
    assert caught.value.problems[0][0] == 3
    with pytest.raises(SpecError, match="must equal the file name 'other'"):
        load_study(_write_spec(tmp_path, _depil_text(), name="other"))


def _canonical(resource: object) -> object:
    """Extension order carries no meaning in these resources; compare them sorted."""
    if isinstance(resource, dict):
        out = {k: _canonical(v) for k, v in resource.items()}
        if "extension" in out:
            out["extension"] = sorted(out["extension"], key=lambda e: json.dumps(e, sort_keys=True))
        return out
    if isinstance(resource, list):
        return [_canonical(v) for v in resource]
    return resource
