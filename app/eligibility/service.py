"""Eligibility as a service: screen the stored population (set-based SQL), explain a page of it (the
reference evaluator over each patient's compartment), evaluate a Bundle without storing it, and record a
screening as ResearchSubjects with a Provenance. No web framework here; the routes are in app/api/studies.py.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from app.eligibility.reference import evaluate_patient, group_by_patient
from app.eligibility.sql import screen
from app.fhir import bundle as bundles
from app.fhir.definitions import resource_types
from app.fhir.errors import FhirError, Issue, bad_request, not_found
from app.fhir.validation import model_issues, semantic_issues
from app.mapping.study_fhir import eligibility_id
from app.mapping.study_spec import StudyRegistry, StudySpec
from app.store.repository import Store
from app.store.search import parse_search

log = logging.getLogger("trialbridge.eligibility")

STATUSES = ("eligible", "ineligible", "incomplete")
# ResearchSubject status a screening writes (R4 research-subject-status): incomplete means "candidate".
SUBJECT_STATUS = {"eligible": "eligible", "ineligible": "ineligible", "incomplete": "candidate"}
SCREENING_TAG = {"system": "https://trialbridge.dev/fhir/CodeSystem/tag", "code": "eligibility-screening"}
WRITE_CHUNK = 1_000


@dataclass(frozen=True)
class EligibilityQuery:
    as_of: date
    status: str | None = None
    patient: str | None = None  # a Patient id
    after: str | None = None  # keyset: the last patient id of the previous page
    limit: int = 50


class EligibilityService:
    def __init__(self, store: Store, studies: StudyRegistry, *, parallel: int | None = None) -> None:
        self.store = store
        self.studies = studies
        self.parallel = parallel  # connections a whole-population screening's shards run on (None: one per core)

    def normalize(self, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        """What the store would do to the resource on write (alias codings added): a posted Bundle is read
        the way stored data is."""
        return self.store.normalize(resource_type, resource) if self.store.normalize else resource

    def study(self, key: str) -> StudySpec:
        spec = self.studies.find(key)
        if spec is None:
            known = ", ".join(f"{s.id} ({s.identifiers.nct})" for s in self.studies)
            raise not_found(f"No study {key!r}: name it by its id or NCT number ({known}).")
        return spec

    # ------------------------------------------------------------------------------------------- queries

    def evaluate(self, key: str, query: EligibilityQuery) -> dict[str, Any]:
        """Counts over the whole population and one explained page of patients."""
        spec = self.study(key)
        reference = f"ResearchStudy/{spec.id}"
        if query.status is not None and query.status not in STATUSES:
            raise bad_request(f"status must be one of {', '.join(STATUSES)}, not {query.status!r}.", "status")
        patient_ids = [query.patient] if query.patient else None
        if query.patient:
            self.store.read("Patient", query.patient)  # 404 for an unknown patient, as a FHIR read would
        screening = screen(
            self.store.engine,
            spec.eligibility,
            query.as_of,
            reference,
            patient_ids=patient_ids,
            status=query.status,
            after=query.after,
            limit=query.limit + 1,
            parallel=self.parallel,
        )
        rows = list(screening.rows)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        results = []
        for row in rows:
            resources = [stored.content for stored in self.store.compartment(row.patient_id) if stored.content]
            result = evaluate_patient(spec.eligibility, resources, query.as_of, reference)
            if result.status != row.status:  # the property tests keep these equal; say so loudly if not
                log.error(
                    "eligibility: SQL says %s, reference says %s for %s", row.status, result.status, row.patient_id
                )
            results.append(result.to_json())
        body: dict[str, Any] = {
            "study": reference,
            "nct": spec.identifiers.nct,
            "as_of": query.as_of.isoformat(),
            "counts": dict(screening.counts),
            "results": results,
        }
        if more and rows:
            body["next_after"] = rows[-1].patient_id
        return body

    def evaluate_bundle(self, key: str, bundle: Any, as_of: date) -> dict[str, Any]:
        """One patient's data sent as a Bundle, evaluated without storing anything (trial matching)."""
        spec = self.study(key)
        resources = _bundle_resources(bundle)
        normalized = [self.normalize(r["resourceType"], r) for r in resources]
        by_patient = group_by_patient(normalized)
        patients = [r for r in normalized if r["resourceType"] == "Patient"]
        if len(patients) != 1:
            raise bad_request(
                f"The Bundle must hold exactly one Patient (it holds {len(patients)}): eligibility is evaluated "
                "for one patient and the resources that refer to them.",
                "Bundle.entry",
            )
        patient_id = str(patients[0].get("id") or "")
        if not patient_id:
            raise bad_request(
                "The Patient needs an id, which the other resources refer to.", "Bundle.entry.resource.id"
            )
        result = evaluate_patient(
            spec.eligibility, by_patient.get(patient_id, patients), as_of, f"ResearchStudy/{spec.id}"
        )
        return {
            "study": f"ResearchStudy/{spec.id}",
            "nct": spec.identifiers.nct,
            "as_of": as_of.isoformat(),
            **result.to_json(),
        }

    # -------------------------------------------------------------------------------------------- writes

    def record_screening(self, key: str, as_of: date, base_url: str) -> dict[str, Any]:
        """One R4 ResearchSubject per screened patient (eligible / ineligible / candidate), idempotent: an
        unchanged outcome writes nothing; a Provenance names what this screening created or changed.
        Patients already enrolled in the study (a ResearchSubject not written by screening) are left alone."""
        spec = self.study(key)
        reference = f"ResearchStudy/{spec.id}"
        enrolled, screened = self._subjects(reference)
        screening = screen(self.store.engine, spec.eligibility, as_of, reference, parallel=self.parallel)
        writes: list[dict[str, Any]] = []
        unchanged = 0
        for row in screening.rows:
            if row.patient_id in enrolled:
                continue
            subject_id = screening_subject_id(spec.id, row.patient_id)
            status = SUBJECT_STATUS[row.status]
            if screened.get(subject_id) == status:
                unchanged += 1
                continue
            writes.append(_screening_subject(subject_id, reference, row.patient_id, status))
        created = sum(1 for w in writes if w["id"] not in screened)
        provenance_id = None
        if writes:
            provenance_id = _provenance_id(spec.id, writes, as_of)
            for start in range(0, len(writes), WRITE_CHUNK):
                chunk = writes[start : start + WRITE_CHUNK]
                last = start + WRITE_CHUNK >= len(writes)
                extra = [_provenance(provenance_id, spec, writes, as_of)] if last else []
                transaction = {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                        for r in chunk + extra
                    ],
                }
                bundles.process(self.store, transaction, bundles.BundleOptions(base_url))
        return {
            "study": reference,
            "as_of": as_of.isoformat(),
            "screened": sum(screening.counts.values()),
            "skipped_enrolled": len(enrolled),
            "research_subjects": {"created": created, "updated": len(writes) - created, "unchanged": unchanged},
            "provenance": f"Provenance/{provenance_id}" if provenance_id else None,
        }

    def _subjects(self, reference: str) -> tuple[set[str], dict[str, str]]:
        """Patients enrolled in the study (by ResearchSubjects this service did not write), and the
        screening ResearchSubjects already written (id -> status)."""
        enrolled: set[str] = set()
        screened: dict[str, str] = {}
        request = parse_search("ResearchSubject", [("study", reference)])
        request.count = 1_000
        while True:
            page = self.store.search(request)
            for stored in page.resources:
                content = stored.content or {}
                tags = content.get("meta", {}).get("tag", [])
                if any(t.get("code") == SCREENING_TAG["code"] for t in tags):
                    screened[stored.id] = str(content.get("status"))
                else:
                    individual = str(content.get("individual", {}).get("reference", ""))
                    enrolled.add(individual.removeprefix("Patient/"))
            if not page.next_page:
                return enrolled, screened
            request.page_token = page.next_page


