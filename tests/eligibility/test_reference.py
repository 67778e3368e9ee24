"""The reference evaluator, node by node at each boundary, and against the hospital population's expectations."""

from __future__ import annotations

import itertools
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.eligibility.criteria import Criterion, Eligibility, Expression, Window
from app.eligibility.dates import date_span, minus_window, whole_years
from app.eligibility.outcome import CriterionResult, Evidence, PatientResult, outcome_of, status_of
from app.eligibility.reference import PatientData, evaluate, evaluate_patient, group_by_patient
from app.mapping.study_spec import load_studies
from app.synthetic import hospital
from app.synthetic.generator import DEFAULT_SEED, HOSPITAL_BUNDLE, rng_for

ROOT = Path(__file__).resolve().parents[2]
D = date(2026, 11, 1)  # the screening date of every test (and the generator's reference date)
STUDY = "ResearchStudy/depil-2"

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
MEASURE = "https://trialbridge.dev/fhir/CodeSystem/measure"
LOCAL_LAB = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


# ------------------------------------------------------------------------------------------- resource builders

_counter = itertools.count(1)


def _id(kind: str) -> str:
    return f"{kind}-{next(_counter)}"


def patient(birth: str | None = "1980-05-17", gender: str | None = "female", pid: str = "p1") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if birth is not None:
        resource["birthDate"] = birth
    if gender is not None:
        resource["gender"] = gender
    return resource


def concept(*codings: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code} for system, code in codings]}


