"""Invariants over everything the demo publishes: every resource validates, every reference resolves,
every code is in its code system (or passes its system's check digit), every unit is valid UCUM.

Runs on the store after `prepare_store(load_demo=True)`: terminology, the three studies as FHIR, the
hospital population and the synthetic study data imported from fixtures/studies through the import specs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.fhir.ucum import UCUM_SYSTEM, is_valid
from app.fhir.validation import validate_resource
from app.mapping.code_checks import code_ok
from app.store.db import make_engine

# Codes of the HL7 code systems the fixtures use, copied from the official R4 (4.0.1) CodeSystems
# (hl7.fhir.r4.core / terminology.hl7.org); a code outside them is a mapping bug.
HL7_CODES: dict[str, set[str]] = {
    "http://terminology.hl7.org/CodeSystem/observation-category": {
        "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam", "therapy", "activity",
    },
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation": {
        "N", "H", "L", "HH", "LL", "A", "AA", "POS", "NEG", "IND", "DET", "ND", "HU", "LU", "<", ">",
    },
    "http://terminology.hl7.org/CodeSystem/research-study-phase": {
        "n-a", "early-phase-1", "phase-1", "phase-1-phase-2", "phase-2", "phase-2-phase-3", "phase-3", "phase-4",
    },
    "http://terminology.hl7.org/CodeSystem/research-study-prim-purp-type": {
        "treatment", "prevention", "diagnostic", "supportive-care", "screening", "health-services-research",
        "basic-science", "device-feasibility",
    },
    "http://terminology.hl7.org/CodeSystem/research-study-objective-type": {"primary", "secondary", "exploratory"},
    "http://terminology.hl7.org/CodeSystem/research-study-arm-type": {
        "active-comparator", "placebo-comparator", "sham-comparator", "no-intervention", "experimental",
        "other-arm-type",
    },
    "http://terminology.hl7.org/CodeSystem/plan-definition-type": {
        "order-set", "clinical-protocol", "eca-rule", "workflow-definition",
    },
    "http://terminology.hl7.org/CodeSystem/condition-clinical": {
        "active", "recurrence", "relapse", "inactive", "remission", "resolved",
    },
    "http://terminology.hl7.org/CodeSystem/condition-ver-status": {
        "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error",
    },
    "http://terminology.hl7.org/CodeSystem/condition-category": {"problem-list-item", "encounter-diagnosis"},
    "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness": {
        "Non-serious", "Serious", "SID", "SIH", "SIP", "SIRCI", "SIC", "SIME",
    },
    "http://terminology.hl7.org/CodeSystem/adverse-event-severity": {"mild", "moderate", "severe"},
    "http://terminology.hl7.org/CodeSystem/adverse-event-outcome": {
        "resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown",
    },
    "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess": {
        "Certain", "Probably-Likely", "Possible", "Unlikely", "Conditional-Classified", "Unassessable-Unclassifiable",
    },
    "http://terminology.hl7.org/CodeSystem/data-absent-reason": {
        "unknown", "asked-unknown", "temp-unknown", "not-asked", "asked-declined", "masked", "not-applicable",
        "unsupported", "as-text", "error", "not-a-number", "negative-infinity", "positive-infinity", "not-performed",
        "not-permitted",
    },
    "http://terminology.hl7.org/CodeSystem/v2-0203": {"MR", "PI", "RI", "PN", "SN"},
    "http://hl7.org/fhir/administrative-gender": {"male", "female", "other", "unknown"},
    "http://hl7.org/fhir/research-study-status": set(),  # R5 only: never in stored R4
    "http://terminology.hl7.org/CodeSystem/medication-statement-category": {
        "inpatient", "outpatient", "community", "patientspecified",
    },
}  # fmt: skip
EXTERNAL_TEXT_ONLY = {"urn:ietf:bcp:47"}  # language tags: not checked here


@pytest.fixture(scope="module")
def published(demo_database_url: str) -> list[dict[str, Any]]:
    """Every current resource after a demo start-up (SQLite: the invariants concern the data, not the engine)."""
    engine = make_engine(demo_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT content FROM resource WHERE deleted = 0")).all()
    engine.dispose()
    return [json.loads(row[0]) if isinstance(row[0], str) else row[0] for row in rows]


def _concepts(concepts: list[dict[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _concepts(concept.get("concept", []))


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key != "contained":
                yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _where(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def test_the_demo_publishes_every_kind_of_resource(published: list[dict[str, Any]]) -> None:
    kinds = Counter(r["resourceType"] for r in published)
    for kind in ("ResearchStudy", "PlanDefinition", "Group", "EvidenceVariable", "CodeSystem", "ConceptMap", "Patient",
                 "Condition", "Observation", "MedicationStatement"):  # fmt: skip
        assert kinds[kind] > 0, kind


def test_every_resource_validates(published: list[dict[str, Any]]) -> None:
    for resource in published:
        validate_resource(resource)


def test_every_reference_resolves(published: list[dict[str, Any]]) -> None:
    present = {_where(r) for r in published}
    dangling = []
    for resource in published:
        contained = {f"#{c['id']}" for c in resource.get("contained", [])}
        for path, node in _walk(resource, resource["resourceType"]):
            reference = node.get("reference")
            if not isinstance(reference, str) or not path.split(".")[-1]:
                continue
            if reference.startswith("#"):
                ok = reference in contained
            else:
                ok = "/".join(reference.split("/")[:2]) in present and "://" not in reference
            if not ok:
                dangling.append(f"{_where(resource)} {path}: {reference}")
    assert dangling == []


def test_every_code_is_in_its_code_system(published: list[dict[str, Any]]) -> None:
    own = {
        r["url"]: set(_concepts(r.get("concept", [])))
        for r in published
        if r["resourceType"] == "CodeSystem" and r.get("content") == "complete"
    }
    problems, unknown_systems = [], Counter()
    for resource in published:
        for path, node in _walk(resource, resource["resourceType"]):
            system, code = node.get("system"), node.get("code")
            if not isinstance(system, str) or not isinstance(code, str) or system == UCUM_SYSTEM:
                continue
            if ("value" in node and "comparator" in node) or path.endswith(("Quantity", "Range.low", "Range.high")):
                continue
            if system in own:
                ok: bool | None = code in own[system]
            elif system in HL7_CODES:
                ok = code in HL7_CODES[system]
            elif system in EXTERNAL_TEXT_ONLY:
                continue
            else:
                ok = code_ok(system, code)
            if ok is None:
                unknown_systems[system] += 1
            elif not ok:
                problems.append(f"{_where(resource)} {path}: {system}|{code}")
    assert problems == []
    assert dict(unknown_systems) == {}, "code systems without a check: add their codes or a check"


def test_every_unit_is_valid_ucum(published: list[dict[str, Any]]) -> None:
    invalid = [
        f"{_where(resource)} {path}: {node['code']!r}"
        for resource in published
        for path, node in _walk(resource, resource["resourceType"])
        if node.get("system") == UCUM_SYSTEM and isinstance(node.get("code"), str) and not is_valid(node["code"])
    ]
    assert invalid == []
