"""A hospital population for pre-screening: an R4 transaction Bundle of ~150 patients of one site.

Patients come with Conditions (SNOMED CT and/or ICD-10), MedicationStatements (ATC), lab Observations
(LOINC, in the units the labs use), MADRS / SELENA-SLEDAI / slow vital capacity scores (the project's
measure CodeSystem) and ResearchSubjects in another interventional study. Designed cases sit right at
each computable criterion of mappings/studies/*.yaml; `Case.expect` says what an evaluator should find
on the reference date. Every resource is validated (`validate_resource`) before it is written.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from app.fhir.errors import FhirError
from app.fhir.systems import (
    ATC,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    ICD10,
    ICD10_CM,
    INTERPRETATION,
    LOINC,
    MEASURE,
    SNOMED,
    UCUM,
)
from app.fhir.validation import validate_resource
from app.synthetic.common import birth_date_for_age, clamp, local_datetime, site_patient_ids

REFERENCE_DATE = date(2026, 11, 1)  # "today" for ages, lookbacks and periods: never the clock
SITE = "APHP-HMN"
BASE_URL = "http://127.0.0.1:8000/fhir"
OTHER_STUDY = "hosp-other-study-1"

SITE_PATIENT = f"https://trialbridge.dev/fhir/sid/site/{SITE}/patient"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

ELIGIBLE, INELIGIBLE, UNKNOWN = "eligible", "ineligible", "unknown"

Coding = tuple[str, str, str]  # (system, code, display)

# Conditions
BIPOLAR_DEPRESSION: Coding = (SNOMED, "191627008", "Bipolar affective disorder, current episode depression")
BIPOLAR: Coding = (SNOMED, "13746004", "Bipolar disorder")
F31_3: Coding = (ICD10, "F31.3", "Bipolar affective disorder, current episode mild or moderate depression")
F31_4: Coding = (
    ICD10,
    "F31.4",
    "Bipolar affective disorder, current episode severe depression without psychotic symptoms",
)
F31_5: Coding = (
    ICD10,
    "F31.5",
    "Bipolar affective disorder, current episode severe depression with psychotic symptoms",
)
F31_1: Coding = (ICD10, "F31.1", "Bipolar affective disorder, current episode manic without psychotic symptoms")
DEPRESSION: Coding = (SNOMED, "35489007", "Depressive disorder")
F32_2: Coding = (ICD10, "F32.2", "Severe depressive episode without psychotic symptoms")
ALS: Coding = (SNOMED, "86044005", "Amyotrophic lateral sclerosis")
# G12.21 is an ICD-10-CM code (US clinical modification); WHO ICD-10 stops at G12.2 (motor neuron disease).
G12_21: Coding = (ICD10_CM, "G12.21", "Amyotrophic lateral sclerosis")
G12_2: Coding = (ICD10, "G12.2", "Motor neuron disease")
SLE: Coding = (SNOMED, "55464009", "Systemic lupus erythematosus")
M32_1: Coding = (ICD10, "M32.1", "Systemic lupus erythematosus with organ or system involvement")
M32_9: Coding = (ICD10, "M32.9", "Systemic lupus erythematosus, unspecified")
MALIGNANCY: Coding = (SNOMED, "363346000", "Malignant neoplastic disease")
BREAST_CANCER: Coding = (SNOMED, "254837009", "Malignant neoplasm of breast")
C50_9: Coding = (ICD10, "C50.9", "Malignant neoplasm of breast, unspecified")
CERVIX_IN_SITU: Coding = (SNOMED, "92564006", "Carcinoma in situ of uterine cervix")
D06_9: Coding = (ICD10, "D06.9", "Carcinoma in situ of cervix, unspecified")
SKIN_SCC: Coding = (SNOMED, "254651007", "Squamous cell carcinoma of skin")
C44_3: Coding = (ICD10, "C44.3", "Malignant neoplasm of skin of other and unspecified parts of face")
TYPE_1_DIABETES: Coding = (SNOMED, "46635009", "Diabetes mellitus type 1")
TYPE_2_DIABETES: Coding = (SNOMED, "44054006", "Diabetes mellitus type 2")
HIV: Coding = (SNOMED, "86406008", "Human immunodeficiency virus infection")
B20: Coding = (ICD10, "B20", "HIV disease resulting in infectious and parasitic diseases")
PARKINSON: Coding = (SNOMED, "49049000", "Parkinson's disease")
ALZHEIMER: Coding = (SNOMED, "26929004", "Alzheimer's disease")
PREGNANCY: Coding = (SNOMED, "77386006", "Pregnancy")
RHEUMATOID_ARTHRITIS: Coding = (SNOMED, "69896004", "Rheumatoid arthritis")
PNEUMONIA: Coding = (SNOMED, "233604007", "Pneumonia")
KIDNEY_TRANSPLANT: Coding = (ICD10, "Z94.0", "Kidney transplant status")
CKD_5: Coding = (ICD10, "N18.5", "Chronic kidney disease, stage 5")
HYPERTENSION: Coding = (SNOMED, "38341003", "Hypertensive disorder")
ASTHMA: Coding = (SNOMED, "195967001", "Asthma")
SCHIZOPHRENIA: Coding = (SNOMED, "58214004", "Schizophrenia")
HYPOTHYROIDISM: Coding = (SNOMED, "40930008", "Hypothyroidism")
ANXIETY: Coding = (SNOMED, "197480006", "Anxiety disorder")
OTHER_CANCERS: tuple[Coding, ...] = (
    (ICD10, "C18.7", "Malignant neoplasm of sigmoid colon"),
    (ICD10, "C34.9", "Malignant neoplasm of bronchus or lung, unspecified"),
    (ICD10, "C64", "Malignant neoplasm of kidney, except renal pelvis"),
)

# Medications (ATC)
LITHIUM: Coding = (ATC, "N05AN01", "lithium")
VALPROIC_ACID: Coding = (ATC, "N03AG01", "valproic acid")
LAMOTRIGINE: Coding = (ATC, "N03AX09", "lamotrigine")
SERTRALINE: Coding = (ATC, "N06AB06", "sertraline")
QUETIAPINE: Coding = (ATC, "N05AH04", "quetiapine")
PREDNISONE: Coding = (ATC, "H02AB07", "prednisone")
METHOTREXATE: Coding = (ATC, "L04AX03", "methotrexate")
METHOTREXATE_L01: Coding = (ATC, "L01BA01", "methotrexate")
MYCOPHENOLATE: Coding = (ATC, "L04AA06", "mycophenolic acid")
AZATHIOPRINE: Coding = (ATC, "L04AX01", "azathioprine")
HYDROXYCHLOROQUINE: Coding = (ATC, "P01BA02", "hydroxychloroquine")
RILUZOLE: Coding = (ATC, "N07XX02", "riluzole")
IBUPROFEN: Coding = (ATC, "M01AE01", "ibuprofen")
AMOXICILLIN: Coding = (ATC, "J01CA04", "amoxicillin")
METFORMIN: Coding = (ATC, "A10BA02", "metformin")
INSULIN: Coding = (ATC, "A10AE04", "insulin glargine")
AMLODIPINE: Coding = (ATC, "C08CA01", "amlodipine")
LEVOTHYROXINE: Coding = (ATC, "H03AA01", "levothyroxine sodium")
MOOD_DRUGS = (LITHIUM, VALPROIC_ACID, LAMOTRIGINE, SERTRALINE)

# Observations: (system, code, display)
LEUKOCYTES: Coding = (LOINC, "6690-2", "Leukocytes [#/volume] in Blood by Automated count")
PLATELETS: Coding = (LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count")
HAEMOGLOBIN: Coding = (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood")
ERYTHROCYTES: Coding = (LOINC, "789-8", "Erythrocytes [#/volume] in Blood by Automated count")
ANTI_TPO: Coding = (LOINC, "8099-4", "Thyroperoxidase Ab [Units/volume] in Serum or Plasma")
ANTI_TG: Coding = (LOINC, "8098-6", "Thyroglobulin Ab [Units/volume] in Serum or Plasma")
HCG: Coding = (LOINC, "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine")
HBA1C: Coding = (LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
TEMPERATURE: Coding = (LOINC, "8310-5", "Body temperature")
ANA: Coding = (LOINC, "42254-3", "Nuclear Ab [Presence] in Serum by Immunofluorescence")
NFL_SERUM: Coding = (LOINC, "101281-4", "Neurofilament light chain [Mass/volume] in Serum or Plasma")
CSSRS_IDEATION: Coding = (LOINC, "93278-0", "Suicidal ideation [C-SSRS]")
MADRS_TOTAL: Coding = (MEASURE, "madrs-total", "MADRS total score (0-60)")
MADRS_ITEM_10: Coding = (MEASURE, "madrs-item-10", "MADRS item 10 (0-6): suicidal thoughts")
SELENA: Coding = (MEASURE, "selena-sledai", "SELENA-SLEDAI score")
SVC: Coding = (MEASURE, "svc-pct-pred", "Slow vital capacity, % of predicted")
PNFH_CSF: Coding = (MEASURE, "pnfh-csf", "Phosphorylated neurofilament heavy chain [mass/volume] in CSF")
POSITIVE = (SNOMED, "10828004", "Positive")
NEGATIVE = (SNOMED, "260385009", "Negative")

# UCUM code -> the unit text the lab prints
UNIT_TEXT = {
    "10*3/uL": "10*3/uL",
    "/mm3": "/mm3",
    "10*9/L": "G/L",
    "g/dL": "g/dL",
    "mmol/L": "mmol/L",
    "10*6/uL": "10*6/uL",
    "10*12/L": "T/L",
    "[IU]/mL": "UI/mL",
    "%": "%",
    "{score}": "{score}",
    "pg/mL": "pg/mL",
    "Cel": "°C",
}
HB_MMOL_PER_G_DL = 0.6206

DEFAULT: Any = object()  # "draw a normal value" in the profile builders below


def days_ago(days: int) -> date:
    return REFERENCE_DATE - timedelta(days=days)


def concept(*codings: Coding) -> dict[str, Any]:
    return {
        "coding": [{"system": system, "code": code, "display": display} for system, code, display in codings],
        "text": codings[0][2],
    }


def quantity(value: float, ucum: str) -> dict[str, Any]:
    return {"value": value, "unit": UNIT_TEXT.get(ucum, ucum), "system": UCUM, "code": ucum}


@dataclass
class PatientRecord:
    """One patient and the resources that point at it; ids are `{pid}-{kind}-{n}`."""

    pid: str
    why: str
    expect: dict[str, str]
    resources: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    female: bool = False

    def _id(self, kind: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return f"{self.pid}-{kind}-{self.counters[kind]}"

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def condition(
        self,
        *codings: Coding,
        onset: date | None,
        clinical: str = "active",
        abatement: date | None = None,
    ) -> None:
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self._id("cond"),
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}],
            "code": concept(*codings),
            "subject": self.subject,
        }
        if onset is not None:
            resource["onsetDateTime"] = onset.isoformat()
        if abatement is not None:
            resource["abatementDateTime"] = abatement.isoformat()
        self.resources.append(resource)

    def medication(
        self,
        drug: Coding,
        start: date,
        end: date | None = None,
        dose_mg: float | None = None,
    ) -> None:
        period = {"start": start.isoformat()}
        if end is not None:
            period["end"] = end.isoformat()
        resource: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "id": self._id("med"),
            "status": "completed" if end is not None and end < REFERENCE_DATE else "active",
            "medicationCodeableConcept": concept(drug),
            "subject": self.subject,
            "effectivePeriod": period,
        }
        if dose_mg is not None:
            resource["dosage"] = [
                {
                    "text": f"{dose_mg:g} mg once a day",
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": quantity(dose_mg, "mg")}],
                }
            ]
        self.resources.append(resource)

    def _observation(self, code: Coding, when: date, category: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": self._id("obs"),
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": concept(code),
            "subject": self.subject,
            "effectiveDateTime": local_datetime(when, 8 + len(self.resources) % 4, 5 * (len(self.resources) % 12)),
        }

    def measurement(
        self,
        code: Coding,
        value: float,
        ucum: str,
        when: date,
        *,
        category: str = "laboratory",
        low: float | None = None,
        high: float | None = None,
        interpretation: str | None = None,
    ) -> None:
        resource = self._observation(code, when, category)
        resource["valueQuantity"] = quantity(value, ucum)
        if interpretation is not None:
            resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": interpretation}]}]
        if low is not None or high is not None:
            reference_range: dict[str, Any] = {}
            if low is not None:
                reference_range["low"] = quantity(low, ucum)
            if high is not None:
                reference_range["high"] = quantity(high, ucum)
            resource["referenceRange"] = [reference_range]
        self.resources.append(resource)

    def score(self, code: Coding, value: int, when: date) -> None:
        self.measurement(code, value, "{score}", when, category="survey")

    def presence(self, code: Coding, positive: bool, when: date) -> None:
        resource = self._observation(code, when, "laboratory")
        resource["valueCodeableConcept"] = concept(POSITIVE if positive else NEGATIVE)
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": "POS" if positive else "NEG"}]}]
        self.resources.append(resource)

    def other_study(self, status: str, start: date, end: date | None = None) -> None:
        period = {"start": start.isoformat()}
        if end is not None:
            period["end"] = end.isoformat()
        self.resources.append(
            {
                "resourceType": "ResearchSubject",
                "id": self._id("rs"),
                "status": status,
                "period": period,
                "study": {"reference": f"ResearchStudy/{OTHER_STUDY}"},
                "individual": self.subject,
            }
        )


class Population:
    """Builds the patients in order (hosp-p001, hosp-p002, ...) from a seeded random generator."""

    def __init__(self, rng: random.Random, size: int = 160) -> None:
        self.rng = rng
        self.records: list[PatientRecord] = []
        self._numbers = iter(site_patient_ids(rng, size))

    def patient(
        self,
        why: str,
        expect: dict[str, str],
        *,
        gender: str | None = None,
        birth: date | None = None,
        age: int | None = None,
        ages: tuple[int, int] = (22, 60),
    ) -> PatientRecord:
        rng = self.rng
        gender = gender or ("female" if rng.random() < 0.55 else "male")
        if birth is None:
            birth = birth_date_for_age(rng, REFERENCE_DATE, age if age is not None else rng.randint(*ages))
        record = PatientRecord(f"hosp-p{len(self.records) + 1:03d}", why, expect, female=gender == "female")
        record.resources.append(
            {
                "resourceType": "Patient",
                "id": record.pid,
                "identifier": [{"system": SITE_PATIENT, "value": next(self._numbers)}],
                "gender": gender,
                "birthDate": birth.isoformat(),
            }
        )
        self.records.append(record)
        return record

    # ------------------------------------------------------------------ bipolar depression (DEPIL-2)

    def bipolar(
        self,
        why: str,
        expect: dict[str, str] | None = None,
        *,
        gender: str | None = None,
        birth: date | None = None,
        age: int | None = None,
        diagnosis: tuple[Coding, ...] | None = DEFAULT,
        drugs: tuple[Coding, ...] = DEFAULT,
        wbc: tuple[float, str] | None = DEFAULT,
        plt: tuple[float, str] | None = DEFAULT,
        hgb: tuple[float, str] | None = DEFAULT,
        rbc: tuple[float, str] | None = DEFAULT,
        tpo: tuple[float, float | None, str | None] | None = DEFAULT,
        tg: tuple[float, str] | None = DEFAULT,
        madrs: int | None = DEFAULT,
        item10: int | None = DEFAULT,
        hcg: bool | None = DEFAULT,
        lab_age: int | None = None,
    ) -> PatientRecord:
        """A patient in a bipolar depressive episode who passes every DEPIL-2 criterion unless told otherwise."""
        rng = self.rng
        record = self.patient(why, expect or {"depil-2": ELIGIBLE}, gender=gender, birth=birth, age=age)
        female = record.female
        if diagnosis is DEFAULT:
            diagnosis = rng.choice(
                ((BIPOLAR_DEPRESSION,), (BIPOLAR_DEPRESSION, F31_4), (F31_3,), (BIPOLAR_DEPRESSION, F31_5))
            )
            if rng.random() < 0.5:  # the long-standing diagnosis too, from age 15 at the earliest
                record.condition(BIPOLAR, onset=days_ago(rng.randint(365, max(366, (_age(record) - 15) * 365))))
        if diagnosis:
            record.condition(*diagnosis, onset=days_ago(rng.randint(20, 90)))
        if drugs is DEFAULT:
            drugs = (rng.choice(MOOD_DRUGS),) + ((QUETIAPINE,) if rng.random() < 0.3 else ())
        for drug in drugs:
            record.medication(drug, days_ago(rng.randint(200, 2500)))
        lab_day = days_ago(lab_age if lab_age is not None else rng.randint(3, 40))
        if wbc is DEFAULT:
            wbc = (round(clamp(rng.gauss(6.8, 1.3), 4.3, 10.5), 1), "10*3/uL")
        if wbc is not None:
            low, high = _wbc_range(wbc[1])
            record.measurement(LEUKOCYTES, wbc[0], wbc[1], lab_day, low=low, high=high)
        if plt is DEFAULT:
            plt = (round(clamp(rng.gauss(255, 50), 160, 410)), "10*3/uL")
        if plt is not None:
            record.measurement(PLATELETS, plt[0], plt[1], lab_day, low=150, high=400)
        if hgb is DEFAULT:
            grams = clamp(rng.gauss(13.4, 0.8) if female else rng.gauss(14.8, 0.9), 11.8, 17.0)
            hgb = (round(grams, 1), "g/dL")
        if hgb is not None:
            low, high = _hgb_range(hgb[1], female)
            record.measurement(HAEMOGLOBIN, hgb[0], hgb[1], lab_day, low=low, high=high)
        if rbc is DEFAULT:
            rbc = (round(clamp(rng.gauss(4.5, 0.3) if female else rng.gauss(5.0, 0.3), 3.9, 5.8), 2), "10*6/uL")
        if rbc is not None:
            record.measurement(ERYTHROCYTES, rbc[0], rbc[1], lab_day, low=3.8 if female else 4.2, high=5.7)
        if tpo is DEFAULT:
            tpo = (round(clamp(rng.lognormvariate(2.2, 0.5), 1, 30)), 34, rng.choice(("N", None)))
        if tpo is not None:
            value, tpo_high, interpretation = tpo
            record.measurement(ANTI_TPO, value, "[IU]/mL", lab_day, high=tpo_high, interpretation=interpretation)
        # DEPIL-2 asks for both thyroid antibodies "at inclusion": a candidate's work-up has both.
        if tg is DEFAULT:
            tg = (round(clamp(rng.lognormvariate(2.8, 0.6), 2, 100)), "N")
        if tg is not None:
            record.measurement(ANTI_TG, tg[0], "[IU]/mL", lab_day, high=115, interpretation=tg[1])
        madrs_day = days_ago(rng.randint(2, 25))
        if madrs is DEFAULT:
            madrs = rng.randint(20, 34)
        if madrs is not None:
            record.score(MADRS_TOTAL, madrs, madrs_day)
        if item10 is DEFAULT:  # the suicide item is read at screening whenever the MADRS is
            item10 = rng.randint(0, 2)
        if item10 is not None:
            record.score(MADRS_ITEM_10, item10, madrs_day)
        if hcg is DEFAULT:
            hcg = False if female and _age(record) < 50 else None
        if hcg is not None:
            record.presence(HCG, hcg, days_ago(rng.randint(3, 25)))
        return record

    # ------------------------------------------------------------------ ALS (MIROCALS)

    def als(
        self,
        why: str,
        expect: dict[str, str] | None = None,
        *,
        birth: date | None = None,
        age: int | None = None,
        diagnosis: tuple[Coding, ...] = (ALS,),
        onset_months: float | None = DEFAULT,
        svc: int | None = DEFAULT,
        plt: int = DEFAULT,
    ) -> PatientRecord:
        """A recently diagnosed, riluzole-naive ALS patient who passes MIROCALS unless told otherwise."""
        rng = self.rng
        record = self.patient(why, expect or {"mirocals": ELIGIBLE}, birth=birth, age=age, ages=(42, 72))
        if onset_months is DEFAULT:
            onset_months = rng.uniform(5, 20)
        onset = None if onset_months is None else days_ago(round(onset_months * 30.44))
        record.condition(*diagnosis, onset=onset)
        lab_day = days_ago(rng.randint(5, 45))
        record.measurement(LEUKOCYTES, round(rng.uniform(5.0, 9.0), 1), "10*3/uL", lab_day, low=4.0, high=10.0)
        if plt is DEFAULT:
            plt = round(rng.uniform(170, 360))
        record.measurement(PLATELETS, plt, "10*3/uL", lab_day, low=150, high=400)
        if svc is DEFAULT:
            svc = round(clamp(rng.gauss(90, 11), 72, 120))
        if svc is not None:
            record.measurement(SVC, svc, "%", days_ago(rng.randint(5, 60)), category="exam")
        if rng.random() < 0.6:
            record.measurement(NFL_SERUM, round(rng.lognormvariate(4.0, 0.4), 1), "pg/mL", lab_day)
        if rng.random() < 0.3:
            record.measurement(PNFH_CSF, round(rng.lognormvariate(7.94, 0.55)), "pg/mL", lab_day)
        return record

    # ------------------------------------------------------------------ SLE (MSC-SLE)

    def sle(
        self,
        why: str,
        expect: dict[str, str] | None = None,
        *,
        birth: date | None = None,
        age: int | None = None,
        diagnosis: tuple[Coding, ...] = (SLE,),
        ana: bool = True,
        sledai: int = DEFAULT,
        sledai_age: int = DEFAULT,
        prednisone: tuple[date, date | None, float] | None = DEFAULT,
        second_line: tuple[Coding, date] | None = DEFAULT,
    ) -> PatientRecord:
        """A refractory, active lupus patient (ANA positive) who passes MSC-SLE unless told otherwise."""
        rng = self.rng
        record = self.patient(
            why,
            expect or {"msc-sle": ELIGIBLE},
            gender="male" if rng.random() < 0.1 else "female",
            birth=birth,
            age=age,
            ages=(22, 60),
        )
        record.condition(*diagnosis, onset=days_ago(rng.randint(2 * 365, 15 * 365)))
        lab_day = days_ago(rng.randint(5, 40))
        record.presence(ANA, ana, days_ago(rng.randint(60, 700)))
        record.measurement(LEUKOCYTES, round(rng.uniform(3.2, 7.5), 1), "10*3/uL", lab_day, low=4.0, high=10.0)
        record.measurement(PLATELETS, round(rng.uniform(120, 330)), "10*3/uL", lab_day, low=150, high=400)
        record.measurement(HAEMOGLOBIN, round(rng.uniform(10.2, 13.8), 1), "g/dL", lab_day, low=12.0, high=16.0)
        if sledai is DEFAULT:
            sledai = rng.choice((8, 10, 12, 14, 16))
        if sledai_age is DEFAULT:
            sledai_age = rng.randint(3, 25)
        record.score(SELENA, sledai, days_ago(sledai_age))
        if prednisone is DEFAULT:
            prednisone = (days_ago(rng.randint(120, 900)), None, rng.choice((10, 15, 20)))
        if prednisone is not None:
            start, end, dose = prednisone
            record.medication(PREDNISONE, start, end, dose_mg=dose)
        if second_line is DEFAULT:
            second_line = (MYCOPHENOLATE, days_ago(rng.randint(150, 900)))
        if second_line is not None:
            record.medication(second_line[0], second_line[1])
        record.medication(HYDROXYCHLOROQUINE, days_ago(rng.randint(900, 3000)))
        return record


def _age(record: PatientRecord) -> int:
    birth = date.fromisoformat(record.resources[0]["birthDate"])
    return REFERENCE_DATE.year - birth.year - ((REFERENCE_DATE.month, REFERENCE_DATE.day) < (birth.month, birth.day))


def _wbc_range(ucum: str) -> tuple[float, float]:
    return (4000, 10000) if ucum == "/mm3" else (4.0, 10.0)


def _hgb_range(ucum: str, female: bool) -> tuple[float, float]:
    low, high = (12.0, 16.0) if female else (13.0, 17.0)
    if ucum == "mmol/L":
        return round(low * HB_MMOL_PER_G_DL, 1), round(high * HB_MMOL_PER_G_DL, 1)
    return low, high


def depil_cases(h: Population) -> None:
    """Bipolar depression: 19 patients who pass every computable DEPIL-2 criterion, then one failure each."""
    no = {"depil-2": INELIGIBLE}
    unknown = {"depil-2": UNKNOWN}
    # Eligible.
    p = h.bipolar("eligible; lithium; body temperature 37.9 Cel yesterday", gender="female", drugs=(LITHIUM,))
    p.measurement(TEMPERATURE, 37.9, "Cel", days_ago(1), category="vital-signs")
    p = h.bipolar(
        "eligible; French units (/mm3, G/L, mmol/L, T/L); an old WBC 3.2 (2026-06-20) is outside the 90-day lookback",
        gender="male",
        drugs=(VALPROIC_ACID, QUETIAPINE),
        wbc=(6900, "/mm3"),
        plt=(231, "10*9/L"),
        hgb=(9.2, "mmol/L"),
        rbc=(4.91, "10*12/L"),
    )
    p.measurement(LEUKOCYTES, 3.2, "10*3/uL", date(2026, 6, 20), low=4.0, high=10.0, interpretation="L")
    h.bipolar("eligible at the limit: MADRS total 18 (inclusion > 17)", madrs=18)
    h.bipolar("eligible at the limit: leukocytes 4.0 10*3/uL (exclusion < 4.0)", wbc=(4.0, "10*3/uL"))
    h.bipolar(
        "eligible at the limit: leukocytes 4000 /mm3 (= 4.0 10*3/uL, beware float conversion)", wbc=(4000, "/mm3")
    )
    h.bipolar("eligible at the limit: platelets 100 10*3/uL (exclusion < 100)", plt=(100, "10*3/uL"))
    h.bipolar("eligible at the limit: haemoglobin 10.0 g/dL (exclusion < 10.0)", hgb=(10.0, "g/dL"))
    h.bipolar(
        "eligible at the limit: haemoglobin 6.2 mmol/L (the protocol's own mmol/L limit; 9.99 g/dL if converted)",
        hgb=(6.2, "mmol/L"),
    )
    h.bipolar("eligible at the limit: erythrocytes 3.5 T/L (exclusion < 3.5)", rbc=(3.5, "10*12/L"))
    h.bipolar("eligible at the limit: 65 years old, 66th birthday tomorrow", birth=date(1960, 11, 2))
    h.bipolar("eligible at the limit: 18th birthday on the reference date", birth=date(2008, 11, 1))
    h.bipolar("eligible at the limit: anti-TPO 34 [IU]/mL = the reference high, interpretation N", tpo=(34, 34, "N"))
    h.bipolar("eligible at the limit: MADRS item 10 = 2 (exclusion > 2)", item10=2)
    p = h.bipolar("eligible: cancer with onset 2021-10-31, more than 5 years before the reference date")
    p.condition(MALIGNANCY, onset=date(2021, 10, 31), clinical="remission")
    p = h.bipolar(
        "eligible: carcinoma in situ of the cervix in 2024 (an exception to the cancer exclusion)", gender="female"
    )
    p.condition(CERVIX_IN_SITU, D06_9, onset=date(2024, 6, 10), clinical="resolved", abatement=date(2024, 8, 1))
    p = h.bipolar("eligible: squamous cell carcinoma of the skin in 2025 (an exception to the cancer exclusion)")
    p.condition(SKIN_SCC, C44_3, onset=date(2025, 3, 3), clinical="resolved", abatement=date(2025, 4, 15))
    p = h.bipolar("eligible at the limit: left another interventional study 31 days ago (2026-10-01)")
    p.other_study("off-study", date(2026, 3, 2), date(2026, 10, 1))
    p = h.bipolar("eligible at the limit: type 1 diabetes with HbA1c 9.0 % (exclusion > 9 %)")
    p.condition(TYPE_1_DIABETES, onset=days_ago(9000))
    p.medication(INSULIN, days_ago(3000))
    p.measurement(HBA1C, 9.0, "%", days_ago(40))
    p = h.bipolar("eligible at the limit: ibuprofen for 27 days only (exclusion: regular use >= 28 days)")
    p.medication(IBUPROFEN, date(2026, 10, 5))

    # One failing criterion each.
    h.bipolar("MADRS total 17 (inclusion > 17)", no, madrs=17)
    h.bipolar("leukocytes 3.99 10*3/uL", no, wbc=(3.99, "10*3/uL"))
    h.bipolar("leukocytes 3990 /mm3", no, wbc=(3990, "/mm3"))
    h.bipolar("platelets 99 10*3/uL", no, plt=(99, "10*3/uL"))
    h.bipolar("haemoglobin 9.9 g/dL", no, hgb=(9.9, "g/dL"))
    h.bipolar("haemoglobin 6.1 mmol/L", no, hgb=(6.1, "mmol/L"))
    h.bipolar("erythrocytes 3.49 10*6/uL", no, rbc=(3.49, "10*6/uL"))
    h.bipolar("66th birthday on the reference date", no, birth=date(1960, 11, 1))
    h.bipolar("17 years old: 18th birthday the day after the reference date", no, birth=date(2008, 11, 2))
    h.bipolar("anti-TPO 35 above the reference high 34, no interpretation", no, tpo=(35, 34, None))
    h.bipolar("anti-TPO 40 with interpretation H and no reference range", no, tpo=(40, None, "H"))
    h.bipolar("anti-TG 180 [IU]/mL above the reference high 115 (H)", no, tg=(180, "H"))
    h.bipolar("MADRS item 10 = 3 (suicide risk)", no, item10=3)
    p = h.bipolar("C-SSRS suicidal ideation 4 (> 2)", no)
    p.score(CSSRS_IDEATION, 4, days_ago(6))
    p = h.bipolar("pregnant (Condition 77386006, active)", no, gender="female", age=31, hcg=None)
    p.condition(PREGNANCY, onset=date(2026, 8, 20))
    h.bipolar("urine hCG positive 9 days ago", no, gender="female", age=27, hcg=True)
    p = h.bipolar("cancer with onset 2021-11-02: within 5 years by one day", no)
    p.condition(MALIGNANCY, onset=date(2021, 11, 2), clinical="remission")
    p = h.bipolar("breast cancer in 2024 (SNOMED 254837009 and ICD-10 C50.9)", no, gender="female")
    p.condition(BREAST_CANCER, C50_9, onset=date(2024, 2, 12), clinical="remission")
    p = h.bipolar("HIV infection (SNOMED)", no)
    p.condition(HIV, onset=days_ago(4000))
    p = h.bipolar("HIV disease coded in ICD-10 only (B20)", no)
    p.condition(B20, onset=days_ago(2500))
    p = h.bipolar("Parkinson's disease", no, age=58)
    p.condition(PARKINSON, onset=days_ago(1500))
    p = h.bipolar("Alzheimer's disease", no, age=62)
    p.condition(ALZHEIMER, onset=days_ago(700))
    p = h.bipolar("methotrexate (L04AX03) for rheumatoid arthritis: immunosuppressant", no)
    p.condition(RHEUMATOID_ARTHRITIS, onset=days_ago(3000))
    p.medication(METHOTREXATE, days_ago(900))
    p = h.bipolar("mycophenolate (L04AA06) for a year: immunosuppressant", no)
    p.medication(MYCOPHENOLATE, days_ago(365))
    p = h.bipolar("ibuprofen every day since 2026-04-01 (regular anti-inflammatory, >= 28 days)", no)
    p.medication(IBUPROFEN, date(2026, 4, 1))
    p = h.bipolar("pneumonia on amoxicillin since 2026-10-27 (active infection on antibiotics)", no)
    p.condition(PNEUMONIA, onset=date(2026, 10, 26))
    p.medication(AMOXICILLIN, date(2026, 10, 27), date(2026, 11, 3))
    p = h.bipolar("kidney transplant (ICD-10 Z94.0)", no)
    p.condition(KIDNEY_TRANSPLANT, onset=days_ago(2200))
    p = h.bipolar("chronic kidney disease stage 5 (organ failure, ICD-10 N18.5)", no)
    p.condition(CKD_5, onset=days_ago(800))
    p = h.bipolar("type 2 diabetes with HbA1c 9.4 % (uncontrolled)", no)
    p.condition(TYPE_2_DIABETES, onset=days_ago(3000))
    p.medication(METFORMIN, days_ago(2900))
    p.measurement(HBA1C, 9.4, "%", days_ago(30))
    p = h.bipolar("fever: 38.3 Cel yesterday", no)
    p.measurement(TEMPERATURE, 38.3, "Cel", days_ago(1), category="vital-signs")
    h.bipolar("no mood stabiliser nor antidepressant", no, drugs=())
    p = h.bipolar("lithium stopped on 2025-06-30, nothing since", no, drugs=())
    p.medication(LITHIUM, date(2021, 3, 1), date(2025, 6, 30))
    h.bipolar(
        "bipolar disorder in a manic episode (F31.1), no depressive-episode code",
        no,
        diagnosis=(BIPOLAR, F31_1),
        madrs=19,
    )
    h.bipolar(
        "unipolar depression (35489007, F32.2): not bipolar", no, diagnosis=(DEPRESSION, F32_2), drugs=(SERTRALINE,)
    )
    p = h.bipolar("bipolar depression resolved in June (clinicalStatus resolved)", no, diagnosis=())
    p.condition(BIPOLAR_DEPRESSION, onset=date(2026, 2, 1), clinical="resolved", abatement=date(2026, 6, 15))
    p = h.bipolar("in another interventional study now (on-study since 2026-09-01)", no)
    p.other_study("on-study", date(2026, 9, 1))
    p = h.bipolar("left another interventional study 30 days ago (2026-10-02)", no)
    p.other_study("off-study", date(2026, 4, 1), date(2026, 10, 2))
    p = h.bipolar("MADRS 26 on 2026-10-05 then 16 on 2026-10-28: the latest total counts", no, madrs=None)
    p.score(MADRS_TOTAL, 26, date(2026, 10, 5))
    p.score(MADRS_TOTAL, 16, date(2026, 10, 28))

    # Missing data: the evaluator cannot decide.
    h.bipolar("no leukocyte count", unknown, wbc=None)
    h.bipolar(
        "no laboratory results at all", unknown, wbc=None, plt=None, hgb=None, rbc=None, tpo=None, tg=None, hcg=None
    )
    h.bipolar("no MADRS", unknown, madrs=None, item10=None)
    p = h.bipolar("MADRS only 45 days old (outside the 30-day lookback)", unknown, madrs=None, item10=None)
    p.score(MADRS_TOTAL, 25, days_ago(45))
    h.bipolar("all labs 120 days old (outside the 90-day lookback)", unknown, lab_age=120, hcg=None)


# One clear failure (no boundary) for the background bipolar patients.
BACKGROUND_FAILURES: dict[str, Callable[[Population, str], PatientRecord]] = {
    "MADRS below 18": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, madrs=h.rng.randint(6, 15)),
    "leukopenia": lambda h, why: h.bipolar(
        why, {"depil-2": INELIGIBLE}, wbc=(round(h.rng.uniform(2.4, 3.7), 1), "10*3/uL")
    ),
    "thrombocytopenia": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, plt=(h.rng.randint(45, 92), "10*3/uL")),
    "anaemia": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, hgb=(round(h.rng.uniform(7.6, 9.6), 1), "g/dL")),
    "anti-TPO positive": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, tpo=(h.rng.randint(60, 600), 34, "H")),
    "suicide risk (MADRS item 10)": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, item10=h.rng.randint(3, 5)),
    "over 65": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, age=h.rng.randint(67, 84)),
    "no mood stabiliser nor antidepressant": lambda h, why: h.bipolar(why, {"depil-2": INELIGIBLE}, drugs=()),
    "immunosuppressant": lambda h, why: _with_drug(h, why, h.rng.choice((METHOTREXATE, MYCOPHENOLATE, AZATHIOPRINE))),
    "recent cancer": lambda h, why: _with_condition(h, why, h.rng.choice(OTHER_CANCERS)),
    "HIV": lambda h, why: _with_condition(h, why, HIV),
}


def _with_drug(h: Population, why: str, drug: Coding) -> PatientRecord:
    record = h.bipolar(why, {"depil-2": INELIGIBLE})
    record.medication(drug, days_ago(h.rng.randint(100, 1500)))
    return record


def _with_condition(h: Population, why: str, coding: Coding) -> PatientRecord:
    record = h.bipolar(why, {"depil-2": INELIGIBLE})
    record.condition(coding, onset=days_ago(h.rng.randint(100, 1500)))
    return record


def background_bipolar(h: Population, count: int) -> None:
    kinds = list(BACKGROUND_FAILURES)
    for _ in range(count):
        kind = h.rng.choice(kinds)
        BACKGROUND_FAILURES[kind](h, f"background: {kind}")


def als_cases(h: Population) -> None:
    """ALS: MIROCALS candidates at each computable criterion."""
    no = {"mirocals": INELIGIBLE}
    for _ in range(3):
        h.als("eligible")
    h.als("eligible; SNOMED and ICD-10 G12.21", diagnosis=(ALS, G12_21))
    h.als("eligible; ICD-10 G12.21 only", diagnosis=(G12_21,))
    h.als("eligible at the limit: 75 years old, 76th birthday tomorrow", birth=date(1950, 11, 2))
    h.als("eligible at the limit: slow vital capacity 70 % (inclusion >= 70)", svc=70)
    h.als("eligible at the limit: onset 23 months ago", onset_months=23)
    h.als("76th birthday on the reference date (inclusion < 76)", no, birth=date(1950, 11, 1))
    h.als("slow vital capacity 69 %", no, svc=69)
    h.als("onset 29 months ago (disease duration > 24 months)", no, onset_months=29)
    p = h.als("on riluzole since 2026-07-01 (not riluzole-naive)", no)
    p.medication(RILUZOLE, date(2026, 7, 1))
    p = h.als("riluzole taken in 2025 then stopped (not riluzole-naive: ever)", no)
    p.medication(RILUZOLE, date(2025, 2, 1), date(2025, 5, 1))
    p = h.als("Parkinson's disease as well (other neurodegenerative disease)", no)
    p.condition(PARKINSON, onset=days_ago(2000))
    h.als("platelets 62 10*3/uL (lumbar puncture contraindicated)", no, plt=62)
    p = h.als("rheumatoid arthritis (autoimmune disorder)", no)
    p.condition(RHEUMATOID_ARTHRITIS, onset=days_ago(4000))
    h.als(
        "ICD-10 G12.2 only (motor neuron disease, broader than ALS): not an ALS code of the spec",
        no,
        diagnosis=(G12_2,),
    )
    h.als("no slow vital capacity", {"mirocals": UNKNOWN}, svc=None)
    h.als("ALS without an onset date (disease duration unknown)", {"mirocals": UNKNOWN}, onset_months=None)


def sle_cases(h: Population) -> None:
    """SLE: MSC-SLE candidates at each computable criterion."""
    no = {"msc-sle": INELIGIBLE}
    h.sle("eligible")
    h.sle("eligible; SNOMED and ICD-10 M32.1", diagnosis=(SLE, M32_1))
    h.sle(
        "eligible; ICD-10 M32.9 only, methotrexate coded L01BA01",
        diagnosis=(M32_9,),
        second_line=(METHOTREXATE_L01, days_ago(400)),
    )
    h.sle("eligible at the limit: SELENA-SLEDAI 6 (inclusion >= 6)", sledai=6)
    h.sle("eligible at the limit: 70 years old, 71st birthday tomorrow", birth=date(1955, 11, 2))
    h.sle(
        "eligible for the computable criteria; prednisone 5 mg/day is below 6 (a manual criterion)",
        prednisone=(days_ago(300), None, 5),
    )
    h.sle(
        "eligible: a past 60-day prednisone course (ever, >= 28 days) and azathioprine for 4 months",
        prednisone=(date(2025, 1, 10), date(2025, 3, 11), 20),
        second_line=(AZATHIOPRINE, days_ago(122)),
    )
    h.sle("SELENA-SLEDAI 5", no, sledai=5)
    h.sle("71st birthday on the reference date (inclusion 18 to 70)", no, birth=date(1955, 11, 1))
    h.sle("antinuclear antibodies negative", no, ana=False)
    h.sle("prednisone for 17 days only (since 2026-10-15)", no, prednisone=(date(2026, 10, 15), None, 20))
    h.sle("mycophenolate for 2 months only (since 2026-09-01)", no, second_line=(MYCOPHENOLATE, date(2026, 9, 1)))
    h.sle("SELENA-SLEDAI only 45 days old (outside the 30-day lookback)", {"msc-sle": UNKNOWN}, sledai_age=45)


OTHER_PROFILES: tuple[tuple[Coding, tuple[Coding, ...]], ...] = (
    (HYPERTENSION, (AMLODIPINE,)),
    (TYPE_2_DIABETES, (METFORMIN,)),
    (ASTHMA, ()),
    (SCHIZOPHRENIA, ()),
    (DEPRESSION, (SERTRALINE,)),
    (HYPOTHYROIDISM, (LEVOTHYROXINE,)),
    (ANXIETY, ()),
)


def other_patients(h: Population, count: int) -> None:
    """Patients who are candidates for none of the studies."""
    rng = h.rng
    for _ in range(count):
        coding, drugs = rng.choice(OTHER_PROFILES)
        record = h.patient(f"background: {coding[2].lower()}", {}, ages=(20, 85))
        record.condition(coding, onset=days_ago(rng.randint(200, 6000)))
        for drug in drugs:
            record.medication(drug, days_ago(rng.randint(100, 3000)))
        if rng.random() < 0.7:
            lab_day = days_ago(rng.randint(3, 200))
            record.measurement(LEUKOCYTES, round(rng.uniform(4.0, 10.5), 1), "10*3/uL", lab_day, low=4.0, high=10.0)
            record.measurement(PLATELETS, round(rng.uniform(150, 400)), "10*3/uL", lab_day, low=150, high=400)
        if coding == DEPRESSION:
            record.score(MADRS_TOTAL, rng.randint(18, 32), days_ago(rng.randint(2, 25)))


def other_study() -> dict[str, Any]:
    return {
        "resourceType": "ResearchStudy",
        "id": OTHER_STUDY,
        "title": "Another interventional study at the hospital (synthetic)",
        "status": "active",
        "primaryPurposeType": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/research-study-prim-purp-type", "code": "treatment"}
            ]
        },
        "phase": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/research-study-phase", "code": "phase-3"}]
        },
        "category": [{"text": "Interventional"}],
        "period": {"start": "2025-09-01"},
    }


def population(rng: random.Random) -> list[PatientRecord]:
    """The designed cases first (stable ids), then the random background."""
    h = Population(rng)
    depil_cases(h)
    background_bipolar(h, 36)
    als_cases(h)
    sle_cases(h)
    other_patients(h, 150 - len(h.records))
    return h.records


def bundle(rng: random.Random) -> tuple[dict[str, Any], list[PatientRecord]]:
    """The transaction Bundle (PUT Type/id) and the patients with their expected outcomes."""
    records = population(rng)
    resources = [other_study()] + [resource for record in records for resource in record.resources]
    problems = []
    for resource in resources:
        try:
            validate_resource(resource)
        except FhirError as error:
            problems.append(f"{resource['resourceType']}/{resource['id']}: {error}")
    if problems:
        raise ValueError("invalid synthetic resources:\n" + "\n".join(problems))
    entries = [
        {
            "fullUrl": f"{BASE_URL}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for resource in resources
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, records