def condition(
    *codings: tuple[str, str],
    onset: str | None = None,
    clinical: str | None = "active",
    verification: str = "confirmed",
    recorded: str | None = None,
    rid: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid or _id("cond"),
        "verificationStatus": concept(("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)),
        "code": concept(*codings),
        "subject": {"reference": "Patient/p1"},
    }
    if clinical is not None:
        resource["clinicalStatus"] = concept(("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical))
    if onset is not None:
        resource["onsetDateTime"] = onset
    if recorded is not None:
        resource["recordedDate"] = recorded
    return resource


def quantity(value: float, code: str | None, system: str | None = UCUM) -> dict[str, Any]:
    result: dict[str, Any] = {"value": value, "unit": code}
    if code is not None and system is not None:
        result |= {"system": system, "code": code}
    return result


def observation(
    *codings: tuple[str, str],
    when: str | None,
    value: float | None = None,
    unit: str | None = None,
    status: str = "final",
    high: dict[str, Any] | None = None,
    interpretation: str | None = None,
    coded: str | None = None,
    rid: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or _id("obs"),
        "status": status,
        "code": concept(*codings),
        "subject": {"reference": "Patient/p1"},
    }
    if when is not None:
        resource["effectiveDateTime"] = when
    if value is not None:
        resource["valueQuantity"] = quantity(value, unit)
    if coded is not None:
        resource["valueCodeableConcept"] = concept((SNOMED, coded))
    if high is not None:
        resource["referenceRange"] = [{"high": high}]
    if interpretation is not None:
        resource["interpretation"] = [concept((INTERPRETATION, interpretation))]
    return resource


def statement(
    code: str,
    start: str | None,
    end: str | None = None,
    status: str = "active",
    rid: str | None = None,
    system: str = ATC,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": rid or _id("med"),
        "status": status,
        "medicationCodeableConcept": concept((system, code)),
        "subject": {"reference": "Patient/p1"},
    }
    if start is not None or end is not None:
        resource["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    return resource


def research_subject(
    status: str, start: str | None, end: str | None = None, study: str = "ResearchStudy/other"
) -> dict[str, Any]:
    period = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    resource: dict[str, Any] = {
        "resourceType": "ResearchSubject",
        "id": _id("rs"),
        "status": status,
        "study": {"reference": study},
        "individual": {"reference": "Patient/p1"},
    }
    if period:
        resource["period"] = period
    return resource


def expression(node: dict[str, Any]) -> Expression:
    return Expression.model_validate(node)


def truth(node: dict[str, Any], *resources: dict[str, Any], as_of: date = D) -> bool | None:
    data = PatientData([patient(), *resources], as_of, STUDY)
    return evaluate(expression(node), data).truth


def verdict_evidence(node: dict[str, Any], *resources: dict[str, Any]) -> list[dict[str, Any]]:
    data = PatientData([patient(), *resources], D, STUDY)
    return [e.to_json() for e in evaluate(expression(node), data).evidence]


# ------------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("day", "window", "start"),
    [
        (date(2026, 11, 1), Window(days=90), date(2026, 8, 3)),
        (date(2026, 11, 1), Window(days=30), date(2026, 10, 2)),
        (date(2026, 3, 31), Window(months=1), date(2026, 2, 28)),
        (date(2024, 3, 31), Window(months=1), date(2024, 2, 29)),
        (date(2026, 11, 1), Window(months=24), date(2024, 11, 1)),
        (date(2026, 1, 15), Window(months=13), date(2024, 12, 15)),
        (date(2028, 2, 29), Window(years=1), date(2027, 2, 28)),
        (date(2026, 11, 1), Window(years=5), date(2021, 11, 1)),
        (date(2026, 11, 1), Window(days=0), date(2026, 11, 1)),
    ],
)
def test_minus_window_is_calendar_arithmetic(day: date, window: Window, start: date) -> None:
    assert minus_window(day, window) == start


def test_date_span_is_the_utc_date() -> None:
    # the index tables store UTC ranges: a date-time counts on the UTC date of its instant
    assert date_span("2026-10-27T23:30:00-05:00") == (date(2026, 10, 28), date(2026, 10, 28))
    assert date_span("2026-10-27T00:30:00+14:00") == (date(2026, 10, 26), date(2026, 10, 26))
    assert date_span("2026-10-27T09:30:00+02:00") == (date(2026, 10, 27), date(2026, 10, 27))
    assert date_span("2026-10-27") == (date(2026, 10, 27), date(2026, 10, 27))
    assert date_span("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert date_span("1960") == (date(1960, 1, 1), date(1960, 12, 31))
    assert date_span("2026-02-30") is None
    assert date_span(None) is None


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (date(1960, 11, 2), D, 65),  # 66th birthday tomorrow
        (date(1960, 11, 1), D, 66),  # 66th birthday today
        (date(2008, 11, 1), D, 18),
        (date(2008, 11, 2), D, 17),
        (date(2000, 2, 29), date(2027, 2, 28), 26),
        (date(2000, 2, 29), date(2027, 3, 1), 27),
    ],
)
def test_whole_years(born: date, on: date, age: int) -> None:
    assert whole_years(born, on) == age


# ------------------------------------------------------------------------------------------- age and sex

AGE_18_65 = {"age": {"min": 18, "max": 65}}


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1960-11-02", True),  # 65, 66th birthday tomorrow
        ("1960-11-01", False),  # 66th birthday on the screening date: 66
        ("2008-11-01", True),  # 18th birthday today
        ("2008-11-02", False),  # 17
        ("1960", None),  # 65 or 66
        ("1960-10", False),  # 66 whatever the day
        ("1960-11", None),  # 65 (born 2-30 Nov) or 66 (born 1 Nov)
        ("1961", True),  # 64 or 65
        ("1930", False),  # 95 or 96
        (None, None),
    ],
)
def test_age_in_whole_years_and_partial_birth_dates(birth: str | None, expected: bool | None) -> None:
    data = PatientData([patient(birth=birth)], D, STUDY)
    assert evaluate(expression(AGE_18_65), data).truth is expected


def test_age_below_is_exclusive() -> None:
    node = {"age": {"min": 18, "below": 76}}
    assert evaluate(expression(node), PatientData([patient("1950-11-02")], D, STUDY)).truth is True
    assert evaluate(expression(node), PatientData([patient("1950-11-01")], D, STUDY)).truth is False


def test_age_evidence() -> None:
    data = PatientData([patient("1960-11-02")], D, STUDY)
    assert evaluate(expression(AGE_18_65), data).evidence == (
        Evidence(reference="Patient/p1", date="1960-11-02", value=65, unit="a"),
    )
    data = PatientData([patient("1960")], D, STUDY)
    assert evaluate(expression(AGE_18_65), data).evidence == (
        Evidence(reference="Patient/p1", date="1960", note="birthDate 1960 allows ages 65 to 66 on 2026-11-01"),
    )


def test_sex() -> None:
    node = expression({"sex": {"administrative": ["female"]}})
    assert evaluate(node, PatientData([patient(gender="female")], D, STUDY)).truth is True
    assert evaluate(node, PatientData([patient(gender="male")], D, STUDY)).truth is False
    assert evaluate(node, PatientData([patient(gender=None)], D, STUDY)).truth is None


# ------------------------------------------------------------------------------------------- observations

MADRS = {"observation": {"codes": ["measure|madrs-total"], "comparator": ">", "value": 17, "unit": "{score}",
                         "lookback": {"days": 30}}}  # fmt: skip
LEUKOCYTES = {"observation": {"codes": ["loinc|6690-2"], "comparator": "<", "value": 4.0, "unit": "10*3/uL",
                              "lookback": {"days": 90}}}  # fmt: skip
HAEMOGLOBIN = {"observation": {"codes": ["loinc|718-7"], "comparator": "<", "value": 10.0, "unit": "g/dL",
                               "alternatives": [{"value": 6.2, "unit": "mmol/L"}],
                               "lookback": {"days": 90}}}  # fmt: skip
ERYTHROCYTES = {"observation": {"codes": ["loinc|789-8"], "comparator": "<", "value": 3.5, "unit": "10*12/L",
                                "lookback": {"days": 90}}}  # fmt: skip
FEVER = {"observation": {"codes": ["loinc|8310-5"], "comparator": ">=", "value": 38, "unit": "Cel",
                         "lookback": {"days": 3}, "missing": "absent"}}  # fmt: skip
ANTI_TPO = {"observation": {"codes": ["loinc|8099-4"], "positive": True, "lookback": {"days": 90}}}
WBC = (LOINC, "6690-2")
MADRS_TOTAL = (MEASURE, "madrs-total")


@pytest.mark.parametrize(("score", "expected"), [(17, False), (18, True)])
def test_madrs_above_17(score: int, expected: bool) -> None:
    assert truth(MADRS, observation(MADRS_TOTAL, when="2026-10-20", value=score, unit="{score}")) is expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (3.99, "10*3/uL", True),
        (4.0, "10*3/uL", False),
        (3990, "/mm3", True),
        (4000, "/mm3", False),  # 4000 /mm3 is 4.0 10*3/uL, whatever the floating point says
        (4.0, "10*9/L", False),
        (3.99, "10*9/L", True),
        (3.99e9, "/L", True),
    ],
)
def test_leukocytes_in_any_unit(value: float, unit: str, expected: bool) -> None:
    assert truth(LEUKOCYTES, observation(WBC, when="2026-10-20", value=value, unit=unit)) is expected


def test_equal_quantities_reached_by_two_routes_are_equal() -> None:
    # 4.02 10*3/uL and 4020 /mm3 differ in the last bit once canonical: still not "<" one another
    node = {"observation": {**LEUKOCYTES["observation"], "value": 4020, "unit": "/mm3"}}
    assert truth(node, observation(WBC, when="2026-10-20", value=4.02, unit="10*3/uL")) is False
    assert truth(node, observation(WBC, when="2026-10-20", value=4.01, unit="10*3/uL")) is True


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (6.2, "mmol/L", False),  # the protocol's own mmol/L limit, although 6.2 / 0.6206 = 9.99 g/dL
        (6.1, "mmol/L", True),
        (10.0, "g/dL", False),
        (9.99, "g/dL", True),
        (100, "g/L", False),
        (99, "g/L", True),
    ],
)
def test_haemoglobin_alternative_unit(value: float, unit: str, expected: bool) -> None:
    assert truth(HAEMOGLOBIN, observation((LOINC, "718-7"), when="2026-10-20", value=value, unit=unit)) is expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(3.5, "10*12/L", False), (3.49, "10*12/L", True), (3.5, "10*6/uL", False), (3.49, "10*6/uL", True)],
)
def test_erythrocytes_tera_per_litre(value: float, unit: str, expected: bool) -> None:
    assert truth(ERYTHROCYTES, observation((LOINC, "789-8"), when="2026-10-20", value=value, unit=unit)) is expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"), [(38, "Cel", True), (37.9, "Cel", False), (100.4, "[degF]", True)]
)
def test_temperatures_convert_with_their_offset(value: float, unit: str, expected: bool) -> None:
    assert truth(FEVER, observation((LOINC, "8310-5"), when="2026-10-31", value=value, unit=unit)) is expected


