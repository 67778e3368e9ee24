"""The set-based evaluator (one SQL statement over the index tables) agrees with the reference evaluator,
outcome for outcome, on SQLite and PostgreSQL: on the hospital population against the three studies, and
on generated populations against generated criteria (hypothesis)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.eligibility.criteria import Criterion, Eligibility
from app.eligibility.dates import whole_years
from app.eligibility.reference import evaluate_patient, group_by_patient
from app.eligibility.sql import age_cutoff, compile_screening, screen
from app.fhir import bundle as bundles
from app.mapping.study_spec import load_studies
from app.store.repository import Store
from app.synthetic.generator import HOSPITAL_BUNDLE

ROOT = Path(__file__).resolve().parents[2]
D = date(2026, 11, 1)
STUDY = "ResearchStudy/depil-2"
BASE_URL = "http://testserver/fhir"

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
MEASURE = "https://trialbridge.dev/fhir/CodeSystem/measure"
LOCAL_LAB = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def load(store: Store, resources: list[dict[str, Any]]) -> None:
    """Through the FHIR transaction path (validation, indexing), as PUTs with the resources' ids."""
    entries = [
        {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
        for resource in resources
    ]
    bundles.process(
        store, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, bundles.BundleOptions(BASE_URL)
    )


def reference_outcomes(
    criteria: list[Criterion], resources: list[dict[str, Any]], as_of: date, study: str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Patient id -> (status, {criterion id: outcome}) from the reference evaluator."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for patient_id, own in group_by_patient(resources).items():
        if not any(r["resourceType"] == "Patient" for r in own):
            continue
        result = evaluate_patient(criteria, own, as_of, study)
        found[patient_id] = (result.status, {c.id: c.outcome for c in result.criteria})
    return found


def sql_outcomes(screening: Any) -> dict[str, tuple[str, dict[str, str]]]:
    return {row.patient_id: (row.status, row.outcomes) for row in screening.rows}


def disagreements(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    lines = []
    for patient_id in sorted(set(expected) | set(found)):
        want, got = expected.get(patient_id), found.get(patient_id)
        if want != got:
            if want is None or got is None:
                lines.append(f"{patient_id}: reference {want}, SQL {got}")
                continue
            criteria = {k: (want[1][k], got[1].get(k)) for k in want[1] if want[1][k] != got[1].get(k)}
            lines.append(f"{patient_id}: reference {want[0]}, SQL {got[0]}; reference/SQL per criterion {criteria}")
    return lines


# ------------------------------------------------------------------------------------------ search parameters


def test_custom_search_parameters_index_what_eligibility_reads(client: TestClient) -> None:
    def put(resource: dict[str, Any]) -> None:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text

    def found(path: str, **params: str) -> set[str]:
        response = client.get(f"/fhir/{path}", params=params)
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}

    put({"resourceType": "Patient", "id": "p"})
    for rid, code, high in (("tpo-pos", "POS", 34), ("tpo-neg", "NEG", 34000), ("tpo-none", None, None)):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8099-4"}]},
            "subject": {"reference": "Patient/p"},
            "valueQuantity": {"value": 35, "unit": "IU/mL", "system": UCUM, "code": "[IU]/mL"},
        }
        if code is not None:
            observation["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code}]}]
        if high is not None:
            unit = "[IU]/mL" if high < 100 else "[IU]/L"
            observation["referenceRange"] = [{"high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}]
        put(observation)
    put(
        {
            "resourceType": "MedicationRequest",
            "id": "mr",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "N06AB06"}]},
            "subject": {"reference": "Patient/p"},
            "dispenseRequest": {"validityPeriod": {"start": "2026-09-01", "end": "2026-12-01"}},
        }
    )
    assert found("Observation", interpretation="POS") == {"tpo-pos"}
    assert found("Observation", interpretation=f"{INTERPRETATION}|NEG") == {"tpo-neg"}
    # 34 [IU]/mL and 34000 [IU]/L are the same canonical quantity
    assert found("Observation", **{"reference-high": f"34|{UCUM}|[IU]/mL"}) == {"tpo-pos", "tpo-neg"}
    assert found("MedicationRequest", validity="2026-10-15") == set()  # eq: the period must lie within the day
    assert found("MedicationRequest", validity="ap2026-10-15") == {"mr"}
    assert found("MedicationRequest", validity="lt2026-09-02") == {"mr"}
    assert found("MedicationRequest", validity="gt2026-12-02") == set()
    published = client.get("/fhir/SearchParameter/interpretation")
    assert published.status_code == 200 and published.json()["expression"] == "Observation.interpretation"


# ------------------------------------------------------------------------------------------ ages


@pytest.mark.parametrize("as_of", [date(2026, 11, 1), date(2028, 2, 29), date(2027, 2, 28), date(2027, 3, 1)])
@pytest.mark.parametrize("years", [0, 1, 18, 65, 66, 76])
def test_age_cutoff_is_the_latest_birth_date_of_that_age(as_of: date, years: int) -> None:
    cutoff = age_cutoff(as_of, years)
    assert cutoff is not None
    assert whole_years(cutoff, as_of) >= years
    assert whole_years(cutoff + timedelta(days=1), as_of) < years
    assert age_cutoff(as_of, as_of.year) is None


# ------------------------------------------------------------------------------------------ the hospital population


@pytest.fixture
def hospital(store: Store) -> list[dict[str, Any]]:
    bundle = json.loads((ROOT / "fixtures" / HOSPITAL_BUNDLE).read_text(encoding="utf-8"))
    bundles.process(store, copy.deepcopy(bundle), bundles.BundleOptions(BASE_URL))
    return [entry["resource"] for entry in bundle["entry"]]


def test_hospital_population_agrees_with_the_reference_evaluator(store: Store, hospital: list[dict[str, Any]]) -> None:
    studies = load_studies(ROOT / "mappings" / "studies")
    for spec in studies:
        reference = f"ResearchStudy/{spec.id}"
        criteria = list(spec.eligibility.criteria)
        expected = reference_outcomes(criteria, hospital, D, reference)
        screening = screen(store.engine, spec.eligibility, D, reference)
        assert len(expected) == 150
        assert not disagreements(expected, sql_outcomes(screening)), "\n".join(
            disagreements(expected, sql_outcomes(screening))
        )
        counts = {status: sum(1 for s, _ in expected.values() if s == status) for status in screening.counts}
        assert screening.counts == counts
        assert counts["eligible"] > 0 and counts["ineligible"] > 0 and counts["incomplete"] > 0  # the fixture's design


def test_pages_statuses_and_patient_lists(store: Store, hospital: list[dict[str, Any]]) -> None:
    spec = load_studies(ROOT / "mappings" / "studies").find("depil-2")
    assert spec is not None
    everyone = screen(store.engine, spec.eligibility, D, STUDY)
    ids = [row.patient_id for row in everyone.rows]
    assert ids == sorted(ids) and len(ids) == 150
    # keyset pages: neither repeat nor skip, counts over the whole population on every page
    pages, after = [], None
    while True:
        page = screen(store.engine, spec.eligibility, D, STUDY, after=after, limit=40)
        assert page.counts == everyone.counts
        pages += [row.patient_id for row in page.rows]
        after = page.next_after(40)
        if after is None:
            break
    assert pages == ids
    ineligible = screen(store.engine, spec.eligibility, D, STUDY, status="ineligible", limit=5)
    assert [row.patient_id for row in ineligible.rows] == [
        r.patient_id for r in everyone.rows if r.status == "ineligible"
    ][:5]
    assert ineligible.counts == everyone.counts
    # a list of patients: counts over those only, the same outcomes as in the whole population
    chosen = [*ids[3:9], "no-such-patient"]
    some = screen(store.engine, spec.eligibility, D, STUDY, patient_ids=chosen)
    assert [row for row in some.rows] == everyone.rows[3:9]
    assert some.total == 6
    assert screen(store.engine, spec.eligibility, D, STUDY, patient_ids=[]).total == 0
    # manual criteria are listed as such; an empty page still carries the counts
    assert everyone.rows[0].outcomes["thyroid-function"] == "manual"
    empty = screen(store.engine, spec.eligibility, D, STUDY, after=ids[-1])
    assert empty.rows == [] and empty.counts == everyone.counts
    with pytest.raises(ValueError, match="status"):
        screen(store.engine, spec.eligibility, D, STUDY, status="maybe")


def test_values_are_bound_parameters() -> None:
    criteria = [
        Criterion.model_validate(
            {
                "id": "x",
                "type": "inclusion",
                "text": "x",
                "expression": {"condition": {"codes": ["icd10|C5'0*", "snomed|1';DROP_TABLE_resource;--"]}},
            }
        )
    ]
    for dialect in ("sqlite", "postgresql"):
        text = str(compile_screening(criteria, D, "ResearchStudy/o'brien", dialect).statement)
        assert "DROP_TABLE" not in text and "o'brien" not in text and "C5'0" not in text


def test_sql_logic_is_kleene_logic(store: Store) -> None:
    """all_of / any_of / not / at_least over every combination of three leaves true, false and unknown."""
    truths = (True, False, None)
    order = {False: 0, None: 1, True: 2}
    resources: list[dict[str, Any]] = []
    combos = {}
    for number, values in enumerate(itertools.product(truths, repeat=3)):
        pid = f"k{number:02d}"
        combos[pid] = values
        resources.append({"resourceType": "Patient", "id": pid})
        for index, value in enumerate(values):
            if value is False:
                continue  # no candidate: missing absent, false
            onset = {"onsetDateTime": "2026-10-20"} if value else {}  # undated: unknown in a window
            resources.append(
                {
                    "resourceType": "Condition",
                    "id": f"{pid}-{index}",
                    "code": concept(SNOMED, str(1000 + index)),
                    "subject": {"reference": f"Patient/{pid}"},
                    **onset,
                }
            )
    load(store, resources)
    leaves = [{"condition": {"codes": [f"snomed|{1000 + index}"], "within": {"days": 30}}} for index in range(3)]
    nodes = {
        "all": {"all_of": leaves},
        "any": {"any_of": leaves},
        "not": {"not": leaves[0]},
        **{f"least{n}": {"at_least": {"n": n, "of": leaves}} for n in range(1, 5)},
    }
    listed = [
        Criterion.model_validate({"id": k, "type": "inclusion", "text": k, "expression": v}) for k, v in nodes.items()
    ]
    outcome = {True: "pass", False: "fail", None: "unknown"}
    for row in screen(store.engine, listed, D, STUDY).rows:
        values = combos[row.patient_id]
        true, unknown = values.count(True), values.count(None)
        expected = {
            "all": min(values, key=order.__getitem__),
            "any": max(values, key=order.__getitem__),
            "not": None if values[0] is None else not values[0],
            **{f"least{n}": True if true >= n else False if true + unknown < n else None for n in range(1, 5)},
        }
        assert row.outcomes == {k: outcome[v] for k, v in expected.items()}, (values, row.outcomes)


def test_a_study_on_another_server_is_another_study(store: Store) -> None:
    """A ResearchSubject whose study is another server's ResearchStudy/depil-2 (an absolute URL) is taking part in
    another study, for both evaluators (the store indexes the URL, not a local target); the same id on this
    server (relative) is this study."""
    resources: list[dict[str, Any]] = []
    for pid, study in (("elsewhere", "https://other.example/fhir/ResearchStudy/depil-2"), ("here", STUDY)):
        resources += [
            {"resourceType": "Patient", "id": pid},
            {
                "resourceType": "ResearchSubject",
                "id": f"{pid}-subject",
                "status": "on-study",
                "period": {"start": "2026-10-01"},
                "study": {"reference": study},
                "individual": {"reference": f"Patient/{pid}"},
            },
        ]
    load(store, resources)
    listed = [
        Criterion.model_validate(
            {"id": "other", "type": "exclusion", "text": "other study", "expression": {"other_study": {}}}
        )
    ]
    expected = reference_outcomes(listed, resources, D, STUDY)
    assert {pid: outcomes["other"] for pid, (_, outcomes) in expected.items()} == {"elsewhere": "fail", "here": "pass"}
    assert disagreements(expected, sql_outcomes(screen(store.engine, listed, D, STUDY))) == []


def test_icd10_blocks_at_their_edges(store: Store) -> None:
    """`icd10|C00-C97` is a range of the code index in SQL: the first and last categories, their subcodes,
    codes just outside, and codes shorter than a category fall where the reference evaluator puts them."""
    inside = ["C00", "C00.0", "C97", "C97.9", "C97:", "C97~", "C50.9"]
    outside = ["B99.9", "C98", "C98.0", "D00", "C0", "C", "c00", "B"]
    resources: list[dict[str, Any]] = []
    for k, code in enumerate(inside + outside):
        pid = f"block{k}"
        resources += [
            {"resourceType": "Patient", "id": pid},
            {
                "resourceType": "Condition",
                "id": f"{pid}-c",
                "code": {"coding": [{"system": ICD10, "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        ]
    load(store, resources)
    listed = [
        Criterion.model_validate(
            {
                "id": "cancer",
                "type": "exclusion",
                "text": "cancer",
                "expression": {"condition": {"codes": ["icd10|C00-C97"], "missing": "absent"}},
            }
        )
    ]
    expected = reference_outcomes(listed, resources, D, STUDY)
    by_code = {code: expected[f"block{k}"][1]["cancer"] for k, code in enumerate(inside + outside)}
    assert by_code == {**dict.fromkeys(inside, "fail"), **dict.fromkeys(outside, "pass")}
    assert disagreements(expected, sql_outcomes(screen(store.engine, listed, D, STUDY))) == []


# ------------------------------------------------------------------------------------------ generated populations

# Dates around the DEPIL-2 windows (3, 30, 90, 180 days, 5 years) and near midnight in other time zones, so
# that the UTC date differs from the local one.
OFFSETS = [-2, -1, 0, 1, 2, 3, 4, 27, 28, 29, 30, 31, 89, 90, 91, 180, 181, 365, 1826, 1827, 3000]
TIMES = ["", "T10:00:00+02:00", "T23:30:00-05:00", "T00:30:00+14:00", "T12:00:00Z"]


@st.composite
def when(draw: st.DrawFn, partial: bool = True) -> str:
    day = D - timedelta(days=draw(st.sampled_from(OFFSETS)))
    form = draw(st.sampled_from(["day", "day", "time", "month", "year"] if partial else ["day", "time"]))
    if form == "month":
        return day.isoformat()[:7]
    if form == "year":
        return day.isoformat()[:4]
    if form == "time":
        return day.isoformat() + draw(st.sampled_from(TIMES[1:]))
    return day.isoformat()


@st.composite
def period(draw: st.DrawFn) -> dict[str, str]:
    start = D - timedelta(days=draw(st.sampled_from(OFFSETS)))
    found: dict[str, str] = {}
    if draw(st.integers(0, 5)):  # mostly with a start
        found["start"] = start.isoformat() if draw(st.booleans()) else start.isoformat()[:7]
    if draw(st.booleans()):
        end = start + timedelta(days=draw(st.sampled_from([0, 1, 2, 27, 28, 29, 30, 60, 100, 400])))
        found["end"] = end.isoformat()
        if len(found.get("start", "")) == 7 and found["end"][:7] == found["start"]:
            found["start"] = start.isoformat()  # a month start and an end inside it would break per-1
    return found


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


CONDITION_CODES = [
    (SNOMED, "191627008"),
    (ICD10, "F31.32"),
    (ICD10, "F31.1"),
    (ICD10, "C50.9"),
    (ICD10, "C44.3"),
    (ICD10, "D06.9"),
    (SNOMED, "363346000"),
    (ICD10, "O80"),
    (ICD10, "O92.1"),
    (ICD10_CM, "Z39.1"),
    (SNOMED, "77386006"),
    (ICD10, "Z94.0"),
    (ICD10, "E11.9"),
    (ICD10, "c50.9"),
]
# (codes, [(value range, unit)]): around 4.0 10*3/uL, 10 g/dL / 6.2 mmol/L, 17 {score}, 38 Cel
LABS: list[tuple[list[tuple[str, str]], list[tuple[float, float, str]]]] = [
    ([(LOINC, "6690-2")], [(3.9, 4.1, "10*3/uL"), (3900, 4100, "/mm3"), (3.9, 4.1, "10*9/L"), (3, 5, "mg")]),
    ([(LOCAL_LAB, "WBC"), (LOINC, "6690-2")], [(3.9, 4.1, "10*3/uL"), (3900, 4100, "/mm3")]),
    ([(LOINC, "718-7")], [(9.9, 10.1, "g/dL"), (6.1, 6.3, "mmol/L"), (99, 101, "g/L")]),
    ([(MEASURE, "madrs-total")], [(16, 19, "{score}")]),
    ([(LOINC, "8310-5")], [(37.8, 38.2, "Cel"), (100.2, 100.6, "[degF]")]),
]
POSITIVE_CODES = [(LOINC, "8099-4"), (LOINC, "2106-3")]
MEDICATION_REFS = [
    ["atc|N06A*"],
    ["atc|N05AN01", "atc|N06AB06"],
    ["atc|J01*", "atc|M01A*"],
    ["atc|L04*", "atc|H02AB06"],
]
MEDICATION_CODES = ["N06AB06", "N05AN01", "J01CA04", "M01AE01", "L04AX03", "N07XX02", "H02AB06"]


@st.composite
def condition(draw: st.DrawFn, pid: str, rid: str) -> dict[str, Any]:
    system, code = draw(st.sampled_from(CONDITION_CODES))
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "code": concept(system, code),
        "subject": {"reference": f"Patient/{pid}"},
    }
    if draw(st.integers(0, 4)) == 0:
        resource["code"]["coding"].append({"system": SNOMED, "code": "363346000"})
    clinical = draw(st.sampled_from([None, "active", "recurrence", "resolved", "remission"]))
    if clinical is not None:
        resource["clinicalStatus"] = concept(CLINICAL, clinical)
    verification = draw(st.sampled_from([None, "confirmed", "provisional", "refuted", "entered-in-error"]))
    if verification is not None and not (verification == "entered-in-error" and clinical is not None):
        resource["verificationStatus"] = concept(VERIFICATION, verification)  # con-5: no clinicalStatus then
    elif verification == "entered-in-error":
        resource["verificationStatus"] = concept(VERIFICATION, "refuted")
    dated = draw(st.sampled_from(["onset", "onset", "period", "recorded", "both", "none"]))
    if dated in ("onset", "both"):
        resource["onsetDateTime"] = draw(when())
    if dated == "period":
        resource["onsetPeriod"] = draw(period())
    if dated in ("recorded", "both"):
        resource["recordedDate"] = draw(when(partial=False))
    return resource


@st.composite
def observation(draw: st.DrawFn, pid: str, rid: str) -> dict[str, Any]:
    status = draw(st.sampled_from(["final", "final", "amended", "preliminary", "registered", "cancelled"]))
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{pid}"},
    }
    effective = draw(st.sampled_from(["time", "time", "time", "period", "instant", "timing", "none"]))
    if effective == "time":
        resource["effectiveDateTime"] = draw(when())
    elif effective == "period":
        resource["effectivePeriod"] = draw(period())
    elif effective == "instant":
        day = D - timedelta(days=draw(st.sampled_from(OFFSETS)))
        resource["effectiveInstant"] = f"{day.isoformat()}T23:30:00.000-03:00"
    elif effective == "timing":
        resource["effectiveTiming"] = {"event": draw(st.lists(when(partial=False), min_size=1, max_size=2))}
    if draw(st.booleans()):
        codes, units = draw(st.sampled_from(LABS))
        resource["code"] = {"coding": [{"system": s, "code": c} for s, c in codes]}
        if draw(st.integers(0, 5)):
            low, high, unit = draw(st.sampled_from(units))
            value = draw(st.sampled_from([low, (low + high) / 2, high, round(low + (high - low) * 0.37, 3)]))
            resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        return resource
    system, code = draw(st.sampled_from(POSITIVE_CODES))
    resource["code"] = concept(system, code)
    read = draw(st.sampled_from(["interpretation", "coded", "range", "range", "none"]))
    if read == "interpretation":
        resource["interpretation"] = [
            {
                "coding": [
                    {"system": draw(st.sampled_from([INTERPRETATION, None])), "code": c}
                    for c in draw(st.lists(st.sampled_from(["POS", "NEG", "H", "N", "L", "X"]), min_size=1, max_size=2))
                ]
            }
        ]
        for coding in resource["interpretation"][0]["coding"]:
            if coding["system"] is None:
                del coding["system"]
    if read == "coded":
        resource["valueCodeableConcept"] = concept(SNOMED, draw(st.sampled_from(["10828004", "260385009", "1234"])))
    else:
        value = draw(st.sampled_from([30, 34, 35, 34000]))
        unit = draw(st.sampled_from(["[IU]/mL", "[IU]/L"]))
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        if read == "range":
            highs = draw(
                st.lists(
                    st.sampled_from([(34, "[IU]/mL"), (34000, "[IU]/L"), (20, None), (30, "mg")]),
                    min_size=1,
                    max_size=2,
                )
            )
            resource["referenceRange"] = [
                {"high": {"value": v, **({"unit": u, "system": UCUM, "code": u} if u else {})}} for v, u in highs
            ]
    return resource


@st.composite
def medication(draw: st.DrawFn, pid: str, rid: str) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["MedicationStatement", "MedicationStatement", "MedicationRequest", "MedicationAdministration"])
    )
    resource: dict[str, Any] = {
        "resourceType": kind,
        "id": rid,
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": concept(ATC, draw(st.sampled_from(MEDICATION_CODES))),
    }
    if kind == "MedicationStatement":
        resource["status"] = draw(
            st.sampled_from(["active", "completed", "stopped", "not-taken", "intended", "on-hold"])
        )
        choice = draw(st.sampled_from(["period", "period", "time", "none"]))
        if choice == "period":
            resource["effectivePeriod"] = draw(period())
        elif choice == "time":
            resource["effectiveDateTime"] = draw(when())
    elif kind == "MedicationRequest":
        resource["status"] = draw(st.sampled_from(["active", "completed", "cancelled", "stopped"]))
        resource["intent"] = "order"
        if draw(st.booleans()):
            resource["authoredOn"] = draw(when(partial=False))
        if draw(st.booleans()):
            resource["dispenseRequest"] = {"validityPeriod": draw(period())}
    else:
        resource["status"] = draw(st.sampled_from(["completed", "in-progress", "stopped", "not-done"]))
        if draw(st.booleans()):
            resource["effectiveDateTime"] = draw(when())
        else:
            resource["effectivePeriod"] = draw(period())
    return resource


SUBJECT_STATUSES = ["on-study", "off-study", "follow-up", "withdrawn", "screening", "pending-on-study"]


@st.composite
def research_subject(draw: st.DrawFn, pid: str, rid: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ResearchSubject",
        "id": rid,
        "status": draw(st.sampled_from(SUBJECT_STATUSES)),
        "study": {
            "reference": draw(st.sampled_from(["ResearchStudy/other", STUDY, f"{BASE_URL}/ResearchStudy/other"]))
        },
        "individual": {"reference": f"Patient/{pid}"},
    }
    if draw(st.booleans()):
        resource["period"] = draw(period())
    return resource


@st.composite
def population(draw: st.DrawFn, tag: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for p in range(draw(st.integers(1, 4))):
        pid = f"{tag}-p{p}"
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid}
        born = draw(
            st.sampled_from(
                [
                    date(2008, 11, 1),
                    date(2008, 11, 2),
                    date(1960, 11, 1),
                    date(1960, 11, 2),
                    date(1961, 5, 17),
                    date(2000, 2, 29),
                    date(1990, 1, 1),
                ]
            )
        )
        birth = draw(
            st.sampled_from([born.isoformat(), born.isoformat(), born.isoformat()[:7], born.isoformat()[:4], None])
        )
        if birth is not None:
            patient["birthDate"] = birth
        gender = draw(st.sampled_from(["female", "male", "other", None]))
        if gender is not None:
            patient["gender"] = gender
        resources.append(patient)
        kinds = draw(
            st.lists(st.sampled_from(["condition", "observation", "observation", "medication", "subject"]), max_size=8)
        )
        for k, kind in enumerate(kinds):
            build = {
                "condition": condition,
                "observation": observation,
                "medication": medication,
                "subject": research_subject,
            }[kind]
            resources.append(draw(build(pid, f"{pid}-{k}")))
    return resources


WINDOWS = [{"days": 3}, {"days": 30}, {"days": 90}, {"months": 1}, {"months": 6}, {"years": 5}]
CONDITION_REFS = [
    "snomed|191627008",
    "icd10|F31.3*",
    "icd10|C00-C97",
    "snomed|363346000",
    "icd10|Z94*",
    "icd10|E11*",
    "icd10|O*",
    "icd10cm|Z39.1",
]


def _unwrap_when(node: dict[str, Any]) -> dict[str, Any]:
    """A medication node's drawn `when` ({within: ...} or {ever: true}) merged into it."""
    when: dict[str, Any] = node.get("when", {})
    return {**{k: v for k, v in node.items() if k != "when"}, **when}


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    window = st.sampled_from(WINDOWS)
    missing = st.sampled_from(["absent", "unknown"])
    ages = [
        {"min": 18, "max": 65},
        {"min": 18, "below": 76},
        {"below": 18},
        {"min": 66},
        {"max": 65},
        {"min": 66, "max": 17},
    ]
    age = st.sampled_from(ages)
    condition_node = st.fixed_dictionaries(
        {"codes": st.lists(st.sampled_from(CONDITION_REFS), min_size=1, max_size=3, unique=True)},
        optional={
            "within": window,
            "exceptions": st.just(["icd10|C44*", "snomed|363346000"]),
            "active_only": st.booleans(),
            "missing": missing,
        },
    )
    threshold = st.sampled_from(
        [
            {"codes": ["loinc|6690-2"], "comparator": "<", "value": 4.0, "unit": "10*3/uL"},
            {"codes": ["local-lab|WBC"], "comparator": ">=", "value": 4000, "unit": "/mm3"},
            {
                "codes": ["loinc|718-7"],
                "comparator": "<",
                "value": 10.0,
                "unit": "g/dL",
                "alternatives": [{"value": 6.2, "unit": "mmol/L"}],
            },
            {"codes": ["measure|madrs-total"], "comparator": ">", "value": 17, "unit": "{score}"},
            {"codes": ["loinc|8310-5"], "comparator": ">=", "value": 38, "unit": "Cel"},
            {"codes": ["loinc|8310-5", "loinc|6690-2"], "comparator": "=", "value": 38, "unit": "Cel"},
        ]
    )
    positive = st.fixed_dictionaries(
        {"codes": st.sampled_from([["loinc|8099-4"], ["loinc|2106-3", "loinc|8099-4"]]), "positive": st.booleans()}
    )
    observation_node = st.tuples(
        st.one_of(threshold, positive),
        st.fixed_dictionaries(
            {}, optional={"lookback": window, "which": st.sampled_from(["latest", "any", "all"]), "missing": missing}
        ),
    ).map(lambda pair: {**pair[0], **pair[1]})
    medication_node = st.fixed_dictionaries(
        {"codes": st.sampled_from(MEDICATION_REFS)},
        optional={
            "when": st.sampled_from([{"within": {"days": 30}}, {"within": {"months": 1}}, {"ever": True}]),
            "min_duration": st.sampled_from([{"days": 28}, {"months": 1}, {"months": 3}, {"years": 1}]),
            "missing": missing,
        },
    ).map(_unwrap_when)
    return st.one_of(
        age.map(lambda node: {"age": node}),
        st.lists(st.sampled_from(["male", "female", "other"]), min_size=1, max_size=2, unique=True).map(
            lambda genders: {"sex": {"administrative": genders}}
        ),
        condition_node.map(lambda node: {"condition": node}),
        observation_node.map(lambda node: {"observation": node}),
        medication_node.map(lambda node: {"medication": node}),
        st.fixed_dictionaries({"within": window, "include_lactation": st.booleans()}).map(
            lambda node: {"pregnancy": node}
        ),
        window.map(lambda w: {"other_study": {"within": w}}),
    )


expressions = st.recursive(
    leaf(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda nodes: {"all_of": nodes}),
        st.lists(children, min_size=1, max_size=3).map(lambda nodes: {"any_of": nodes}),
        children.map(lambda node: {"not": node}),
        st.tuples(st.integers(1, 3), st.lists(children, min_size=1, max_size=3)).map(
            lambda pair: {"at_least": {"n": pair[0], "of": pair[1]}}
        ),
    ),
    max_leaves=6,
)


@st.composite
def criteria(draw: st.DrawFn) -> list[Criterion]:
    listed = [
        Criterion.model_validate(
            {
                "id": f"c{k}",
                "type": draw(st.sampled_from(["inclusion", "exclusion"])),
                "text": "generated",
                "expression": draw(expressions),
            }
        )
        for k in range(draw(st.integers(1, 4)))
    ]
    if draw(st.booleans()):
        listed.append(Criterion(id="judged", type="exclusion", text="manual", manual=True, reason="judgement"))
    return listed


_examples = iter(range(10**9))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_generated_populations_agree_with_the_reference_evaluator(store: Store, data: st.DataObject) -> None:
    tag = f"g{next(_examples)}"  # every example writes its own patients into the one store
    resources = data.draw(population(tag))
    listed = data.draw(criteria())
    Eligibility(criteria=listed)  # the generated criteria are a valid criteria list
    load(store, resources)
    patient_ids = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    screening = screen(store.engine, listed, D, STUDY, patient_ids=patient_ids)
    expected = reference_outcomes(listed, resources, D, STUDY)
    problems = disagreements(expected, sql_outcomes(screening))
    assert not problems, "\n".join(problems) + "\n" + json.dumps(resources, indent=1)