def screening_subject_id(study_id: str, patient_id: str) -> str:
    """Deterministic (re-screening rewrites the same resource) and a valid FHIR id for any patient id."""
    return f"scr-{hashlib.sha256(f'{study_id}|{patient_id}'.encode()).hexdigest()[:32]}"


def _screening_subject(subject_id: str, study: str, patient_id: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "ResearchSubject",
        "id": subject_id,
        "meta": {"tag": [SCREENING_TAG]},
        "status": status,
        "study": {"reference": study},
        "individual": {"reference": f"Patient/{patient_id}"},
    }


def _provenance_id(study_id: str, writes: list[dict[str, Any]], as_of: date) -> str:
    digest = hashlib.sha256(
        "|".join([study_id, as_of.isoformat(), *(f"{w['id']}={w['status']}" for w in writes)]).encode()
    )
    return f"scr-{digest.hexdigest()[:32]}"


def _provenance(provenance_id: str, spec: StudySpec, writes: list[dict[str, Any]], as_of: date) -> dict[str, Any]:
    """https://hl7.org/fhir/R4/provenance.html: what the screening wrote, from which criteria, as of when."""
    return {
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": [{"reference": f"ResearchSubject/{w['id']}"} for w in writes],
        "occurredDateTime": as_of.isoformat(),
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}],
            "text": f"eligibility screening for {spec.acronym} as of {as_of.isoformat()}",
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": "TrialBridge eligibility service"},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": f"EvidenceVariable/{eligibility_id(spec)}"}}],
    }


def _bundle_resources(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("Send a FHIR Bundle holding one patient's resources.", "resourceType", "structure")
    resources = []
    issues: list[Issue] = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        where = f"Bundle.entry[{index}].resource"
        if not isinstance(resource, dict) or resource.get("resourceType") not in resource_types():
            issues.append(Issue("required", f"{where} is missing or is not a FHIR R4 resource.", (where,)))
            continue
        problems = model_issues(resource) or semantic_issues(resource)
        issues += [
            Issue(
                issue.code,
                issue.diagnostics,
                tuple(f"Bundle.entry[{index}].resource.{e.split('.', 1)[-1]}" for e in issue.expression),
            )
            for issue in problems
        ]
        resources.append(resource)
    if issues:
        raise FhirError(422, issues)
    return resources