def test_unit_not_convertible_is_unusable() -> None:
    wbc = observation(WBC, when="2026-10-20", value=3.0, unit="mg", rid="o1")
    assert truth(LEUKOCYTES, wbc) is None
    assert verdict_evidence(LEUKOCYTES, wbc) == [
        {"reference": "Observation/o1", "date": "2026-10-20", "code": "loinc|6690-2",
         "note": "unit 'mg' cannot be converted to 10*3/uL"},
    ]  # fmt: skip
    # a unit text without a UCUM code cannot be converted either
    text_only = observation(WBC, when="2026-10-20", rid="o2")
    text_only["valueQuantity"] = {"value": 3.0, "unit": "G/L"}
    assert truth(LEUKOCYTES, text_only) is None
    # a usable value decides even when another candidate is unusable
    assert truth(LEUKOCYTES, wbc, observation(WBC, when="2026-10-01", value=3.0, unit="10*3/uL")) is True


def test_value_integer_is_not_a_threshold_value() -> None:
    # value-quantity does not index valueInteger: such an Observation is a candidate without a usable value
    score = observation(MADRS_TOTAL, when="2026-10-20")
    score["valueInteger"] = 18
    assert truth(MADRS, score) is None


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-08-03T08:00:00+02:00", True),  # first day of the 90-day window
        ("2026-08-02T23:59:00+02:00", None),  # one day outside: as if absent (missing: unknown)
        ("2026-11-01T23:00:00+01:00", True),  # on the screening date
        ("2026-11-02T00:30:00+01:00", True),  # 1 November 23:30 UTC: on the screening date
        ("2026-11-02T01:30:00+01:00", None),  # 2 November 00:30 UTC: future-dated, ignored
        ("2026-08", None),  # partly in the window: a candidate, not usable
        ("2026-09", True),  # wholly in the window
    ],
)
def test_lookback_window(when: str, expected: bool | None) -> None:
    assert truth(LEUKOCYTES, observation(WBC, when=when, value=3.5, unit="10*3/uL")) is expected


def test_missing_absent_versus_unknown() -> None:
    assert truth(LEUKOCYTES) is None  # missing defaults to unknown
    assert truth(FEVER) is False  # missing: absent
    assert verdict_evidence(LEUKOCYTES) == [
        {"note": "no Observation coded loinc|6690-2 in the 90 days before 2026-11-01"}
    ]
    # a candidate that is not usable makes it unknown even with missing: absent
    assert truth(FEVER, observation((LOINC, "8310-5"), when="2026-10-31", value=38.5, unit="mg")) is None
    # so does a candidate without any date
    assert truth(FEVER, observation((LOINC, "8310-5"), when=None, value=38.5, unit="Cel")) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [("final", True), ("amended", True), ("corrected", True), ("preliminary", True), ("registered", None),
     ("cancelled", None), ("entered-in-error", None)],
)  # fmt: skip
def test_observation_status(status: str, expected: bool | None) -> None:
    assert truth(LEUKOCYTES, observation(WBC, when="2026-10-20", value=3.0, unit="10*3/uL", status=status)) is expected


def test_alias_codings() -> None:
    both = observation((LOCAL_LAB, "WBC"), WBC, when="2026-10-20", value=3.0, unit="10*3/uL")
    assert truth(LEUKOCYTES, both) is True
    local_node = {"observation": {**LEUKOCYTES["observation"], "codes": ["local-lab|WBC"]}}
    assert truth(local_node, both) is True
    assert truth(local_node, observation(WBC, when="2026-10-20", value=3.0, unit="10*3/uL")) is None


def test_latest_decides_and_ties_take_the_highest_value() -> None:
    earlier = observation(MADRS_TOTAL, when="2026-10-05", value=26, unit="{score}")
    later = observation(MADRS_TOTAL, when="2026-10-28", value=16, unit="{score}")
    assert truth(MADRS, earlier, later) is False
    same_day_low = observation(MADRS_TOTAL, when="2026-10-28T08:00:00+01:00", value=16, unit="{score}")
    same_day_high = observation(MADRS_TOTAL, when="2026-10-28T07:00:00+01:00", value=19, unit="{score}")
    assert truth(MADRS, same_day_low, same_day_high) is True  # same date part: a tie, the highest wins
    # across a unit and an alternative unit: 6.1 mmol/L ranks as 9.84 g/dL, above 9.5 g/dL
    low_g = observation((LOINC, "718-7"), when="2026-10-20", value=9.5, unit="g/dL")
    mmol = observation((LOINC, "718-7"), when="2026-10-20", value=6.1, unit="mmol/L", rid="hb-mmol")
    assert verdict_evidence(HAEMOGLOBIN, low_g, mmol)[0]["reference"] == "Observation/hb-mmol"


