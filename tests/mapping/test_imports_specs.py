"""CSV import specs and transforms: strict loading (file:line), agreement with the terminology, unit
conversions, scale totals, and reading CSV files (pure functions, no database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.eligibility.criteria import SYSTEMS
from app.fhir.errors import FhirError, Issue
from app.mapping.imports import EnrolledSubject, Entry, _at_rows, map_csv, read_csv, scale_total
from app.mapping.sources import SourceRegistry, load_source, load_sources
from app.mapping.study_spec import StudyRegistry, StudySpec, load_studies
from app.mapping.transforms import LabTest, TransformError, lab_result, round_significant, unit_convert
from app.mapping.yaml_source import SpecError
from app.store.repository import StoredResource

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "mappings" / "sources"
TERMINOLOGY = ROOT / "mappings" / "terminology"


@pytest.fixture(scope="module")
def sources() -> SourceRegistry:
    return load_sources(SOURCES)


@pytest.fixture(scope="module")
def studies() -> StudyRegistry:
    return load_studies(ROOT / "mappings" / "studies")


@pytest.fixture(scope="module")
def tests(sources: SourceRegistry) -> dict[str, LabTest]:
    spec = sources.get("labs")
    assert spec is not None
    found: dict[str, LabTest] = spec.table("tests")
    return found


def test_the_eight_specs_load(sources: SourceRegistry) -> None:
    assert sources.kinds() == [
        "adverse_events",
        "alsfrs_r",
        "dosing",
        "enrolment",
        "ids_c30",
        "labs",
        "madrs",
        "selena_sledai",
    ]
    assert {s.kind: s.resources for s in sources} == {
        "adverse_events": ["AdverseEvent"],
        "alsfrs_r": ["Observation"],
        "dosing": ["MedicationAdministration"],
        "enrolment": ["Patient", "ResearchSubject"],
        "ids_c30": ["Observation"],
        "labs": ["Observation"],
        "madrs": ["Observation"],
        "selena_sledai": ["Observation"],
    }


def test_a_bad_spec_names_the_file_and_line(tmp_path: Path) -> None:
    text = (SOURCES / "dosing.yaml").read_text()
    text = text.replace(
        "route: {type: code, transform: coding, table: routes,", "route: {type: code, transform: codes,"
    )
    text = text.replace("  dose: {type: decimal, min: 0,", "  dose: {type: decimal, minimum: 0,")
    text = text.replace("key: [study, subject, administered_at, intervention]", "key: [study, subject, given_at]")
    bad = tmp_path / "dosing.yaml"
    bad.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_source(bad)
    lines = text.splitlines()
    dose = next(i for i, line in enumerate(lines, 1) if line.startswith("  dose:"))
    route = next(i for i, line in enumerate(lines, 1) if line.startswith("  route:"))
    assert str(raised.value) == (
        f"{bad}:{dose}: columns.dose.minimum: Extra inputs are not permitted\n"
        f"{bad}:{route}: columns.route: Value error, unknown transform 'codes'; known: sex_code, coding, "
        "ctcae_grade, meddra_coding, lab_test, lab_result"
    )
    text = (
        (SOURCES / "dosing.yaml")
        .read_text()
        .replace("key: [study, subject, administered_at, intervention]", "key: [study, subject, given_at]")
    )
    text = text.replace("    SC: {code: snomed|34206005", "    SC: {code: '34206005'")
    bad.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_source(bad)
    lines = text.splitlines()
    key = next(i for i, line in enumerate(lines, 1) if line.startswith("key:"))
    sc = next(i for i, line in enumerate(lines, 1) if line.startswith("    SC:"))
    assert raised.value.problems == [
        (key, "key: 'given_at' is not a column"),
        (
            sc,
            "tables.routes.SC.code: Value error, '34206005' is not 'system|code' "
            f"(system: a URL or one of {', '.join(SYSTEMS)})",
        ),
    ]


def test_a_unit_ucum_cannot_convert_needs_a_factor(tmp_path: Path) -> None:
    text = (
        (SOURCES / "labs.yaml")
        .read_text()
        .replace("        mmol/L: {one_target_unit_is: 0.6206}", "        mmol/L: {}")
    )
    bad = tmp_path / "labs.yaml"
    bad.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_source(bad)
    [(line, message)] = raised.value.problems
    assert text.splitlines()[line - 1].strip() == "HGB:"
    assert message == (
        "tables.tests.HGB: Value error, reported unit 'mmol/L' (mmol/L) does not convert to g/dL through UCUM; "
        "give one_target_unit_is"
    )


def test_lab_codes_agree_with_the_local_lab_concept_map(tests: dict[str, LabTest]) -> None:
    concept_map = json.loads((TERMINOLOGY / "ConceptMap-local-lab-to-standard.json").read_text())
    mapped = {
        element["code"]: (group["target"], target["code"], target["display"])
        for group in concept_map["group"]
        for element in group["element"]
        for target in element["target"]
    }
    local = json.loads((TERMINOLOGY / "CodeSystem-local-lab.json").read_text())
    assert {c["code"]: c["display"] for c in local["concept"]} == {code: t.display for code, t in tests.items()}
    assert mapped == {code: (t.code.system, t.code.code, t.code_display) for code, t in tests.items()}


def test_measure_codes_exist_with_their_units(sources: SourceRegistry, tests: dict[str, LabTest]) -> None:
    measure = json.loads((TERMINOLOGY / "CodeSystem-trialbridge-measure.json").read_text())
    concepts = {c["code"]: c for c in measure["concept"]}

    def unit(code: str) -> str:
        return str(next(p["valueString"] for p in concepts[code]["property"] if p["code"] == "unit"))

    for test in tests.values():
        if test.code.system == "https://trialbridge.dev/fhir/CodeSystem/measure":
            assert (test.code_display, test.unit) == (concepts[test.code.code]["display"], unit(test.code.code))
    for spec in sources:
        if spec.scale is None:
            continue
        total = spec.scale.total
        assert (total.display, unit(total.code.code)) == (concepts[total.code.code]["display"], "{score}")
        for item in spec.scale.items:
            if item.code.system == "https://trialbridge.dev/fhir/CodeSystem/measure":
                assert item.display == concepts[item.code.code]["display"]


# ----------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("test", "value", "unit", "expected"),
    [
        ("WBC", "4000", "/mm3", 4.0),  # 10*3/uL
        ("WBC", "4.0", "G/L", 4.0),
        ("PLT", "100000", "/mm3", 100.0),
        ("HGB", "8.1", "mmol/L", 13.0519),  # g/dL: 8.1 / 0.6206
        ("HGB", "6.2", "mmol/L", 9.99033),
        ("HGB", "135", "g/L", 13.5),
        ("RBC", "3.5", "T/L", 3.5),  # 10*6/uL
        ("RBC", "4200000", "/mm3", 4.2),
        ("PNFH_CSF", "3.9", "ng/mL", 3900.0),  # pg/mL
        ("NFL_SERUM", "12", "ng/L", 12.0),
        ("ANTI_TPO", "34", "UI/mL", 34.0),  # [IU]/mL
        ("ANTI_TPO", "34", "kUI/L", 34.0),
        ("CD4_ABS", "0.85", "G/L", 850.0),  # /uL
    ],
)
def test_unit_conversions(tests: dict[str, LabTest], test: str, value: str, unit: str, expected: float) -> None:
    result = lab_result(value, tests[test], unit, table={})
    assert result.value == expected
    assert result.conversion is not None and result.conversion.target_unit == tests[test].unit


def test_conversion_keeps_the_reported_value_and_refuses_unknown_units(tests: dict[str, LabTest]) -> None:
    result = lab_result("4000", tests["WBC"], "/mm3", table={})
    assert (result.reported, result.conversion.reported_code if result.conversion else None) == (4000, "/mm3")
    assert unit_convert(tests["RBC"], "T/L").reported_code == "10*12/L"
    with pytest.raises(TransformError) as raised:
        lab_result("5", tests["HGB"], "mg/dL", table={})
    assert (str(raised.value), raised.value.code, raised.value.about) == (
        "unit 'mg/dL' is not accepted for Haemoglobin; use one of g/dL, g/L, mmol/L.",
        "code-invalid",
        2,
    )
    assert round_significant(3.9999999999999996, 6) == 4.0


# ------------------------------------------------------------------------------------------ scale totals


def _scale(sources: SourceRegistry, kind: str):  # type: ignore[no-untyped-def]
    spec = sources.get(kind)
    assert spec is not None and spec.scale is not None
    return spec.scale


def test_madrs_total_and_a_missing_item(sources: SourceRegistry) -> None:
    scale = _scale(sources, "madrs")
    items = {f"item_{n}": n % 7 for n in range(1, 11)}  # 1..6, 0, 1, 2, 3
    assert scale_total(scale, items) == (27, [])
    assert scale_total(scale, {**items, "item_3": None, "item_10": None}) == (None, ["item_3", "item_10"])
    assert scale_total(scale, {f"item_{n}": 6 for n in range(1, 11)}) == (60, [])


def test_ids_c30_counts_the_higher_of_each_pair(sources: SourceRegistry) -> None:
    scale = _scale(sources, "ids_c30")
    items: dict[str, int | None] = {f"item_{n}": 1 for n in range(1, 31)}
    assert scale_total(scale, items) == (28, [])
    assert scale_total(scale, {**items, "item_11": 3, "item_12": 2}) == (30, [])
    assert scale_total(scale, {**items, "item_13": None, "item_14": 3}) == (30, [])  # one of a pair suffices
    assert scale_total(scale, {**items, "item_13": None, "item_14": None}) == (None, ["item_13", "item_14"])
    assert scale_total(scale, {f"item_{n}": 3 for n in range(1, 31)}) == (84, [])


def test_selena_sledai_weights(sources: SourceRegistry) -> None:
    scale = _scale(sources, "selena_sledai")
    absent = {item.column: 0 for item in scale.items}
    assert scale_total(scale, absent) == (0, [])
    assert scale_total(scale, {**absent, "seizure": 1}) == (8, [])
    assert scale_total(scale, {**absent, "arthritis": 1, "low_complement": 1}) == (6, [])
    assert scale_total(scale, {**absent, "fever": 1, "leukopenia": 1, "hematuria": 1}) == (6, [])
    assert scale_total(scale, {item.column: 1 for item in scale.items}) == (105, [])
    assert [item.weight for item in scale.items] == [8] * 8 + [4] * 6 + [2] * 7 + [1] * 3


# ---------------------------------------------------------------------------------------------- reading


def test_csv_reading_strips_cells_and_accepts_crlf_and_a_bom(sources: SourceRegistry) -> None:
    spec = sources.get("dosing")
    assert spec is not None
    data = (
        b"\xef\xbb\xbfroute, study ,subject,administered_at,intervention,dose,dose_unit\r\n"
        b"SC, depil-2 ,T-1,2021-03-04T09:00:00+01:00,ilt101,1,mL\r\n"
        b"\r\n"
        b'"SC","depil-2","T-2","2021-03-05","placebo","",""\r\n'
    )
    rows, issues = read_csv(data, spec.all_columns())
    assert issues == []
    assert [(r.line, r.cells["study"], r.cells["dose"]) for r in rows] == [(2, "depil-2", "1"), (4, "depil-2", None)]


class NoStore:
    def __init__(self, **subjects: EnrolledSubject) -> None:
        self.subjects = subjects

    def subject(self, study: StudySpec, number: str) -> EnrolledSubject | None:
        return self.subjects.get(number.replace("-", "_"))

    def timed_resources(self, study: StudySpec, patient_id: str) -> list[StoredResource]:
        return []


def test_a_date_time_without_seconds_gets_them_and_ids_are_stable(
    sources: SourceRegistry, studies: StudyRegistry
) -> None:
    spec = sources.get("dosing")
    assert spec is not None
    lookup = NoStore(T_1=EnrolledSubject("p1", "ilt101"))
    data = (
        b"study,subject,administered_at,intervention,dose,dose_unit,route\n"
        b"depil-2,T-1,2021-03-04T09:00+01:00,ilt101,1,mL,SC\n"
    )
    first = map_csv(data, spec, studies, lookup)
    again = map_csv(data.replace(b"depil-2", b"NCT04133233"), spec, studies, lookup)
    [entry] = first.entries
    assert entry.resource["effectiveDateTime"] == "2021-03-04T09:00:00+01:00"
    assert [e.resource for e in again.entries] == [entry.resource]  # the NCT number names the same study


def test_an_administration_outside_the_subjects_arm_is_a_warning(
    sources: SourceRegistry, studies: StudyRegistry
) -> None:
    spec = sources.get("dosing")
    assert spec is not None
    data = b"study,subject,administered_at,intervention,dose,dose_unit,route\ndepil-2,T-1,2021-03-04,ilt101,1,mL,SC\n"
    result = map_csv(data, spec, studies, NoStore(T_1=EnrolledSubject("p1", "placebo")))
    assert [n.to_issue().to_fhir() for n in result.notes] == [
        {
            "severity": "warning",
            "code": "business-rule",
            "diagnostics": "Line 2, column intervention: 'ilt101' is not an intervention of arm 'placebo', to which "
            "subject 'T-1' is assigned; imported as recorded (check for a dispensing error or a wrong arm in "
            "enrolment).",
            "expression": ["line[2].intervention"],
        }
    ]
    assert len(result.entries) == 1


def test_transaction_issues_are_reported_at_the_rows_they_come_from() -> None:
    entries = [
        Entry(7, {"resourceType": "Observation", "id": "a"}),
        Entry(None, {"resourceType": "AdverseEvent", "id": "b"}, if_match=2),
    ]
    error = FhirError(
        422,
        [
            Issue("value", "valueQuantity.code: not UCUM", ("Bundle.entry[0].resource.valueQuantity.code",)),
            Issue("conflict", "AdverseEvent/b is at version 3, not 2", ("Bundle.entry[1]",)),
            Issue("processing", "elsewhere"),
        ],
    )
    assert [i.to_fhir() for i in _at_rows(error, entries).issues] == [
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "Line 7: the Observation made from this row is not accepted "
            "(Observation.valueQuantity.code): valueQuantity.code: not UCUM",
            "expression": ["line[7]"],
        },
        {
            "severity": "error",
            "code": "conflict",
            "diagnostics": "AdverseEvent/b (stored, its study time recomputed) cannot be written (AdverseEvent): "
            "AdverseEvent/b is at version 3, not 2",
            "expression": ["AdverseEvent/b"],
        },
        {"severity": "error", "code": "processing", "diagnostics": "elsewhere"},
    ]
