"""ClinicalTrials.gov API v2 records -> R4 ResearchStudy: golden files, validation, ConceptMap rows, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.fhir.definitions import value_set_codes
from app.fhir.errors import FhirError
from app.fhir.validation import validate_resource
from app.mapping.concept_maps import ConceptMapIndex, load_concept_map, source_codes
from app.mapping.ctgov import (
    INEXACT_TRANSLATION_URL,
    PHASE_SYSTEM,
    STATUS_SYSTEM,
    ctgov_to_research_study,
    load_ctgov_concept_maps,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "ctgov"
GOLDEN = ROOT / "tests" / "golden" / "ctgov"
CONCEPT_MAP_FILES = sorted((ROOT / "mappings" / "ctgov").glob("ConceptMap-*.json"))
NCT_IDS = ["NCT04133233", "NCT03039673", "NCT03562065"]  # DEPIL-2, MIROCALS, MSC-SLE

# value_set_codes() only knows required bindings; phase and primary purpose are extensible, so their
# codes come from the R4 CodeSystems (hl7.fhir.r4 4.0.1: CodeSystem-research-study-phase,
# CodeSystem-research-study-prim-purp-type).
R4_TARGET_CODES = {
    "http://hl7.org/fhir/research-study-status": set(
        (value_set_codes("http://hl7.org/fhir/ValueSet/research-study-status") or {}).get(
            "http://hl7.org/fhir/research-study-status", ()
        )
    ),
    "http://terminology.hl7.org/CodeSystem/research-study-phase": {
        "n-a",
        "early-phase-1",
        "phase-1",
        "phase-1-phase-2",
        "phase-2",
        "phase-2-phase-3",
        "phase-3",
        "phase-4",
    },
    "http://terminology.hl7.org/CodeSystem/research-study-prim-purp-type": {
        "treatment",
        "prevention",
        "diagnostic",
        "supportive-care",
        "screening",
        "health-services-research",
        "basic-science",
        "device-feasibility",
    },
}

# The registry's enums (https://clinicaltrials.gov/data-api/about-api/study-data-structure).
CTGOV_STATUSES = {
    "ACTIVE_NOT_RECRUITING",
    "COMPLETED",
    "ENROLLING_BY_INVITATION",
    "NOT_YET_RECRUITING",
    "RECRUITING",
    "SUSPENDED",
    "TERMINATED",
    "WITHDRAWN",
    "AVAILABLE",
    "NO_LONGER_AVAILABLE",
    "TEMPORARILY_NOT_AVAILABLE",
    "APPROVED_FOR_MARKETING",
    "WITHHELD",
    "UNKNOWN",
}
CTGOV_PHASES = {"NA", "EARLY_PHASE1", "PHASE1", "PHASE2", "PHASE3", "PHASE4"}


@pytest.fixture(scope="module")
def concept_maps() -> ConceptMapIndex:
    return load_ctgov_concept_maps(ROOT / "mappings")


def record(nct_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{nct_id}.json").read_text(encoding="utf-8"))
    return data


def depil2(**status_module: Any) -> dict[str, Any]:
    """The DEPIL-2 record with its statusModule fields replaced."""
    data = copy.deepcopy(record("NCT04133233"))
    data["protocolSection"]["statusModule"].update(status_module)
    return data


@pytest.mark.parametrize("nct_id", NCT_IDS)
def test_output_equals_the_golden_file(nct_id: str, concept_maps: ConceptMapIndex) -> None:
    expected = json.loads((GOLDEN / f"{nct_id}.ResearchStudy.json").read_text(encoding="utf-8"))
    assert ctgov_to_research_study(record(nct_id), concept_maps=concept_maps) == expected


@pytest.mark.parametrize("nct_id", NCT_IDS)
def test_output_is_a_valid_r4_research_study(nct_id: str, concept_maps: ConceptMapIndex) -> None:
    study = ctgov_to_research_study(record(nct_id), concept_maps=concept_maps)
    assert validate_resource(study) == "ResearchStudy"
    # dom-3: every contained resource is referenced from the study
    references = json.dumps(study)
    assert all(f'"#{res["id"]}"' in references for res in study["contained"])


@pytest.mark.parametrize("path", CONCEPT_MAP_FILES, ids=lambda p: p.name)
def test_every_concept_map_row_targets_an_r4_code(path: Path) -> None:
    concept_map = load_concept_map(path)
    for group in concept_map["group"]:
        allowed = R4_TARGET_CODES[group["target"]]
        assert allowed, group["target"]
        for element in group["element"]:
            for target in element["target"]:
                if target["equivalence"] == "unmatched":
                    assert "code" not in target and target.get("comment"), element["code"]
                    continue
                assert target["code"] in allowed, (element["code"], target["code"])
                if target["equivalence"] in ("inexact", "narrower"):  # cmd-1: a lossy row says why
                    assert target.get("comment"), element["code"]


def test_the_maps_list_every_registry_status_and_phase(concept_maps: ConceptMapIndex) -> None:
    # so that a status the maps do not know is a registry change, not a gap in our table
    assert source_codes(concept_maps, STATUS_SYSTEM) == CTGOV_STATUSES
    assert source_codes(concept_maps, PHASE_SYSTEM) == CTGOV_PHASES | {"PHASE1+PHASE2", "PHASE2+PHASE3"}


def test_an_unknown_overall_status_names_its_path(concept_maps: ConceptMapIndex) -> None:
    with pytest.raises(FhirError) as caught:
        ctgov_to_research_study(depil2(overallStatus="RECRUTING"), concept_maps=concept_maps)
    assert caught.value.status == 422
    assert caught.value.outcome() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "protocolSection.statusModule.overallStatus: 'RECRUTING' is not a ClinicalTrials.gov "
                "overallStatus that https://trialbridge.dev/fhir/ConceptMap/ctgov-status maps (known: "
                + ", ".join(sorted(CTGOV_STATUSES))
                + ").",
                "expression": ["protocolSection.statusModule.overallStatus"],
            }
        ],
    }


def test_every_problem_of_a_record_is_reported_at_once(concept_maps: ConceptMapIndex) -> None:
    data = depil2(overallStatus="RECRUTING")
    data["protocolSection"]["eligibilityModule"]["minimumAge"] = "18 ans"
    del data["protocolSection"]["armsInterventionsModule"]["armGroups"][1]["label"]
    with pytest.raises(FhirError) as caught:
        ctgov_to_research_study(data, concept_maps=concept_maps)
    assert [issue.expression for issue in caught.value.issues] == [
        ("protocolSection.statusModule.overallStatus",),
        ("protocolSection.eligibilityModule.minimumAge",),
        ("protocolSection.armsInterventionsModule.armGroups[1].label",),
    ]
    assert [issue.code for issue in caught.value.issues] == ["code-invalid", "value", "required"]


def test_two_phases_map_to_the_combined_r4_phase(concept_maps: ConceptMapIndex) -> None:
    data = depil2()
    data["protocolSection"]["designModule"]["phases"] = ["PHASE2", "PHASE1"]  # order does not matter
    study = ctgov_to_research_study(data, concept_maps=concept_maps)
    assert study["phase"] == {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/research-study-phase",
                "code": "phase-1-phase-2",
                "display": "Phase 1/Phase 2",
            }
        ],
        "text": "Phase 1/Phase 2",
    }
    assert validate_resource(study) == "ResearchStudy"


def test_phases_without_an_r4_phase_are_refused(concept_maps: ConceptMapIndex) -> None:
    for phases, expression in (
        (["PHASE1", "PHASE3"], "protocolSection.designModule.phases"),
        (["PHASE2", "PHASE5"], "protocolSection.designModule.phases[1]"),
    ):
        data = depil2()
        data["protocolSection"]["designModule"]["phases"] = phases
        with pytest.raises(FhirError) as caught:
            ctgov_to_research_study(data, concept_maps=concept_maps)
        assert [issue.expression for issue in caught.value.issues] == [(expression,)]


def test_a_lossy_status_is_marked_on_the_status_element(concept_maps: ConceptMapIndex) -> None:
    study = ctgov_to_research_study(depil2(overallStatus="ENROLLING_BY_INVITATION"), concept_maps=concept_maps)
    assert study["status"] == "active"
    assert study["_status"] == {
        "extension": [
            {
                "url": INEXACT_TRANSLATION_URL,
                "extension": [
                    {"url": "source", "valueCoding": {"system": STATUS_SYSTEM, "code": "ENROLLING_BY_INVITATION"}},
                    {"url": "conceptMap", "valueCanonical": "https://trialbridge.dev/fhir/ConceptMap/ctgov-status"},
                    {
                        "url": "comment",
                        "valueString": "Open for accrual, but only to people the investigators invite: "
                        "R4 has no invitation-only status.",
                    },
                ],
            }
        ]
    }
    assert validate_resource(study) == "ResearchStudy"


def test_an_unknown_status_falls_back_on_the_last_known_one(concept_maps: ConceptMapIndex) -> None:
    study = ctgov_to_research_study(
        depil2(overallStatus="UNKNOWN", lastKnownStatus="RECRUITING"), concept_maps=concept_maps
    )
    assert study["status"] == "active"
    marks = study["_status"]["extension"][0]["extension"]
    assert marks[0]["valueCoding"]["code"] == "UNKNOWN"
    assert marks[-1] == {
        "url": "comment",
        "valueString": "overallStatus is UNKNOWN; translated from lastKnownStatus RECRUITING.",
    }
    with pytest.raises(FhirError) as caught:
        ctgov_to_research_study(depil2(overallStatus="UNKNOWN"), concept_maps=concept_maps)
    assert [issue.expression for issue in caught.value.issues] == [("protocolSection.statusModule.overallStatus",)]


def test_eligibility_sex_and_ages_in_other_units(concept_maps: ConceptMapIndex) -> None:
    data = depil2()
    eligibility = data["protocolSection"]["eligibilityModule"]
    eligibility.update(sex="FEMALE", minimumAge="6 Months", maximumAge="N/A")
    group = ctgov_to_research_study(data, concept_maps=concept_maps)["contained"][0]
    assert group["characteristic"][0]["valueRange"] == {
        "low": {"value": 6, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"}
    }
    assert group["characteristic"][1]["valueCodeableConcept"] == {
        "coding": [{"system": "http://hl7.org/fhir/administrative-gender", "code": "female"}]
    }


def test_a_record_without_protocol_section_is_refused(concept_maps: ConceptMapIndex) -> None:
    with pytest.raises(FhirError) as caught:
        ctgov_to_research_study({"studies": []}, concept_maps=concept_maps)
    assert [issue.expression for issue in caught.value.issues] == [("protocolSection",)]