def test_which_any_and_all() -> None:
    values = [observation(MADRS_TOTAL, when=f"2026-10-{day}", value=v, unit="{score}")
              for day, v in ((10, 20), (15, 12), (20, 25))]  # fmt: skip
    node = MADRS["observation"]
    assert truth({"observation": {**node, "which": "any"}}, *values) is True
    assert truth({"observation": {**node, "which": "all"}}, *values) is False
    assert truth({"observation": {**node, "which": "all"}}, values[0], values[2]) is True
    assert truth({"observation": {**node, "which": "any"}}, values[1]) is False


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"value": 34, "unit": "[IU]/mL", "high": quantity(34, "[IU]/mL"), "interpretation": "N"}, False),
        ({"value": 35, "unit": "[IU]/mL", "high": quantity(34, "[IU]/mL")}, True),
        ({"value": 34, "unit": "[IU]/mL", "high": quantity(34, "[IU]/mL")}, False),  # at the high: negative
        ({"value": 35, "unit": "[IU]/mL", "high": quantity(34000, "[IU]/L")}, True),  # converted high
        ({"value": 35, "unit": "[IU]/mL", "high": {"value": 34}}, True),  # a bare number: the value's unit
        ({"value": 35, "unit": "[IU]/mL", "high": quantity(34, "mg")}, None),  # another unit: unusable
        ({"value": 40, "unit": "[IU]/mL", "interpretation": "H"}, True),
        ({"value": 400, "unit": "[IU]/mL", "high": quantity(34, "[IU]/mL"), "interpretation": "N"}, False),
        ({"coded": "10828004"}, True),
        ({"coded": "260385009"}, False),
        ({"value": 40, "unit": "[IU]/mL"}, None),  # no interpretation, no range: unusable
    ],
)
def test_positive_mode(kwargs: dict[str, Any], expected: bool | None) -> None:
    assert truth(ANTI_TPO, observation((LOINC, "8099-4"), when="2026-10-20", **kwargs)) is expected


def test_positive_false_asks_for_a_negative() -> None:
    negative = {"observation": {**ANTI_TPO["observation"], "positive": False}}
    assert truth(negative, observation((LOINC, "8099-4"), when="2026-10-20", interpretation="NEG")) is True
    assert truth(negative, observation((LOINC, "8099-4"), when="2026-10-20", interpretation="POS")) is False
    assert truth(negative) is None


def test_observation_evidence_shows_the_conversion() -> None:
    wbc = observation(WBC, when="2026-10-20T09:30:00+02:00", value=4000, unit="/mm3", rid="w")
    assert verdict_evidence(LEUKOCYTES, wbc) == [
        {"reference": "Observation/w", "date": "2026-10-20", "value": 4000, "unit": "/mm3", "code": "loinc|6690-2",
         "note": "4000 /mm3 = 4 10*3/uL"},
    ]  # fmt: skip
    tpo = observation((LOINC, "8099-4"), when="2026-10-20", value=35, unit="[IU]/mL", high=quantity(34, "[IU]/mL"),
                      rid="t")  # fmt: skip
    assert verdict_evidence(ANTI_TPO, tpo) == [
        {"reference": "Observation/t", "date": "2026-10-20", "value": True, "code": "loinc|8099-4",
         "note": "35 [IU]/mL > reference high 34"},
    ]  # fmt: skip


@given(st.integers(min_value=1, max_value=2000))
def test_the_unit_does_not_change_the_verdict(hundredths: int) -> None:
    in_micro = observation(WBC, when="2026-10-20", value=hundredths / 100, unit="10*3/uL")
    in_mm3 = observation(WBC, when="2026-10-20", value=hundredths * 10, unit="/mm3")
    assert truth(LEUKOCYTES, in_micro) is truth(LEUKOCYTES, in_mm3) is (hundredths < 400)


# ------------------------------------------------------------------------------------------- conditions

CANCER = {"condition": {"codes": ["snomed|363346000", "icd10|C00-C97"], "within": {"years": 5},
                        "exceptions": ["icd10|C44*", "icd10|D06*", "snomed|254651007", "snomed|92564006"]}}  # fmt: skip
BIPOLAR_DEPRESSION = {"condition": {"codes": ["snomed|191627008", "icd10|F31.3*"], "active_only": True}}
MALIGNANCY = (SNOMED, "363346000")


@pytest.mark.parametrize(
    ("codings", "onset", "expected"),
    [
        ((MALIGNANCY,), "2021-11-01", True),  # first day of the 5-year window
        ((MALIGNANCY,), "2021-10-31", False),  # a day before it
        ((MALIGNANCY,), "2021-11-02T10:00:00+01:00", True),
        (((ICD10, "C50.9"),), "2024-02-12", True),  # ICD-10 block C00-C97
        (((ICD10, "D06.9"),), "2024-06-10", None),  # not a cancer code at all: no candidate (missing: absent)
        ((MALIGNANCY, (ICD10, "D06.9")), "2024-06-10", None),  # in situ cervix: an exception
        (((SNOMED, "92564006"),), "2024-06-10", None),
        (((SNOMED, "254651007"), (ICD10, "C44.3")), "2025-03-03", None),  # skin squamous cell: an exception
        ((MALIGNANCY,), None, "unknown"),  # no date: cannot be placed in the window
        ((MALIGNANCY,), "2021", "unknown"),  # 2021 straddles 1 November 2021
        ((MALIGNANCY,), "2021-10", False),
        ((MALIGNANCY,), "2026-11-02", None),  # future-dated: ignored
    ],
)
def test_cancer_within_five_years(codings: tuple[tuple[str, str], ...], onset: str | None, expected: Any) -> None:
    found = truth(CANCER, condition(*codings, onset=onset, clinical="remission"))
    # None in the table: no candidate at all, so `missing` (absent) says false
    assert found is {True: True, False: False, None: False, "unknown": None}[expected]


def test_condition_recorded_date_when_no_onset() -> None:
    assert truth(CANCER, condition(MALIGNANCY, recorded="2024-01-01")) is True
    assert truth(CANCER, condition(MALIGNANCY, recorded="2019-01-01")) is False


@pytest.mark.parametrize(
    ("clinical", "verification", "expected"),
    [
        ("active", "confirmed", True),
        ("recurrence", "confirmed", True),
        ("relapse", "provisional", True),
        (None, "confirmed", True),  # no clinicalStatus: may be active
        ("resolved", "confirmed", False),
        ("remission", "confirmed", False),
        ("active", "refuted", False),  # not a candidate: no candidates, missing absent
        ("active", "entered-in-error", False),
    ],
)
def test_condition_active_only(clinical: str | None, verification: str, expected: bool) -> None:
    resource = condition((SNOMED, "191627008"), onset="2026-09-01", clinical=clinical, verification=verification)
    assert truth(BIPOLAR_DEPRESSION, resource) is expected


