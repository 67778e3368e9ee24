"""conformance.check_resource: required-binding codes and reference target types on plain JSON."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.fhir.conformance import check_resource
from app.fhir.definitions import skipped_bindings, value_set_codes
from app.fhir.errors import Issue

OBSERVATION_STATUS = "http://hl7.org/fhir/ValueSet/observation-status|4.0.1"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def lab_observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "hb-1",
        "meta": {"lastUpdated": "2024-01-01T00:00:00Z", "tag": [{"system": "urn:trial", "code": "T-1"}]},
        "identifier": [{"use": "official", "system": "urn:oid:1.2.3", "value": "123"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}], "text": "Hb"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01T08:00:00Z",
        "performer": [{"reference": "Organization/lab"}],
        "valueQuantity": {"value": 7.2, "unit": "g/dL", "system": UCUM, "code": "g/dL", "comparator": "<"},
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "L",
                    }
                ]
            }
        ],
        "referenceRange": [
            {
                "low": {"value": 12.0, "unit": "g/dL", "system": UCUM, "code": "g/dL"},
                "high": {"value": 16.0, "unit": "g/dL", "system": UCUM, "code": "g/dL"},
            }
        ],
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
            {"code": {"text": "b"}, "valueString": "x", "referenceRange": [{"text": "n/a"}]},
        ],
    }


def expressions(issues: list[Issue]) -> list[str]:
    return [e for issue in issues for e in issue.expression]


# ---------------------------------------------------------------------------------------------- bindings


def test_valid_lab_observation_passes() -> None:
    assert check_resource(lab_observation()) == []


def test_bogus_observation_status_is_rejected_with_exact_expression() -> None:
    obs = lab_observation()
    obs["status"] = "bogus"
    issues = check_resource(obs)
    assert len(issues) == 1
    issue = issues[0]
    assert issue.code == "code-invalid"
    assert issue.severity == "error"
    assert issue.expression == ("Observation.status",)
    assert issue.diagnostics.startswith(
        f"Observation.status: 'bogus' is not in the required value set {OBSERVATION_STATUS} "
        "(registered, preliminary, final, amended, ...)"
    )


@pytest.mark.parametrize(
    "status",
    [
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ],
)
def test_every_observation_status_code_is_accepted(status: str) -> None:
    obs = lab_observation()
    obs["status"] = status
    assert check_resource(obs) == []


def test_codes_are_case_sensitive() -> None:
    obs = lab_observation()
    obs["status"] = "Final"
    assert expressions(check_resource(obs)) == ["Observation.status"]


def test_nested_datatype_binding_in_list() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Doe"}, {"use": "nick", "given": ["J"]}],
        "gender": "female",
    }
    issues = check_resource(patient)
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", ("Patient.name[1].use",))]
    assert "http://hl7.org/fhir/ValueSet/name-use|4.0.1" in issues[0].diagnostics


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "identifier": [{"use": "primary"}]}, "Patient.identifier[0].use"),
        (
            {"resourceType": "Patient", "telecom": [{"system": "telegram", "value": "1"}]},
            "Patient.telecom[0].system",
        ),
        ({"resourceType": "Patient", "text": {"status": "nice", "div": "<div/>"}}, "Patient.text.status"),
        ({"resourceType": "Patient", "address": [{"use": "holiday"}]}, "Patient.address[0].use"),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {},
                "valueQuantity": {"comparator": "=="},
            },
            "Observation.valueQuantity.comparator",
        ),
        (
            {
                "resourceType": "Patient",
                "identifier": [{"period": {}, "assigner": {"identifier": {"use": "x"}}}],
            },
            "Patient.identifier[0].assigner.identifier.use",
        ),
    ],
)
def test_datatype_bindings_anywhere(resource: dict[str, Any], expression: str) -> None:
    issues = check_resource(resource)
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", (expression,))]


def test_backbone_elements() -> None:
    obs = lab_observation()
    obs["component"][1]["valueQuantity"] = {"value": 3, "comparator": "about"}
    del obs["component"][1]["valueString"]
    patient = {
        "resourceType": "Patient",
        "contact": [{"gender": "female"}, {"gender": "woman"}],
        "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}, {"other": {}, "type": "same"}],
    }
    assert expressions(check_resource(obs)) == ["Observation.component[1].valueQuantity.comparator"]
    assert expressions(check_resource(patient)) == ["Patient.contact[1].gender", "Patient.link[1].type"]


def test_content_reference_backbone_is_walked() -> None:
    obs = lab_observation()
    obs["component"][1]["referenceRange"] = [{"low": {"value": 1, "comparator": "~"}}]
    assert expressions(check_resource(obs)) == ["Observation.component[1].referenceRange[0].low.comparator"]


def test_contained_resources_are_checked_below_the_container() -> None:
    patient = {
        "resourceType": "Patient",
        "contained": [
            {"resourceType": "Practitioner", "id": "pr", "gender": "robot"},
            {
                "resourceType": "Organization",
                "id": "org",
                "telecom": [{"system": "fax"}, {"system": "telex"}],
            },
        ],
        "generalPractitioner": [{"reference": "#pr"}],
    }
    issues = check_resource(patient)
    assert expressions(issues) == ["Patient.contained[0].gender", "Patient.contained[1].telecom[1].system"]
    assert issues[0].under("Bundle.entry[2].resource").expression == ("Bundle.entry[2].resource.contained[0].gender",)


def test_extension_values_and_primitive_extensions() -> None:
    obs = lab_observation()
    obs["extension"] = [
        {"url": "http://example.org/a", "valueQuantity": {"value": 1, "comparator": "!"}},
        {"url": "http://example.org/b", "extension": [{"url": "c", "valueHumanName": {"use": "nick"}}]},
    ]
    obs["_status"] = {"extension": [{"url": "http://example.org/d", "valueContactPoint": {"system": "pigeon"}}]}
    assert expressions(check_resource(obs)) == [
        "Observation.extension[0].valueQuantity.comparator",
        "Observation.extension[1].extension[0].valueHumanName.use",
        "Observation.status.extension[0].valueContactPoint.system",
    ]


def test_bundle_entries_are_walked() -> None:
    obs = lab_observation()
    obs["status"] = "done"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": lab_observation()}, {"resource": obs}],
    }
    assert expressions(check_resource(bundle)) == ["Bundle.entry[1].resource.status"]
    bundle["type"] = "heap"
    assert expressions(check_resource(bundle)) == ["Bundle.type", "Bundle.entry[1].resource.status"]


def test_codeable_concept_binding_checks_only_the_bound_system() -> None:
    condition_clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "55561003"},  # another system: not checked
                {"system": condition_clinical, "code": "active"},
                {"system": condition_clinical, "code": "cured"},
                {"code": "whatever"},  # no system: not checked
            ]
        },
        "subject": {"reference": "Patient/1"},
    }
    issues = check_resource(condition)
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", ("Condition.clinicalStatus.coding[2].code",))]
    assert "http://hl7.org/fhir/ValueSet/condition-clinical|4.0.1" in issues[0].diagnostics


def test_trial_resources() -> None:
    subject = {
        "resourceType": "ResearchSubject",
        "status": "on-study",
        "study": {"reference": "ResearchStudy/s1"},
        "individual": {"reference": "Patient/p1"},
    }
    assert check_resource(subject) == []
    subject["status"] = "enrolled"
    assert expressions(check_resource(subject)) == ["ResearchSubject.status"]

    study = {"resourceType": "ResearchStudy", "status": "active", "site": [{"reference": "Location/l1"}]}
    assert check_resource(study) == []
    study["site"] = [{"reference": "Organization/o1"}]  # R4: Location only (R5 widened it)
    assert expressions(check_resource(study)) == ["ResearchStudy.site[0]"]

    ctcae = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
    event = {
        "resourceType": "AdverseEvent",
        "actuality": "actual",
        "subject": {"reference": "Patient/p1"},
        "severity": {"coding": [{"system": ctcae, "code": "C41338"}]},  # CTCAE grade: other system, skipped
        "study": [{"reference": "ResearchStudy/s1"}],
    }
    assert check_resource(event) == []
    event["actuality"] = "maybe"
    event["severity"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
                                     "code": "grade-3"}]}  # fmt: skip
    assert expressions(check_resource(event)) == [
        "AdverseEvent.actuality",
        "AdverseEvent.severity.coding[0].code",
    ]


def test_non_enumerable_value_sets_are_skipped() -> None:
    assert "http://hl7.org/fhir/ValueSet/mimetypes|4.0.1" in skipped_bindings()
    assert value_set_codes("http://hl7.org/fhir/ValueSet/mimetypes|4.0.1") is None
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/x-not-checked", "language": "xx"}}],
    }
    assert check_resource(doc) == []


def test_wrong_json_shapes_are_left_to_the_model_validation() -> None:
    assert check_resource({"resourceType": "Observation", "status": 3, "code": "x", "subject": "Patient/1"}) == []
    assert check_resource({"resourceType": "Observation", "component": [None, 1, "x"], "_status": [None]}) == []


def test_unknown_resource_type() -> None:
    issues = check_resource({"resourceType": "Patinet"})
    assert [i.code for i in issues] == ["invalid"]


def test_input_is_not_modified() -> None:
    obs = lab_observation()
    obs["status"] = "bogus"
    before = copy.deepcopy(obs)
    check_resource(obs)
    assert obs == before


# ---------------------------------------------------------------------------------------------- references


def subject(reference: str, **extra: Any) -> list[Issue]:
    obs = lab_observation()
    obs["subject"] = {"reference": reference, **extra}
    return check_resource(obs)


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/1",
        "Group/g-1",
        "Device/d.1",
        "Location/l1",
        "Patient/1/_history/3",
        "http://example.org/fhir/Patient/1",
        "https://example.org/fhir/R4/Patient/1/_history/2",
        "Patient?identifier=a|b",
        "Patient?identifier=http://hospital.example/mrn|123&birthdate=1970-01-01",
        "#contained-patient",
        "urn:uuid:4c9a1b6e-4e2b-4a67-9b1e-6e5b0b7a6d5f",
        "urn:oid:1.2.3.4",
        "http://example.org/not-fhir/something",
    ],
)
def test_allowed_or_unchecked_references(reference: str) -> None:
    assert subject(reference) == []


@pytest.mark.parametrize(
    "reference",
    [
        "Practitioner/1",
        "Medication/1",
        "Practitioner/1/_history/2",
        "http://example.org/fhir/Practitioner/1",
        "Practitioner?identifier=a|b",
    ],
)
def test_wrong_target_type_is_rejected(reference: str) -> None:
    issues = subject(reference)
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("Observation.subject",))]
    assert "Patient|Group|Device|Location" in issues[0].diagnostics


def test_practitioner_subject_diagnostics() -> None:
    (issue,) = subject("Practitioner/1")
    assert issue == Issue(
        "invalid",
        "Observation.subject: reference 'Practitioner/1' targets Practitioner, not an allowed type "
        "(Patient|Group|Device|Location)",
        ("Observation.subject",),
    )


@pytest.mark.parametrize("reference", ["Patinet/1", "patient/1", "Patinet?identifier=x", "Resource/1"])
def test_unknown_resource_type_in_reference(reference: str) -> None:
    issues = subject(reference)
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("Observation.subject",))]
    assert "is not a FHIR R4 resource type" in issues[0].diagnostics


def test_reference_any_allows_every_type_but_not_unknown_ones() -> None:
    obs = lab_observation()
    obs["focus"] = [{"reference": "Medication/1"}, {"reference": "ResearchStudy/2"}, {"reference": "Foo/3"}]
    assert expressions(check_resource(obs)) == ["Observation.focus[2]"]


def test_references_in_lists_backbones_and_datatypes() -> None:
    obs = lab_observation()
    obs["performer"] = [{"reference": "Practitioner/1"}, {"reference": "Location/2"}]
    obs["note"] = [{"authorReference": {"reference": "Device/1"}, "text": "x"}]
    obs["identifier"] = [{"assigner": {"reference": "Patient/1"}}]
    assert expressions(check_resource(obs)) == [
        "Observation.identifier[0].assigner",
        "Observation.performer[1]",
        "Observation.note[0].authorReference",
    ]


def test_reference_type_element() -> None:
    assert subject("Patient/1", type="Patient") == []
    assert subject("Patient/1", type="http://example.org/StructureDefinition/Logical") == []
    assert expressions(subject("Patient/1", type="Group")) == ["Observation.subject.type"]
    assert expressions(subject("Patient/1", type="Practitioner")) == ["Observation.subject.type"]
    obs = lab_observation()
    obs["subject"] = {"type": "Patinet", "identifier": {"system": "urn:mrn", "value": "1"}}
    assert expressions(check_resource(obs)) == ["Observation.subject.type"]
