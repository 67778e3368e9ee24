"""MIROCALS (ALS, low-dose IL-2 added to riluzole): 220 subjects randomised 1:1, stratified by country and onset.

Schedule (mappings/studies/mirocals.yaml): screening and riluzole run-in (day -126 to -84), a 5-day course of
2 MIU/day SC every 28 days from day 1 (20 courses, about 18 months), ALSFRS-R at every course, survival to day
640. CSF pNfH at baseline is log-normal with about 70 % at or below 3700 pg/mL; in that stratum IL-2 slows
the decline and lowers the hazard of death by about half; above it, it changes nothing.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

from app.synthetic.common import (
    Row,
    StudyData,
    Subject,
    birth_date_for_age,
    clamp,
    fixed,
    local_datetime,
    site_patient_ids,
    spread,
)

STUDY = "mirocals"
MIU = "10*6.[iU]"
SUBJECTS = 220
COURSES = 20  # day 1 and every 28 days: the last course starts on day 533 (about 18 months)
FOLLOW_UP_DAY = 640
PNFH_THRESHOLD = 3700.0
SITES = {
    "FR": ("APHP-PSL", "CHU-NIMES", "CHU-LIMOGES", "CHU-MONTPELLIER"),
    "UK": ("UK-SHEFFIELD", "UK-KCL", "UK-OXFORD"),
}

# Deliberate edge cases.
AGE_75 = "MIR-010"
PNFH_AT_THRESHOLD = "MIR-020"
PNFH_MISSING = "MIR-021"
SVC_AT_LIMIT = "MIR-030"
DEATH_ON_DAY_640 = "MIR-040"
ALSFRS_MISSING_ITEM = ("MIR-050", 6, "item_5")  # the 6th assessment

# Probability of death by day 640 on placebo, per pNfH stratum; IL-2 multiplies the hazard in the low stratum.
DEATH_BY_640 = {"low": 0.28, "high": 0.55, "unknown": 0.35}
IL2_HAZARD_RATIO_LOW = 0.52
# ALSFRS-R decline in points per month (30.4 days), per stratum and arm.
SLOPE = {
    ("low", "placebo"): 0.85,
    ("low", "il2"): 0.55,
    ("high", "placebo"): 1.35,
    ("high", "il2"): 1.35,
    ("unknown", "placebo"): 0.9,
    ("unknown", "il2"): 0.9,
}
ALSFRS_WEIGHTS = {
    "bulbar": (3.0, 2.5, 3.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 0.6, 0.5, 0.2),
    "limb": (0.7, 0.5, 0.7, 2.0, 2.0, 2.0, 1.5, 2.2, 2.2, 0.6, 0.5, 0.2),
}


class Course:
    """What the other files need about one subject beyond enrolment.csv."""

    def __init__(self, subject: Subject, onset: str, pnfh: int | None) -> None:
        self.subject = subject
        self.onset = onset
        self.pnfh = pnfh
        if pnfh is None:
            self.stratum = "unknown"
        else:
            self.stratum = "low" if pnfh <= PNFH_THRESHOLD else "high"


def generate(rng: random.Random) -> StudyData:
    notes: list[tuple[str, str]] = []
    courses = enrolment(rng, notes)
    subjects = [course.subject for course in courses]
    files = {
        "enrolment.csv": [s.row(STUDY) for s in subjects],
        "dosing.csv": dosing(rng, subjects),
        "labs.csv": labs(rng, courses, notes),
        "alsfrs_r.csv": alsfrs_r(rng, courses, notes),
        "adverse_events.csv": adverse_events(rng, subjects),
    }
    notes.append(("summary", survival_summary(courses)))
    return StudyData(STUDY, files, notes)


def _stratified_arms(rng: random.Random, strata: list[str]) -> list[str]:
    """Permuted blocks of four (two IL-2, two placebo) within each stratum, in order of inclusion."""
    pending: dict[str, list[str]] = {}
    arms = []
    for stratum in strata:
        if not pending.get(stratum):
            block = ["il2", "il2", "placebo", "placebo"]
            rng.shuffle(block)
            pending[stratum] = block
        arms.append(pending[stratum].pop())
    return arms


def _death_day(rng: random.Random, stratum: str, arm: str) -> int | None:
    hazard = -math.log(1 - DEATH_BY_640[stratum]) / FOLLOW_UP_DAY
    if stratum == "low" and arm == "il2":
        hazard *= IL2_HAZARD_RATIO_LOW
    day = math.ceil(rng.expovariate(hazard))
    return day if day <= FOLLOW_UP_DAY else None


def enrolment(rng: random.Random, notes: list[tuple[str, str]]) -> list[Course]:
    first, last = date(2017, 6, 1), date(2019, 10, 31)
    consents = sorted(first + timedelta(days=rng.randint(0, (last - first).days)) for _ in range(SUBJECTS))
    patient_ids = site_patient_ids(rng, SUBJECTS, first_digit="4")
    countries = [rng.choices(("FR", "UK"), (3, 2))[0] for _ in range(SUBJECTS)]
    onsets = [rng.choices(("bulbar", "limb"), (3, 7))[0] for _ in range(SUBJECTS)]
    arms = _stratified_arms(rng, [f"{c}/{o}" for c, o in zip(countries, onsets, strict=True)])
    courses = []
    for index in range(SUBJECTS):
        number = f"MIR-{index + 1:03d}"
        consent = consents[index]
        age = 75 if number == AGE_75 else round(clamp(rng.gauss(58, 10), 25, 75))
        subject = Subject(
            subject=number,
            site=rng.choice(SITES[countries[index]]),
            site_patient_id=patient_ids[index],
            sex="M" if rng.random() < 0.6 else "F",
            birth_date=birth_date_for_age(rng, consent, age),
            consent_date=consent,
            arm=arms[index],
            strata=f"country={countries[index]};onset={onsets[index]}",
            country=countries[index],
        )
        subject.first_dose = consent + timedelta(days=rng.randint(84, 126))
        subject.randomisation_date = subject.first_dose - timedelta(days=rng.randint(0, 3))
        pnfh: int | None = round(rng.lognormvariate(math.log(2800), 0.55))
        if number == PNFH_AT_THRESHOLD:
            pnfh = 3700
        elif number == PNFH_MISSING:
            pnfh = None
        course = Course(subject, onsets[index], pnfh)
        death_day = FOLLOW_UP_DAY if number == DEATH_ON_DAY_640 else _death_day(rng, course.stratum, subject.arm)
        withdrawal_day = rng.randint(40, 560) if rng.random() < 0.04 else None
        if withdrawal_day is not None and (death_day is None or withdrawal_day < death_day):
            subject.status, subject.end_reason = "withdrawn", "withdrawal of consent"
            subject.last_day = withdrawal_day
            subject.end_date = subject.day(withdrawal_day)
        elif death_day is not None:
            subject.status, subject.end_reason = "off-study", "death"
            subject.last_day = death_day
            subject.death_date = subject.end_date = subject.day(death_day)
        else:
            subject.status, subject.end_reason = "off-study", "completed"
            subject.last_day = FOLLOW_UP_DAY
            subject.end_date = subject.day(FOLLOW_UP_DAY)
        courses.append(course)
    notes += [
        (AGE_75, "75 years old at consent (the inclusion is 18 to < 76)"),
        (PNFH_AT_THRESHOLD, "PNFH_CSF exactly 3700 pg/mL: in the low (<= 3700) stratum"),
        (PNFH_MISSING, "no PNFH_CSF row (lumbar puncture not done): pNfH stratum unknown"),
        (DEATH_ON_DAY_640, "died on day 640 exactly: a death inside the survival window"),
    ]
    return courses


def dosing(rng: random.Random, subjects: list[Subject]) -> list[Row]:
    """Every injection of every 5-day course, until the day before death or withdrawal."""
    rows: list[Row] = []
    for subject in subjects:
        active = subject.arm == "il2"
        hour = rng.choice((8, 9, 10, 18, 19))
        for course in range(COURSES):
            for offset in range(5):
                study_day = 1 + 28 * course + offset
                if study_day >= subject.last_day:
                    break
                rows.append(
                    {
                        "study": STUDY,
                        "subject": subject.subject,
                        "administered_at": local_datetime(subject.day(study_day), hour, 0, subject.country),
                        "intervention": subject.arm,
                        "dose": "2" if active else "",
                        "dose_unit": MIU if active else "",
                        "route": "SC",
                    }
                )
    return rows


def _lab(subject: Subject, when: str, test: str, value: str, unit: str, low: str = "", high: str = "") -> Row:
    return {
        "study": STUDY,
        "subject": subject.subject,
        "collected_at": when,
        "test": test,
        "value": value,
        "unit": unit,
        "ref_low": low,
        "ref_high": high,
    }


def labs(rng: random.Random, courses: list[Course], notes: list[tuple[str, str]]) -> list[Row]:
    """SVC at screening and baseline; CSF pNfH, serum NfL and Treg % at baseline; Treg % again on day 57."""
    rows: list[Row] = []
    for course in courses:
        subject = course.subject
        screening = local_datetime(subject.consent_date, 10, rng.choice((0, 30)), subject.country)
        baseline = local_datetime(subject.day(1), 9, rng.choice((0, 30)), subject.country)
        svc = 70 if subject.subject == SVC_AT_LIMIT else round(clamp(rng.gauss(92, 12), 70, 125))
        rows.append(_lab(subject, screening, "SVC_PCT", str(svc), "%"))
        rows.append(_lab(subject, baseline, "SVC_PCT", str(round(svc - abs(rng.gauss(2, 3)))), "%"))
        spread_z = 0.0
        if course.pnfh is not None:
            rows.append(_lab(subject, baseline, "PNFH_CSF", str(course.pnfh), "pg/mL"))
            spread_z = (math.log(course.pnfh) - math.log(2800)) / 0.55
        nfl = math.exp(math.log(55) + 0.5 * spread_z + rng.gauss(0, 0.3))
        rows.append(_lab(subject, baseline, "NFL_SERUM", fixed(nfl, 1), "ng/L" if subject.country == "UK" else "pg/mL"))
        treg = clamp(rng.gauss(5.0, 1.0), 2.5, 8.5)
        rows.append(_lab(subject, baseline, "TREG_PCT", fixed(treg, 2), "%"))
        if subject.last_day > 57:
            fold = rng.gauss(1.25, 0.1) if subject.arm == "il2" else rng.gauss(1.0, 0.05)
            when = local_datetime(subject.day(57), 9, rng.choice((0, 30)), subject.country)
            rows.append(_lab(subject, when, "TREG_PCT", fixed(treg * fold, 2), "%"))
    notes.append((SVC_AT_LIMIT, "SVC_PCT exactly 70 % at screening (the inclusion needs >= 70)"))
    return rows


def _assessment_days(subject: Subject) -> list[tuple[int, str]]:
    days = [(1, "baseline")] + [(29 + 28 * k, "course") for k in range(COURSES - 1)] + [(FOLLOW_UP_DAY, "follow-up")]
    completed = subject.end_reason == "completed"
    return [(day, visit) for day, visit in days if day < subject.last_day or (completed and day == FOLLOW_UP_DAY)]


def alsfrs_r(rng: random.Random, courses: list[Course], notes: list[tuple[str, str]]) -> list[Row]:
    """ALSFRS-R (12 items, 0-4) at screening, baseline, every course and day 640, while alive and on study."""
    rows: list[Row] = []
    for course in courses:
        subject = course.subject
        weights = ALSFRS_WEIGHTS[course.onset]
        deficit = spread(rng, 48 - round(clamp(rng.gauss(40, 3.5), 30, 47)), (4,) * 12, weights)
        slope = SLOPE[(course.stratum, subject.arm)] * rng.lognormvariate(0, 0.25)
        screening_day = (subject.consent_date - subject.day(1)).days + 1
        lost = 0
        assessments = [(screening_day, "screening"), *_assessment_days(subject)]
        for number, (study_day, visit) in enumerate(assessments, start=1):
            expected = slope * (study_day - screening_day) / 30.4 + rng.gauss(0, 0.5)
            while lost < math.floor(expected) and sum(deficit) < 48:
                open_items = [index for index in range(12) if deficit[index] < 4]
                chosen = rng.choices(open_items, [weights[index] * (1 + deficit[index]) for index in open_items])[0]
                deficit[chosen] += 1
                lost += 1
            assessed = subject.consent_date if visit == "screening" else subject.day(study_day)
            row: Row = {"study": STUDY, "subject": subject.subject, "assessed_at": assessed.isoformat(), "visit": visit}
            row.update({f"item_{index + 1}": 4 - deficit[index] for index in range(12)})
            if (subject.subject, number) == ALSFRS_MISSING_ITEM[:2]:
                row[ALSFRS_MISSING_ITEM[2]] = None
                notes.append(
                    (
                        subject.subject,
                        f"ALSFRS-R on {assessed.isoformat()} ({visit}): {ALSFRS_MISSING_ITEM[2]} is empty, no total",
                    )
                )
            rows.append(row)
    return rows


# (MedDRA PT code, term, probability on IL-2, on placebo, grades, serious, relatedness on IL-2, on placebo)
MIROCALS_AES = (
    ("10022095", "Injection site reaction", 0.45, 0.10, (1, 1, 1, 2), "N", "probable", "possible"),
    ("10022004", "Influenza like illness", 0.15, 0.08, (1, 2), "N", "possible", "possible"),
    ("10016256", "Fatigue", 0.15, 0.15, (1, 2), "N", "possible", "unlikely"),
    ("10019211", "Headache", 0.10, 0.10, (1,), "N", "possible", "unlikely"),
    ("10016173", "Fall", 0.05, 0.05, (2, 3), "Y", "not-related", "not-related"),
    ("10035669", "Pneumonia aspiration", 0.04, 0.04, (3,), "Y", "unlikely", "not-related"),
    ("10037377", "Pulmonary embolism", 0.02, 0.02, (3,), "Y", "unlikely", "not-related"),
)


def adverse_events(rng: random.Random, subjects: list[Subject]) -> list[Row]:
    """Injection-site and flu-like reactions, a few serious events, and a fatal respiratory failure per death."""
    rows: list[Row] = []
    for subject in subjects:
        active = subject.arm == "il2"
        events = []
        for code, term, p_active, p_placebo, grades, serious, rel_active, rel_placebo in MIROCALS_AES:
            if rng.random() >= (p_active if active else p_placebo):
                continue
            latest = max(1, subject.last_day - 1)
            onset_day = rng.randint(1, min(5, latest)) if code == "10022095" else rng.randint(1, latest)
            events.append((onset_day, code, term, rng.choice(grades), serious, rel_active if active else rel_placebo))
        if subject.death_date is not None:
            events.append((max(1, subject.last_day - rng.randint(0, 6)), "10038695", "Respiratory failure", 5, "Y", ""))
        for number, (onset_day, code, term, grade, serious, relatedness) in enumerate(sorted(events), start=1):
            onset = subject.day(onset_day)
            fatal = grade == 5
            assert subject.end_date is not None
            if fatal:
                resolution = subject.end_date  # the death date
            else:
                resolution = min(onset + timedelta(days=rng.randint(2, 14 if serious == "Y" else 5)), subject.end_date)
            rows.append(
                {
                    "study": STUDY,
                    "subject": subject.subject,
                    "ae_number": number,
                    "meddra_pt_code": code,
                    "meddra_pt_term": term,
                    "onset_date": onset.isoformat(),
                    "resolution_date": resolution.isoformat(),
                    "ctcae_grade": grade,
                    "serious": serious,
                    "relatedness": relatedness or "not-related",
                    "outcome": "fatal" if fatal else "recovered",
                }
            )
    return rows


def survival_summary(courses: list[Course]) -> str:
    """Deaths by day 640 per pNfH stratum and arm, as generated (for the README)."""
    parts = []
    for stratum in ("low", "high", "unknown"):
        for arm in ("il2", "placebo"):
            group = [c for c in courses if c.stratum == stratum and c.subject.arm == arm]
            deaths = sum(1 for c in group if c.subject.death_date is not None)
            parts.append(f"{stratum} pNfH / {arm}: {deaths}/{len(group)} died")
    arms = {arm: sum(1 for c in courses if c.subject.arm == arm) for arm in ("il2", "placebo")}
    low = sum(1 for c in courses if c.stratum == "low")
    measured = sum(1 for c in courses if c.pnfh is not None)
    return (
        f"arms il2 {arms['il2']} / placebo {arms['placebo']}; PNFH_CSF <= 3700 in {low}/{measured} "
        f"({100 * low / measured:.0f} %); " + "; ".join(parts)
    )
