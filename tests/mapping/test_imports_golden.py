"""Golden CSV imports: tests/golden/imports/<spec>/input.csv + context.json -> expected.json (the transaction).

Every spec has a folder; informational issues (a scale total not computed) are in expected_issues.json. The
expected bundles were written by the mapping once, then read against the FHIR R4 spec and mappings/README.md;
here they are compared whole, and every resource is validated (R4B model and the core's conformance checks).
TRIALBRIDGE_UPDATE_GOLDEN=1 rewrites them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.fhir.validation import validate_resource
from app.mapping import study_time
from app.mapping.imports import EnrolledSubject, map_csv
from app.mapping.sources import SourceRegistry, load_sources
from app.mapping.study_spec import StudyRegistry, StudySpec, load_studies
from app.store.repository import StoredResource

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "imports"
UPDATE = os.environ.get("TRIALBRIDGE_UPDATE_GOLDEN") == "1"


class GoldenLookup:
    """The store's answers, as context.json gives them."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.subjects = {(s["study"], s["subject"]): s for s in context["subjects"]}
        self.stored = context.get("stored", [])

    def subject(self, study: StudySpec, number: str) -> EnrolledSubject | None:
        found = self.subjects.get((study.id, number))
        if found is None:
            return None
        return EnrolledSubject(found["patient"], found["arm"], found["first_dose"])

    def timed_resources(self, study: StudySpec, patient_id: str) -> list[StoredResource]:
        return [
            StoredResource(
                r["resourceType"], r["id"], int(r["meta"]["versionId"]), datetime(2020, 7, 20, tzinfo=UTC), r
            )
            for r in self.stored
            if r["subject"]["reference"] == f"Patient/{patient_id}" and study_time.study_of(r) == study.id
        ]


@pytest.fixture(scope="module")
def studies() -> StudyRegistry:
    return load_studies(ROOT / "mappings" / "studies")


@pytest.fixture(scope="module")
def sources() -> SourceRegistry:
    return load_sources(ROOT / "mappings" / "sources")


def test_every_spec_has_a_golden_import(sources: SourceRegistry) -> None:
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == sources.kinds()


@pytest.mark.parametrize("kind", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_golden_import(kind: str, studies: StudyRegistry, sources: SourceRegistry) -> None:
    folder = GOLDEN / kind
    spec = sources.get(kind)
    assert spec is not None
    context = json.loads((folder / "context.json").read_text())
    result = map_csv((folder / "input.csv").read_bytes(), spec, studies, GoldenLookup(context))
    assert [e.to_issue().to_fhir() for e in result.errors] == []
    produced = result.bundle()
    issues = [n.to_issue().to_fhir() for n in result.notes]
    expected_file, issues_file = folder / "expected.json", folder / "expected_issues.json"
    if UPDATE:
        expected_file.write_text(json.dumps(produced, indent=2, ensure_ascii=False) + "\n")
        if issues:
            issues_file.write_text(json.dumps(issues, indent=2, ensure_ascii=False) + "\n")
        else:
            issues_file.unlink(missing_ok=True)
    assert produced == json.loads(expected_file.read_text())
    assert issues == (json.loads(issues_file.read_text()) if issues_file.exists() else [])
    for entry in produced["entry"]:
        validate_resource(entry["resource"], entry["resource"]["resourceType"])  # raises FhirError when invalid
        assert entry["request"]["url"] == f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