def test_condition_prefix_and_missing() -> None:
    assert truth(BIPOLAR_DEPRESSION, condition((ICD10, "F31.32"), onset="2026-09-01")) is True
    assert truth(BIPOLAR_DEPRESSION, condition((ICD10, "F31.1"), onset="2026-09-01")) is False
    duration = {"condition": {"codes": ["snomed|86044005"], "within": {"months": 24}, "missing": "unknown"}}
    assert truth(duration) is None
    assert truth(duration, condition((SNOMED, "86044005"), onset="2024-11-01")) is True
    assert truth(duration, condition((SNOMED, "86044005"), onset="2024-10-31")) is False
    assert truth(duration, condition((SNOMED, "86044005"))) is None
    # one qualifying candidate outweighs an undated one
    assert truth(duration, condition((SNOMED, "86044005")), condition((SNOMED, "86044005"), onset="2026-01-01"))


def test_condition_evidence() -> None:
    resolved = condition((SNOMED, "191627008"), onset="2026-02-01", clinical="resolved", rid="c1")
    assert verdict_evidence(BIPOLAR_DEPRESSION, resolved) == [
        {
            "reference": "Condition/c1",
            "date": "2026-02-01",
            "code": "snomed|191627008",
            "note": "clinicalStatus resolved",
        }
    ]
    assert verdict_evidence(BIPOLAR_DEPRESSION) == [{"note": "no Condition coded snomed|191627008, icd10|F31.3*"}]


# ------------------------------------------------------------------------------------------- medications

MOOD = {"medication": {"codes": ["atc|N05AN01", "atc|N06A*"]}}
NSAID_28 = {"medication": {"codes": ["atc|M01A*"], "min_duration": {"days": 28}}}
RILUZOLE_EVER = {"medication": {"codes": ["atc|N07XX02"], "ever": True}}


@pytest.mark.parametrize(
    ("start", "end", "status", "expected"),
    [
        ("2021-05-23", None, "active", True),  # ongoing
        ("2021-03-01", "2025-06-30", "completed", False),  # stopped
        ("2021-03-01", "2026-11-01", "active", True),  # ends on the screening date
        ("2021-03-01", "2026-10-31", "stopped", False),
        ("2026-11-02", None, "active", False),  # starts after the screening date
        ("2021-03-01", None, "completed", False),  # ended, when unknown: its start day only
        ("2021-03-01", None, "not-taken", False),
        ("2021-03-01", None, "entered-in-error", False),
        ("2021-03-01", None, "intended", False),
        ("2021-03-01", None, "on-hold", False),
    ],
)
def test_medication_current(start: str, end: str | None, status: str, expected: bool) -> None:
    assert truth(MOOD, statement("N05AN01", start, end, status)) is expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-10-05", None, False),  # 27 days up to the screening date
        ("2026-10-04", None, True),  # 28 days
        ("2026-04-01", None, True),
        ("2026-04-01", "2026-10-15", False),  # long, but not current
    ],
)
def test_medication_min_duration(start: str, end: str | None, expected: bool) -> None:
    assert truth(NSAID_28, statement("M01AE01", start, end)) is expected


def test_medication_ever_within_and_resource_types() -> None:
    assert truth(RILUZOLE_EVER, statement("N07XX02", "2025-02-01", "2025-05-01", "completed")) is True
    assert truth(RILUZOLE_EVER) is False
    assert truth(RILUZOLE_EVER, statement("N07XX02", "2026-11-02", None)) is False
    within = {"medication": {"codes": ["atc|J01*"], "within": {"days": 30}}}
    assert truth(within, statement("J01CA04", "2026-09-20", "2026-10-02", "completed")) is True
    assert truth(within, statement("J01CA04", "2026-09-20", "2026-10-01", "completed")) is False
    request = {"resourceType": "MedicationRequest", "id": "r", "status": "active", "intent": "order",
               "medicationCodeableConcept": concept((ATC, "N06AB06")), "subject": {"reference": "Patient/p1"},
               "authoredOn": "2026-11-01", "dispenseRequest": {"validityPeriod": {"start": "2026-09-01"}}}  # fmt: skip
    assert truth(MOOD, request) is True
    assert truth(MOOD, request | {"status": "cancelled"}) is False
    administration = {"resourceType": "MedicationAdministration", "id": "a", "status": "completed",
                      "medicationCodeableConcept": concept((ATC, "N06AB06")), "subject": {"reference": "Patient/p1"},
                      "effectiveDateTime": "2026-11-01T09:00:00+01:00"}  # fmt: skip
    assert truth(MOOD, administration) is True
    assert truth(MOOD, administration | {"effectiveDateTime": "2026-10-31"}) is False
    assert truth(MOOD, statement("N05AN01", None)) is None  # a use without a date
    assert truth({"medication": {**MOOD["medication"], "missing": "unknown"}}) is None


