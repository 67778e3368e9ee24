"""DEPIL-2 (bipolar depression, low-dose IL-2): 18 subjects randomised 2:1 ILT101:placebo, one screen failure.

Schedule (mappings/studies/depil-2.yaml): screening (day -28 to -1), induction injections D1-D5, one injection
a week W3-W6 (days 15, 22, 29, 36), follow-up D60. Sites report labs in French units, each in its own way.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from app.synthetic.common import (
    Row,
    StudyData,
    Subject,
    clamp,
    fixed,
    local_datetime,
    shift,
    site_patient_ids,
    spread,
)

STUDY = "depil-2"
MIU = "10*6.[iU]"  # UCUM for million international units
VISIT_DAYS = {"d1": 1, "d5": 5, "w3": 15, "w4": 22, "w5": 29, "w6": 36, "d60": 60}
DOSE_DAYS = (1, 2, 3, 4, 5, 15, 22, 29, 36)
TREG_VISITS = ("d1", "d5", "w3", "w6", "d60")
CONSENTED = 19  # 18 randomised and one screen failure

# Deliberate edge cases, at fixed positions in the order of consent (subject numbers).
SCREEN_FAILURE = "D2-007"
MADRS_BASELINE_18 = "D2-003"
MADRS_MISSING_ITEM = ("D2-005", "w4", "item_7")
IDS_BOTH_APPETITE_ITEMS = "D2-002"
ANTI_TPO_AT_LIMIT = "D2-009"
WITHDRAWAL_FROM = 12  # the first ILT101 subject numbered from D2-012 on withdraws after W3

# Mean MADRS total as a fraction of baseline: mood improves more on IL-2 from day 15 (W3) on.
MADRS_COURSE = {
    "ilt101": {"d5": 0.95, "w3": 0.78, "w4": 0.70, "w5": 0.64, "w6": 0.58, "d60": 0.62},
    "placebo": {"d5": 0.97, "w3": 0.90, "w4": 0.86, "w5": 0.83, "w6": 0.80, "d60": 0.82},
}
# Treg % of CD4 as a fold of baseline (mean, sd): 1.17 vs 1.01 at D5.
TREG_FOLD = {
    "ilt101": {"d5": (1.17, 0.06), "w3": (1.08, 0.05), "w6": (1.12, 0.06), "d60": (1.03, 0.04)},
    "placebo": {"d5": (1.01, 0.04), "w3": (1.00, 0.04), "w6": (1.00, 0.04), "d60": (1.00, 0.04)},
}
MADRS_WEIGHTS = (1.2, 1.3, 1.0, 1.0, 0.8, 1.0, 1.1, 1.1, 1.0, 0.35)
IDS_CAPS = (3,) * 30


@dataclass(frozen=True)
class SiteUnits:
    platelets: str  # "/mm3" or "G/L"
    haemoglobin: str  # "g/dL" or "mmol/L"


SITES = {"APHP-HMN": SiteUnits("/mm3", "g/dL"), "APHP-FW": SiteUnits("G/L", "mmol/L")}


def generate(rng: random.Random) -> StudyData:
    notes: list[tuple[str, str]] = []
    subjects = enrolment(rng, notes)
    randomised = [s for s in subjects if s.arm]
    files = {
        "enrolment.csv": [s.row(STUDY) for s in subjects],
        "dosing.csv": dosing(rng, randomised),
        "labs.csv": labs(rng, subjects, notes),
        "madrs.csv": madrs(rng, subjects, notes),
        "ids_c30.csv": ids_c30(rng, randomised, notes),
        "adverse_events.csv": adverse_events(rng, randomised, notes),
    }
    return StudyData(STUDY, files, notes)


def randomisation_list(rng: random.Random, count: int) -> list[str]:
    """Permuted blocks of three (two ILT101, one placebo): exactly 2:1 over 18 subjects."""
    arms: list[str] = []
    while len(arms) < count:
        block = ["ilt101", "ilt101", "placebo"]
        rng.shuffle(block)
        arms.extend(block)
    return arms[:count]


def enrolment(rng: random.Random, notes: list[tuple[str, str]]) -> list[Subject]:
    arms = iter(randomisation_list(rng, CONSENTED - 1))
    patient_ids = site_patient_ids(rng, CONSENTED)
    subjects = []
    consent = date(2020, 7, 6)
    withdrawn: Subject | None = None
    for number in range(1, CONSENTED + 1):
        if number > 1:
            consent += timedelta(days=rng.randint(18, 46))
        age = rng.randint(21, 63)
        subject = Subject(
            subject=f"D2-{number:03d}",
            site=rng.choices(list(SITES), [3, 2])[0],
            site_patient_id=patient_ids[number - 1],
            sex="F" if rng.random() < 0.55 else "M",
            birth_date=date(consent.year - age, 1, 1) + timedelta(days=rng.randint(0, 364)),
            consent_date=consent,
        )
        if subject.subject == SCREEN_FAILURE:
            subject.status, subject.end_reason = "ineligible", "screen failure"
            subject.end_date = consent + timedelta(days=6)
            subjects.append(subject)
            continue
        subject.first_dose = consent + timedelta(days=rng.randint(5, 20))
        subject.randomisation_date = subject.first_dose - timedelta(days=rng.randint(0, 2))
        subject.arm = next(arms)
        if withdrawn is None and number >= WITHDRAWAL_FROM and subject.arm == "ilt101":
            withdrawn = subject
            subject.status, subject.end_reason, subject.last_day = "withdrawn", "withdrawal of consent", 15
            subject.end_date = subject.day(19)
        else:
            subject.status, subject.end_reason, subject.last_day = "off-study", "completed", 60
            subject.end_date = subject.day(60)
        subjects.append(subject)
    notes.append((SCREEN_FAILURE, "screen failure: WBC 3800 /mm3 at screening; no arm, no randomisation date"))
    if withdrawn is not None:
        notes.append(
            (
                withdrawn.subject,
                "ILT101, withdrew consent on day 19 after the W3 visit: doses D1-D5 and day 15 only, "
                "no W4-D60 data, a Fatigue AE still 'recovering' with no resolution date",
            )
        )
    return subjects


def dosing(rng: random.Random, subjects: list[Subject]) -> list[Row]:
    """Every injection: 1 MIU/day SC D1-D5, then days 15, 22, 29, 36; placebo rows carry no dose."""
    rows: list[Row] = []
    for subject in subjects:
        hour = rng.choice((8, 9, 10))
        for study_day in DOSE_DAYS:
            if study_day > subject.last_day:
                break
            day = subject.day(study_day)
            active = subject.arm == "ilt101"
            rows.append(
                {
                    "study": STUDY,
                    "subject": subject.subject,
                    "administered_at": local_datetime(day, hour, rng.choice((0, 15, 30, 45))),
                    "intervention": subject.arm,
                    "dose": "1" if active else "",
                    "dose_unit": MIU if active else "",
                    "route": "SC",
                }
            )
    return rows


def _interpretation(value: float, low: float | None, high: float | None) -> str:
    if low is not None and value < low:
        return "L"
    if high is not None and value > high:
        return "H"
    return "N"


def _lab(subject: Subject, when: str, test: str, value: str, unit: str, low: str = "", high: str = "") -> Row:
    interpretation = ""
    if low or high:
        interpretation = _interpretation(float(value), float(low) if low else None, float(high) if high else None)
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


@dataclass
class BloodCount:
    wbc: float  # /mm3
    plt: float  # G/L
    hgb: float  # g/dL
    rbc: float  # T/L


def _blood_count_rows(subject: Subject, when: str, count: BloodCount, units: SiteUnits) -> list[Row]:
    female = subject.sex == "F"
    rows = [_lab(subject, when, "WBC", str(int(round(count.wbc, -1))), "/mm3", "4000", "10000")]
    if units.platelets == "/mm3":
        rows.append(_lab(subject, when, "PLT", str(int(round(count.plt * 1000, -3))), "/mm3", "150000", "400000"))
    else:
        rows.append(_lab(subject, when, "PLT", str(round(count.plt)), "G/L", "150", "400"))
    low, high = (12.0, 16.0) if female else (13.0, 17.0)
    if units.haemoglobin == "g/dL":
        rows.append(_lab(subject, when, "HGB", fixed(count.hgb, 1), "g/dL", fixed(low, 1), fixed(high, 1)))
    else:
        factor = 0.6206  # g/dL -> mmol/L (haemoglobin monomer)
        rows.append(
            _lab(
                subject,
                when,
                "HGB",
                fixed(count.hgb * factor, 1),
                "mmol/L",
                fixed(low * factor, 1),
                fixed(high * factor, 1),
            )
        )
    rbc_low, rbc_high = ("3.80", "5.20") if female else ("4.20", "5.70")
    rows.append(_lab(subject, when, "RBC", fixed(count.rbc, 2), "T/L", rbc_low, rbc_high))
    return rows


def _blood_count(rng: random.Random, subject: Subject) -> BloodCount:
    female = subject.sex == "F"
    return BloodCount(
        wbc=clamp(rng.gauss(6800, 1300), 4300, 10500),
        plt=clamp(rng.gauss(255, 50), 160, 410),
        hgb=clamp(rng.gauss(13.4, 0.8) if female else rng.gauss(14.8, 0.9), 11.6, 17.2),
        rbc=clamp(rng.gauss(4.5, 0.3) if female else rng.gauss(5.0, 0.3), 3.9, 5.8),
    )


def _varied(rng: random.Random, count: BloodCount) -> BloodCount:
    return BloodCount(
        wbc=count.wbc * rng.gauss(1, 0.06),
        plt=count.plt * rng.gauss(1, 0.05),
        hgb=count.hgb * rng.gauss(1, 0.02),
        rbc=count.rbc * rng.gauss(1, 0.02),
    )


def labs(rng: random.Random, subjects: list[Subject], notes: list[tuple[str, str]]) -> list[Row]:
    """Screening blood counts and thyroid antibodies; blood counts again at D1 and D60; Treg % and count."""
    rows: list[Row] = []
    hgb_at_limit_done = False
    for subject in subjects:
        units = SITES[subject.site]
        screening = local_datetime(subject.consent_date, 8, rng.choice((5, 20, 35, 50)))
        count = _blood_count(rng, subject)
        if subject.subject == SCREEN_FAILURE:
            count.wbc = 3800
        if not hgb_at_limit_done and units.haemoglobin == "mmol/L" and subject.arm and subject.sex == "F":
            # 6.2 mmol/L is not below the protocol's "6.2 mmol/L" limit, but 6.2 / 0.6206 = 9.99 g/dL is below 10.0.
            count.hgb = 6.2 / 0.6206
            hgb_at_limit_done = True
            notes.append(
                (
                    subject.subject,
                    "screening HGB 6.2 mmol/L: exactly the protocol's mmol/L limit (eligible), yet 9.99 g/dL "
                    "once converted; the spec compares it in mmol/L (`alternatives`)",
                )
            )
        rows += _blood_count_rows(subject, screening, count, units)
        tpo = str(round(clamp(rng.lognormvariate(math.log(9), 0.5), 1, 30)))
        if subject.subject == ANTI_TPO_AT_LIMIT:
            tpo = "34"
        rows.append(_lab(subject, screening, "ANTI_TPO", tpo, "UI/mL", "", "34"))
        tg = str(round(clamp(rng.lognormvariate(math.log(18), 0.6), 2, 100)))
        rows.append(_lab(subject, screening, "ANTI_TG", tg, "UI/mL", "", "115"))
        if subject.sex == "F":
            rows.append(
                {
                    "study": STUDY,
                    "subject": subject.subject,
                    "collected_at": screening,
                    "test": "HCG_SERUM",
                    "value": "NEG",
                    "interpretation": "NEG",
                }
            )
        if not subject.arm:
            continue
        treg = clamp(rng.gauss(5.6, 0.9), 3.5, 8.5)
        treg_count = clamp(rng.gauss(42, 9), 20, 70)
        for visit in TREG_VISITS:
            study_day = VISIT_DAYS[visit]
            if study_day > subject.last_day:
                break
            when = local_datetime(subject.day(study_day), 8, rng.choice((0, 10, 20, 30, 40)))
            fold = 1.0 if visit == "d1" else rng.gauss(*TREG_FOLD[subject.arm][visit])
            rows.append(_lab(subject, when, "TREG_PCT", fixed(treg * fold, 2), "%"))
            if visit in ("d1", "d5"):
                rows.append(_lab(subject, when, "TREG_ABS", str(round(treg_count * fold)), "/mm3"))
            if visit in ("d1", "d60"):
                rows += _blood_count_rows(subject, when, _varied(rng, count), units)
    notes.append(
        (ANTI_TPO_AT_LIMIT, "ANTI_TPO 34 UI/mL with ref_high 34 and interpretation N: at the limit, not positive")
    )
    return rows


def _madrs_row(subject: Subject, assessed: date, visit: str, scores: list[int]) -> Row:
    row: Row = {"study": STUDY, "subject": subject.subject, "assessed_at": assessed.isoformat(), "visit": visit}
    row.update({f"item_{index}": score for index, score in enumerate(scores, start=1)})
    return row


def madrs(rng: random.Random, subjects: list[Subject], notes: list[tuple[str, str]]) -> list[Row]:
    """MADRS (10 items, 0-6) at screening and D1-D60; baseline totals above 17, item 10 at most 2."""
    rows: list[Row] = []
    caps = (6, 6, 6, 6, 6, 6, 6, 6, 6, 2)  # item 10 above 2 would have excluded the patient
    for subject in subjects:
        baseline_total = 18 if subject.subject == MADRS_BASELINE_18 else rng.randint(21, 34)
        baseline = spread(rng, baseline_total, caps, MADRS_WEIGHTS)
        screening_total = (
            baseline_total if subject.subject == MADRS_BASELINE_18 else baseline_total + rng.randint(-2, 3)
        )
        rows.append(_madrs_row(subject, subject.consent_date, "screening", shift(rng, baseline, screening_total, caps)))
        if not subject.arm:
            continue
        rows.append(_madrs_row(subject, subject.day(1), "d1", baseline))
        for visit, fraction in MADRS_COURSE[subject.arm].items():
            study_day = VISIT_DAYS[visit]
            if study_day > subject.last_day:
                break
            target = round(baseline_total * fraction + rng.gauss(0, 1.8))
            row = _madrs_row(subject, subject.day(study_day), visit, shift(rng, baseline, target, (6,) * 10))
            if (subject.subject, visit) == MADRS_MISSING_ITEM[:2]:
                row[MADRS_MISSING_ITEM[2]] = None
            rows.append(row)
    notes.append((MADRS_BASELINE_18, "MADRS total exactly 18 at screening and D1 (the inclusion needs > 17)"))
    notes.append(
        (
            MADRS_MISSING_ITEM[0],
            f"MADRS at {MADRS_MISSING_ITEM[1]}: {MADRS_MISSING_ITEM[2]} is empty, so no total can be computed",
        )
    )
    return rows


def _ids_items(rng: random.Random, total: int) -> list[int]:
    """30 items; of the pairs 11/12 (appetite) and 13/14 (weight) only one is rated, the other is 0."""
    appetite = rng.choice((10, 11))  # 0-based index of item 11 or item 12
    weight = rng.choice((12, 13))
    caps = [3] * 30
    for index in (10, 11, 12, 13):
        if index not in (appetite, weight):
            caps[index] = 0
    weights = [1.0] * 30
    weights[17] = 0.3  # suicidal ideation
    return spread(rng, total, caps, weights)


def ids_total(scores: list[int]) -> int:
    """The IDS-C30 total of 28: only the higher of items 11/12 and of 13/14 counts."""
    return sum(scores) - scores[10] - scores[11] - scores[12] - scores[13] + max(scores[10:12]) + max(scores[12:14])


def ids_c30(rng: random.Random, subjects: list[Subject], notes: list[tuple[str, str]]) -> list[Row]:
    """IDS-C30 (30 items, 0-3) at D1 and W6."""
    rows: list[Row] = []
    for subject in subjects:
        baseline_total = rng.randint(28, 46)
        baseline = _ids_items(rng, baseline_total)
        visits = [("d1", baseline)]
        if subject.last_day >= VISIT_DAYS["w6"]:
            fraction = MADRS_COURSE[subject.arm]["w6"]
            caps = [3 if score or index not in (10, 11, 12, 13) else 0 for index, score in enumerate(baseline)]
            target = round(baseline_total * fraction + rng.gauss(0, 2))
            visits.append(("w6", shift(rng, baseline, target, caps)))
        for visit, scores in visits:
            scores = list(scores)
            if subject.subject == IDS_BOTH_APPETITE_ITEMS and visit == "d1":
                # Both appetite items rated: the total takes the higher one only.
                scores[10], scores[11] = 2, 1
            row: Row = {
                "study": STUDY,
                "subject": subject.subject,
                "assessed_at": subject.day(VISIT_DAYS[visit]).isoformat(),
                "visit": visit,
            }
            row.update({f"item_{index}": score for index, score in enumerate(scores, start=1)})
            rows.append(row)
    notes.append(
        (
            IDS_BOTH_APPETITE_ITEMS,
            "IDS-C30 at d1 rates both appetite items (item_11 = 2, item_12 = 1): the total counts only the 2",
        )
    )
    return rows


# (MedDRA PT code, term, probability on ILT101, on placebo, grades, relatedness on ILT101, on placebo)
DEPIL_AES = (
    ("10022061", "Injection site erythema", 0.6, 0.15, (1, 1, 1, 2), "probable", "possible"),
    ("10016256", "Fatigue", 0.3, 0.2, (1, 1, 2), "possible", "possible"),
    ("10019211", "Headache", 0.25, 0.2, (1, 1, 2), "possible", "unlikely"),
    ("10028813", "Nausea", 0.15, 0.1, (1,), "possible", "unlikely"),
)


def adverse_events(rng: random.Random, subjects: list[Subject], notes: list[tuple[str, str]]) -> list[Row]:
    """Mostly injection-site reactions and flu-like symptoms, CTCAE grade 1-2, none serious."""
    rows: list[Row] = []
    for subject in subjects:
        events = []
        for code, term, p_active, p_placebo, grades, rel_active, rel_placebo in DEPIL_AES:
            active = subject.arm == "ilt101"
            if rng.random() >= (p_active if active else p_placebo):
                continue
            onset_day = rng.randint(1, 5) if code == "10022061" else rng.randint(1, min(subject.last_day, 40))
            events.append((onset_day, code, term, rng.choice(grades), rel_active if active else rel_placebo))
        if subject.status == "withdrawn" and not any(event[1] == "10016256" for event in events):
            events.append((14, "10016256", "Fatigue", 2, "possible"))
        for number, (onset_day, code, term, grade, relatedness) in enumerate(sorted(events), start=1):
            onset = subject.day(onset_day)
            ongoing = subject.status == "withdrawn" and code == "10016256"
            rows.append(
                {
                    "study": STUDY,
                    "subject": subject.subject,
                    "ae_number": number,
                    "meddra_pt_code": code,
                    "meddra_pt_term": term,
                    "onset_date": onset.isoformat(),
                    "resolution_date": "" if ongoing else (onset + timedelta(days=rng.randint(1, 4))).isoformat(),
                    "ctcae_grade": grade,
                    "serious": "N",
                    "relatedness": relatedness,
                    "outcome": "recovering" if ongoing else "recovered",
                }
            )
    return rows
