"""MSC-SLE (refractory lupus, umbilical-cord MSC): 8 subjects, open-label dose escalation, one IV infusion.

Schedule (mappings/studies/msc-sle.yaml): screening (day -28 to -1), infusion at day 0 (the first dose is
day 0 here), tolerance window to day 10, SELENA-SLEDAI at screening, D0, M1, M3, M6 and M12. The first three
patients receive 2 x 10^6 cells/kg, the next five 4 x 10^6 cells/kg. Three mild-moderate infusion events.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from app.synthetic.common import Row, StudyData, Subject, clamp, fixed, local_datetime, site_patient_ids
from app.synthetic.contract import SELENA_WEIGHTS

STUDY = "msc-sle"
SITE = "APHP-SLS"
ARMS = ("msc-2",) * 3 + ("msc-4",) * 5
DOSES = {"msc-2": ("uc-msc-2", "2"), "msc-4": ("uc-msc-4", "4")}
SLEDAI_VISITS = {"d0": 0, "m1": 30, "m3": 90, "m6": 180, "m12": 365}
LAB_VISITS = {"m3": 90, "m6": 180, "m12": 365}
SLEDAI_AT_LIMIT = "MSC-02"

# How often each descriptor is active in refractory lupus at inclusion (those not listed: never).
SLEDAI_PREVALENCE = {
    "vasculitis": 0.05,
    "arthritis": 0.6,
    "myositis": 0.03,
    "urinary_casts": 0.1,
    "hematuria": 0.15,
    "proteinuria": 0.4,
    "pyuria": 0.1,
    "new_rash": 0.5,
    "alopecia": 0.3,
    "mucosal_ulcers": 0.3,
    "pleurisy": 0.15,
    "pericarditis": 0.05,
    "low_complement": 0.7,
    "increased_dna_binding": 0.7,
    "fever": 0.1,
    "thrombocytopenia": 0.1,
    "leukopenia": 0.2,
}
SEROLOGY = ("low_complement", "increased_dna_binding")
# Probability that an active clinical descriptor has resolved, per visit after the infusion.
RESOLVED = {"m1": 0.15, "m3": 0.3, "m6": 0.35, "m12": 0.3}

# The three infusion-related events: (subject, MedDRA PT code, term, grade, days to resolution, relatedness)
INFUSION_EVENTS = (
    ("MSC-01", "10051792", "Infusion related reaction", 1, 0, "probable"),
    ("MSC-04", "10037660", "Pyrexia", 1, 1, "possible"),
    ("MSC-06", "10019211", "Headache", 2, 1, "possible"),
)


def generate(rng: random.Random) -> StudyData:
    notes: list[tuple[str, str]] = []
    subjects = enrolment(rng)
    files = {
        "enrolment.csv": [s.row(STUDY) for s in subjects],
        "dosing.csv": dosing(subjects),
        "labs.csv": labs(rng, subjects),
        "selena_sledai.csv": selena_sledai(rng, subjects, notes),
        "adverse_events.csv": adverse_events(subjects),
    }
    notes.append(("MSC-01..08", "not randomised: arm set, randomisation_date empty (sequential dose escalation)"))
    return StudyData(STUDY, files, notes)


def enrolment(rng: random.Random) -> list[Subject]:
    patient_ids = site_patient_ids(rng, len(ARMS))
    man = rng.randrange(len(ARMS))
    infusion = date(2019, 4, 8)
    subjects = []
    for index, arm in enumerate(ARMS):
        if index:
            infusion += timedelta(days=rng.randint(35, 90))
        consent = infusion - timedelta(days=rng.randint(10, 25))
        age = rng.randint(20, 58)
        subject = Subject(
            subject=f"MSC-{index + 1:02d}",
            site=SITE,
            site_patient_id=patient_ids[index],
            sex="M" if index == man else "F",
            birth_date=date(consent.year - age, 1, 1) + timedelta(days=rng.randint(0, 364)),
            consent_date=consent,
            arm=arm,
            status="off-study",
            end_reason="completed",
            first_dose=infusion,
            last_day=365,
        )
        subject.end_date = subject.day(365, first_dose_day=0)
        subjects.append(subject)
    return subjects


def dosing(subjects: list[Subject]) -> list[Row]:
    """One intravenous infusion at day 0."""
    rows: list[Row] = []
    for subject in subjects:
        assert subject.first_dose is not None
        intervention, dose = DOSES[subject.arm]
        rows.append(
            {
                "study": STUDY,
                "subject": subject.subject,
                "administered_at": local_datetime(subject.first_dose, 10, 30),
                "intervention": intervention,
                "dose": dose,
                "dose_unit": "10*6/kg",
                "route": "IV",
            }
        )
    return rows


def _lab(subject: Subject, when: str, test: str, value: str, unit: str, low: str, high: str) -> Row:
    interpretation = "L" if float(value) < float(low) else "H" if float(value) > float(high) else "N"
    return {
        "study": STUDY,
        "subject": subject.subject,
        "collected_at": when,
        "test": test,
        "value": value,
        "unit": unit,
        "ref_low": low,
        "ref_high": high,
        "interpretation": interpretation,
    }


def labs(rng: random.Random, subjects: list[Subject]) -> list[Row]:
    """ANA at screening; blood counts (G/L, g/dL) at screening, M3, M6 and M12."""
    rows: list[Row] = []
    for subject in subjects:
        screening = local_datetime(subject.consent_date, 8, 45)
        rows.append(
            {
                "study": STUDY,
                "subject": subject.subject,
                "collected_at": screening,
                "test": "ANA",
                "value": "POS",
                "interpretation": "POS",
            }
        )
        wbc = clamp(rng.gauss(4.6, 1.2), 2.6, 8.0)  # lupus: often leukopenic
        plt = clamp(rng.gauss(210, 60), 90, 380)
        hgb = clamp(rng.gauss(11.8, 1.0), 9.0, 14.5)
        visits = [("screening", subject.consent_date)] + [
            (visit, subject.day(day, first_dose_day=0)) for visit, day in LAB_VISITS.items()
        ]
        for number, (_, day) in enumerate(visits):
            when = screening if number == 0 else local_datetime(day, 8, 45)
            improvement = 1 + 0.03 * number
            rows.append(
                _lab(subject, when, "WBC", fixed(wbc * improvement * rng.gauss(1, 0.05), 1), "G/L", "4.0", "10.0")
            )
            rows.append(_lab(subject, when, "PLT", str(round(plt * rng.gauss(1, 0.05))), "G/L", "150", "400"))
            rows.append(_lab(subject, when, "HGB", fixed(hgb * rng.gauss(1, 0.02), 1), "g/dL", "12.0", "16.0"))
    return rows


def sledai_total(descriptors: set[str]) -> int:
    return sum(SELENA_WEIGHTS[name] for name in descriptors)


def _baseline_descriptors(rng: random.Random) -> set[str]:
    while True:
        active = {name for name, p in SLEDAI_PREVALENCE.items() if rng.random() < p}
        if 8 <= sledai_total(active) <= 24:
            return active


def _sledai_row(subject: Subject, assessed: date, visit: str, active: set[str]) -> Row:
    row: Row = {"study": STUDY, "subject": subject.subject, "assessed_at": assessed.isoformat(), "visit": visit}
    row.update({name: int(name in active) for name in SELENA_WEIGHTS})
    return row


def selena_sledai(rng: random.Random, subjects: list[Subject], notes: list[tuple[str, str]]) -> list[Row]:
    """SELENA-SLEDAI descriptors (0/1) at screening (total >= 6), D0, M1, M3, M6 and M12."""
    rows: list[Row] = []
    for subject in subjects:
        at_limit = subject.subject == SLEDAI_AT_LIMIT
        active = {"arthritis", "low_complement"} if at_limit else _baseline_descriptors(rng)
        rows.append(_sledai_row(subject, subject.consent_date, "screening", active))
        rows.append(_sledai_row(subject, subject.day(0, first_dose_day=0), "d0", active))
        for visit, day in list(SLEDAI_VISITS.items())[1:]:
            resolved = {
                name
                for name in SELENA_WEIGHTS  # a fixed order: iterating the set would follow string hashing
                if name in active and rng.random() < (RESOLVED[visit] / 3 if name in SEROLOGY else RESOLVED[visit])
            }
            active = active - resolved
            if rng.random() < 0.08:  # a flare of a new descriptor
                active = active | {rng.choice(("arthritis", "new_rash", "alopecia", "proteinuria"))}
            rows.append(_sledai_row(subject, subject.day(day, first_dose_day=0), visit, active))
    notes.append((SLEDAI_AT_LIMIT, "SELENA-SLEDAI exactly 6 at screening and D0 (arthritis 4 + low complement 2)"))
    return rows


def adverse_events(subjects: list[Subject]) -> list[Row]:
    """The three mild-moderate infusion events, on the day of the infusion."""
    by_id = {subject.subject: subject for subject in subjects}
    rows: list[Row] = []
    for subject_id, code, term, grade, duration, relatedness in INFUSION_EVENTS:
        infusion = by_id[subject_id].first_dose
        assert infusion is not None
        rows.append(
            {
                "study": STUDY,
                "subject": subject_id,
                "ae_number": 1,
                "meddra_pt_code": code,
                "meddra_pt_term": term,
                "onset_date": infusion.isoformat(),
                "resolution_date": (infusion + timedelta(days=duration)).isoformat(),
                "ctcae_grade": grade,
                "serious": "N",
                "relatedness": relatedness,
                "outcome": "recovered",
            }
        )
    return rows