def test_medication_evidence() -> None:
    assert verdict_evidence(NSAID_28, statement("M01AE01", "2026-10-05", rid="m1")) == [
        {"reference": "MedicationStatement/m1", "date": "2026-10-05", "code": "atc|M01AE01",
         "note": "2026-10-05 to ongoing (27 days up to 2026-11-01): shorter than 28 days"},
        {"note": "no use of atc|M01A* on 2026-11-01 for 28 days or more"},
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- pregnancy, other study

PREGNANCY = {"pregnancy": {"within": {"days": 30}, "include_lactation": True}}
HCG = (LOINC, "2106-3")


def test_pregnancy() -> None:
    assert truth(PREGNANCY) is False
    assert truth(PREGNANCY, observation(HCG, when="2026-10-23", coded="10828004", interpretation="POS")) is True
    assert truth(PREGNANCY, observation(HCG, when="2026-10-01", coded="10828004")) is False  # outside 30 days
    assert truth(PREGNANCY, observation(HCG, when="2026-10-23", coded="260385009")) is False
    assert truth(PREGNANCY, condition((SNOMED, "77386006"), onset="2026-08-20")) is True  # active
    assert truth(PREGNANCY, condition((ICD10, "O80"), onset="2026-10-20", clinical="resolved")) is True
    assert truth(PREGNANCY, condition((ICD10, "O80"), onset="2025-10-20", clinical="resolved")) is False
    assert truth(PREGNANCY, condition((ICD10, "Z34.0"), onset="2026-10-20", verification="refuted")) is False
    no_lactation = {"pregnancy": {"include_lactation": False}}
    assert truth(PREGNANCY, condition((ICD10, "Z39.1"), onset="2026-10-20")) is True
    assert truth(no_lactation, condition((ICD10, "Z39.1"), onset="2026-10-20")) is False
    assert truth(no_lactation, condition((ICD10, "O92.7"), onset="2026-10-20")) is False
    assert truth(no_lactation, condition((ICD10, "O26.8"), onset="2026-10-20")) is True


@pytest.mark.parametrize(
    ("status", "start", "end", "study", "expected"),
    [
        ("off-study", "2026-03-02", "2026-10-01", "ResearchStudy/other", False),  # ended 31 days before
        ("off-study", "2026-04-01", "2026-10-02", "ResearchStudy/other", True),  # ended 30 days before
        ("on-study", "2026-09-01", None, "ResearchStudy/other", True),  # ongoing
        ("on-study", "2026-09-01", None, "http://example.org/fhir/ResearchStudy/other", True),
        ("follow-up", "2025-09-01", None, "ResearchStudy/other", True),
        ("on-study", "2026-09-01", None, STUDY, False),  # this very study
        ("on-study", "2026-09-01", None, "ResearchStudy/depil-2/_history/2", False),  # this study, a version of it
        # another server's ResearchStudy/depil-2: another study (references to this server are stored relative)
        ("on-study", "2026-09-01", None, "http://h.example/fhir/ResearchStudy/depil-2/_history/2", True),
        ("withdrawn", "2026-09-01", None, "ResearchStudy/other", False),
        ("screening", "2026-10-20", None, "ResearchStudy/other", False),
        ("pending-on-study", "2026-11-02", None, "ResearchStudy/other", False),  # future-dated
        ("off-study", "2026-10-10", None, "ResearchStudy/other", True),  # started in the window
        ("off-study", "2026-01-10", None, "ResearchStudy/other", None),  # ended when?
    ],
)
def test_other_study(status: str, start: str, end: str | None, study: str, expected: bool | None) -> None:
    node = {"other_study": {"within": {"days": 30}}}
    assert truth(node, research_subject(status, start, end, study)) is expected


# ------------------------------------------------------------------------------------------- what the index holds
# The rules below make the reference evaluator read exactly what the index tables hold (README, "Details the
# rules above leave open"), so that the SQL evaluator can agree with it.


def test_condition_onset_period_covers_its_range() -> None:
    onset = condition(MALIGNANCY, clinical="remission")
    # an onset period is when the onset happened: one straddling the window's start is only partly in it
    assert truth(CANCER, onset | {"onsetPeriod": {"start": "2021-06-01", "end": "2022-02-01"}}) is None
    assert truth(CANCER, onset | {"onsetPeriod": {"start": "2021-11-01", "end": "2022-02-01"}}) is True
    assert truth(CANCER, onset | {"onsetPeriod": {"start": "2021-01-01", "end": "2021-10-31"}}) is False
    # without an end, its start's first day: 2021 is 1 January 2021, before the window
    assert truth(CANCER, onset | {"onsetPeriod": {"start": "2021"}}) is False
    # a period without a start is no onset: the recorded date decides
    assert truth(CANCER, onset | {"onsetPeriod": {"end": "2022-02-01"}, "recordedDate": "2024-01-01"}) is True


def test_condition_status_codings_are_read_together() -> None:
    two = condition((SNOMED, "191627008"), onset="2026-09-01")
    two["verificationStatus"]["coding"].append({"system": "http://example.org/local", "code": "refuted"})
    assert truth(BIPOLAR_DEPRESSION, two) is False  # any refuted coding voids it: no candidate
    resolved = condition((SNOMED, "191627008"), onset="2026-09-01", clinical="resolved")
    resolved["clinicalStatus"]["coding"].append({"code": "relapse"})
    assert truth(BIPOLAR_DEPRESSION, resolved) is True  # any active coding: active


def test_observation_date_is_what_the_date_parameter_indexes() -> None:
    issued_only = observation(WBC, when=None, value=3.0, unit="10*3/uL")
    issued_only["issued"] = "2026-10-20T08:00:00Z"
    assert truth(LEUKOCYTES, issued_only) is None  # `issued` is not indexed: undated, not usable
    period = observation(WBC, when=None, value=3.0, unit="10*3/uL")
    assert truth(LEUKOCYTES, period | {"effectivePeriod": {"start": "2026-10-01", "end": "2026-10-02"}}) is True
    assert truth(LEUKOCYTES, period | {"effectivePeriod": {"start": "2026-07-30", "end": "2026-08-10"}}) is None
    assert truth(LEUKOCYTES, period | {"effectivePeriod": {"end": "2026-10-02"}}) is None  # no start: undated
    timing = {"event": ["2026-10-20T08:00:00Z", "2026-10-21T08:00:00Z"]}
    assert truth(LEUKOCYTES, period | {"effectiveTiming": timing}) is True
    timing = {"event": ["2026-07-20T08:00:00Z", "2026-10-21T08:00:00Z"]}
    assert truth(LEUKOCYTES, period | {"effectiveTiming": timing}) is None
    assert truth(LEUKOCYTES, period | {"effectiveInstant": "2026-10-20T08:00:00.123Z"}) is True


def test_positive_mode_reads_every_reference_high_and_coding() -> None:
    tpo = observation((LOINC, "8099-4"), when="2026-10-20", value=35, unit="[IU]/mL")
    ranges = [{"high": quantity(34, "[IU]/mL")}, {"high": quantity(40, "[IU]/mL")}, {"low": quantity(1, "[IU]/mL")}]
    assert truth(ANTI_TPO, tpo | {"referenceRange": ranges}) is False  # positive only above every high
    ranges = [{"high": quantity(34, "[IU]/mL")}, {"high": quantity(30, "mg")}, {"high": {"value": 20}}]
    assert truth(ANTI_TPO, tpo | {"referenceRange": ranges}) is True  # the high in mg cannot be compared
    both = observation((LOINC, "8099-4"), when="2026-10-20", coded="260385009")
    both["valueCodeableConcept"]["coding"].insert(0, {"system": SNOMED, "code": "10828004"})
    assert truth(ANTI_TPO, both) is True  # a positive coding wins over a negative one
    both["valueCodeableConcept"]["coding"].reverse()
    assert truth(ANTI_TPO, both) is True


def test_medication_periods_as_indexed() -> None:
    # a stopped use without an end covers its start's first day only (the index keeps no end for it)
    stopped = statement("J01CA04", "2026-10", None, "completed")
    assert truth({"medication": {"codes": ["atc|J01*"], "within": {"days": 31}}}, stopped) is True  # 1 October
    assert truth({"medication": {"codes": ["atc|J01*"], "within": {"days": 30}}}, stopped) is False
    # a validityPeriod without a start or an end does not count: authoredOn dates the request
    request = {"resourceType": "MedicationRequest", "id": "r", "status": "completed", "intent": "order",
               "medicationCodeableConcept": concept((ATC, "N06AB06")), "subject": {"reference": "Patient/p1"},
               "authoredOn": "2026-11-01", "dispenseRequest": {"validityPeriod": {}}}  # fmt: skip
    assert truth(MOOD, request) is True
    assert truth(MOOD, request | {"dispenseRequest": {"validityPeriod": {"end": "2026-12-01"}}}) is None  # no start


# ------------------------------------------------------------------------------------------- composites

TRUTHS = (True, False, None)
ORDER = {False: 0, None: 1, True: 2}  # Kleene: all_of is the minimum, any_of the maximum


def leaf(index: int, value: bool | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A condition node that is true (coded Condition present), false (absent, missing: absent) or unknown."""
    node = {"condition": {"codes": [f"snomed|{1000 + index}"], "missing": "unknown" if value is None else "absent"}}
    return node, [condition((SNOMED, str(1000 + index)))] if value else []


def composite(kind: str, values: tuple[bool | None, ...], n: int = 1) -> bool | None:
    nodes, resources = [], []
    for index, value in enumerate(values):
        node, found = leaf(index, value)
        nodes.append(node)
        resources += found
    wrapper = {"at_least": {"n": n, "of": nodes}} if kind == "at_least" else {kind: nodes}
    return truth(wrapper, *resources)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_all_of_any_of_truth_tables(size: int) -> None:
    for values in itertools.product(TRUTHS, repeat=size):
        assert composite("all_of", values) is min(values, key=ORDER.__getitem__), values
        assert composite("any_of", values) is max(values, key=ORDER.__getitem__), values


def test_not_truth_table() -> None:
    for value in TRUTHS:
        node, resources = leaf(0, value)
        assert truth({"not": node}, *resources) is (None if value is None else not value)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_at_least_truth_table(size: int) -> None:
    for values in itertools.product(TRUTHS, repeat=size):
        for n in range(1, size + 2):
            true, unknown = values.count(True), values.count(None)
            expected = True if true >= n else False if true + unknown < n else None
            assert composite("at_least", values, n) is expected, (values, n)


def test_composite_evidence_comes_from_the_deciding_children() -> None:
    node = {"any_of": [ANTI_TPO, {"observation": {**ANTI_TPO["observation"], "codes": ["loinc|8098-6"]}}]}
    tpo = observation((LOINC, "8099-4"), when="2026-10-20", interpretation="N", rid="tpo")
    assert truth(node, tpo) is None
    assert verdict_evidence(node, tpo) == [
        {"note": "no Observation coded loinc|8098-6 in the 90 days before 2026-11-01"}
    ]
    tg = observation((LOINC, "8098-6"), when="2026-10-20", interpretation="H", rid="tg")
    assert truth(node, tpo, tg) is True
    assert [e["reference"] for e in verdict_evidence(node, tpo, tg)] == ["Observation/tg"]


# ------------------------------------------------------------------------------------------- outcomes and patients


def test_outcome_and_status() -> None:
    assert [outcome_of("inclusion", t) for t in TRUTHS] == ["pass", "fail", "unknown"]
    assert [outcome_of("exclusion", t) for t in TRUTHS] == ["fail", "pass", "unknown"]
    assert status_of(["pass", "manual", "pass"]) == "eligible"
    assert status_of(["pass", "unknown", "manual"]) == "incomplete"
    assert status_of(["unknown", "fail", "pass"]) == "ineligible"


def test_evaluate_patient_and_json_shape() -> None:
    criteria = Eligibility.model_validate({"criteria": [
        {"id": "age", "type": "inclusion", "text": "18 to 65", "expression": AGE_18_65},
        {"id": "leukocytes", "type": "exclusion", "text": "WBC < 4000/mm3", "expression": LEUKOCYTES},
        {"id": "reliable", "type": "exclusion", "text": "Unreliable", "manual": True, "reason": "judgement"},
    ]})  # fmt: skip
    resources = [patient("1960-11-01", pid="x"), observation(WBC, when="2026-10-20", value=3.5, unit="10*3/uL")]
    result = evaluate_patient(criteria, resources, D, STUDY)
    assert isinstance(result, PatientResult)
    assert result.status == "ineligible"
    assert result.criteria[2] == CriterionResult(
        "reliable", "exclusion", "Unreliable", "manual", (Evidence(note="judgement"),), "judgement"
    )
    assert result.to_json() == {
        "patient": "Patient/x",
        "status": "ineligible",
        "criteria": [
            {"id": "age", "type": "inclusion", "text": "18 to 65", "outcome": "fail",
             "evidence": [{"reference": "Patient/x", "date": "1960-11-01", "value": 66, "unit": "a"}]},
            {"id": "leukocytes", "type": "exclusion", "text": "WBC < 4000/mm3", "outcome": "fail",
             "evidence": [{"reference": f"Observation/{resources[1]['id']}", "date": "2026-10-20", "value": 3.5,
                           "unit": "10*3/uL", "code": "loinc|6690-2"}]},
            {"id": "reliable", "type": "exclusion", "text": "Unreliable", "outcome": "manual",
             "evidence": [{"note": "judgement"}]},
        ],
    }  # fmt: skip
    listed = [Criterion.model_validate({"id": "sex", "type": "inclusion", "text": "women",
                                        "expression": {"sex": {"administrative": ["female"]}}})]  # fmt: skip
    assert evaluate_patient(listed, resources, D, STUDY).status == "eligible"
    # without a Patient resource the patient is the one the resources point at
    assert evaluate_patient(listed, resources[1:], D, STUDY).to_json()["patient"] == "Patient/p1"
    assert evaluate_patient(listed, resources[1:], D, STUDY).status == "incomplete"
    with pytest.raises(ValueError, match="not one"):
        evaluate_patient(listed, [], D, STUDY)


def test_group_by_patient() -> None:
    resources = [
        {"resourceType": "ResearchStudy", "id": "s"},
        patient(pid="a"),
        observation(WBC, when="2026-10-20", rid="o"),
        {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": "Patient/b"}},
        {"resourceType": "ResearchSubject", "id": "rs", "individual": {"reference": "http://h.example/fhir/Patient/a"}},
        {"resourceType": "Observation", "id": "g", "subject": {"reference": "Group/1"}},
        {"resourceType": "Observation", "id": "u", "subject": {"reference": "urn:uuid:1234"}},
        patient(pid="b"),
    ]
    grouped = group_by_patient(resources)
    assert {pid: [r["id"] for r in found] for pid, found in grouped.items()} == {
        "a": ["a", "rs"],
        "p1": ["o"],
        "b": ["al", "b"],
    }


# ------------------------------------------------------------------------------------------- the hospital population

STATUS = {hospital.ELIGIBLE: "eligible", hospital.INELIGIBLE: "ineligible", hospital.UNKNOWN: "incomplete"}

# The designed one-failure cases: the criterion that must fail (ineligible for the right reason).
DESIGNED_FAILURES = {
    "depil-2": {
        "020": "madrs-above-17", "021": "leukocytes", "022": "leukocytes", "023": "platelets", "024": "haemoglobin",
        "025": "haemoglobin", "026": "erythrocytes", "027": "age", "028": "minor", "029": "thyroid-antibodies",
        "030": "thyroid-antibodies", "032": "suicide-risk", "033": "suicide-risk", "034": "pregnancy",
        "035": "pregnancy", "036": "cancer", "037": "cancer", "038": "hiv-parkinson-alzheimer",
        "039": "hiv-parkinson-alzheimer", "040": "hiv-parkinson-alzheimer", "041": "hiv-parkinson-alzheimer",
        "042": "immunosuppressed", "043": "immunosuppressed", "044": "anti-inflammatory-treatment",
        "045": "infection-antibiotics", "046": "transplant", "047": "organ-failure", "048": "uncontrolled-diabetes",
        "049": "fever", "050": "mood-stabiliser-or-antidepressant", "051": "mood-stabiliser-or-antidepressant",
        "052": "bipolar-depression", "053": "bipolar-depression", "054": "bipolar-depression", "055": "other-study",
        "056": "other-study", "057": "madrs-above-17",
    },
    "mirocals": {
        "107": "age", "108": "slow-vital-capacity", "109": "disease-duration", "110": "riluzole-naive",
        "111": "riluzole-naive", "112": "other-neurodegenerative", "113": "lumbar-puncture-contraindication",
        "114": "autoimmune", "115": "als-diagnosis",
    },
    "msc-sle": {"125": "active-disease", "126": "age", "127": "ana-positive", "128": "refractory", "129": "refractory"},
}  # fmt: skip


@pytest.fixture(scope="module")
def population() -> dict[str, Any]:
    bundle = json.loads((ROOT / "fixtures" / HOSPITAL_BUNDLE).read_text(encoding="utf-8"))
    groups = group_by_patient(entry["resource"] for entry in bundle["entry"])
    records = hospital.population(rng_for(DEFAULT_SEED, "hospital"))
    studies = load_studies(ROOT / "mappings" / "studies")
    results = {
        (record.pid, spec.id): evaluate_patient(
            spec.eligibility, groups[record.pid], hospital.REFERENCE_DATE, f"ResearchStudy/{spec.id}"
        )
        for record in records
        for spec in studies
    }
    return {"records": records, "results": results, "groups": groups}


def test_population_matches_the_generator_expectations(population: dict[str, Any]) -> None:
    records, results = population["records"], population["results"]
    assert {record.pid for record in records} == set(population["groups"])
    assert len(records) == 150
    mismatches = []
    for (pid, study), result in results.items():
        record = next(r for r in records if r.pid == pid)
        # not listed for a study: not a candidate, so ineligible
        expected = STATUS[record.expect[study]] if study in record.expect else "ineligible"
        if result.status != expected:
            failing = {c.id: c.outcome for c in result.criteria if c.outcome in ("fail", "unknown")}
            mismatches.append(f"{pid} {study}: expected {expected}, got {result.status} {failing} ({record.why})")
    assert not mismatches, "\n".join(mismatches)


def test_designed_failures_fail_on_their_criterion(population: dict[str, Any]) -> None:
    for study, cases in DESIGNED_FAILURES.items():
        for n, criterion in cases.items():
            outcomes = {c.id: c.outcome for c in population["results"][(f"hosp-p{n}", study)].criteria}
            assert outcomes[criterion] == "fail", (n, study, outcomes)


def test_boundary_cases_pass_their_criterion(population: dict[str, Any]) -> None:
    passing = {"002": "leukocytes", "003": "madrs-above-17", "004": "leukocytes", "005": "leukocytes",
               "006": "platelets", "007": "haemoglobin", "008": "haemoglobin", "009": "erythrocytes", "010": "age",
               "011": "minor", "012": "thyroid-antibodies", "013": "suicide-risk", "014": "cancer", "015": "cancer",
               "016": "cancer", "017": "other-study", "018": "uncontrolled-diabetes",
               "019": "anti-inflammatory-treatment", "001": "fever"}  # fmt: skip
    for n, criterion in passing.items():
        outcomes = {c.id: c.outcome for c in population["results"][(f"hosp-p{n}", "depil-2")].criteria}
        assert outcomes[criterion] == "pass", (n, outcomes)
