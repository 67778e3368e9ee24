"""CSV imports through POST /api/imports/{spec} (SQLite and PostgreSQL): summaries, whole error reports,
idempotence, dry runs, study time and its search parameters, and the `trialbridge import` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.cli import main as cli_main
from app.mapping.imports import import_directory
from app.mapping.study_spec import load_studies
from app.mapping.study_time import STUDY_TIME_URL
from app.store.repository import Store

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "fixtures" / "imports"
CSV = {"Content-Type": "text/csv"}


def post(client: TestClient, spec: str, data: bytes | str, **params: str) -> Any:
    body = data.encode() if isinstance(data, str) else data
    return client.post(f"/api/imports/{spec}", content=body, headers=CSV, params=params)


def load(client: TestClient, study: str, spec: str, **params: str) -> dict[str, Any]:
    response = post(client, spec, (FILES / study / f"{spec}.csv").read_bytes(), **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def study_time(resource: dict[str, Any]) -> dict[str, Any]:
    extension = next(e for e in resource["extension"] if e["url"] == STUDY_TIME_URL)
    parts = {p["url"]: p for p in extension["extension"]}
    return {
        "study": parts["study"]["valueReference"]["reference"],
        "day": parts["day"]["valueInteger"] if "day" in parts else None,
        "visit": parts["visit"]["valueCoding"]["code"] if "visit" in parts else None,
    }


def local_code(observation: dict[str, Any]) -> str:
    return str(observation["code"]["coding"][0]["code"])


# ------------------------------------------------------------------------------------------ summaries


def test_enrolment_then_labs_summaries_and_what_is_stored(client: TestClient) -> None:
    assert load(client, "depil-2", "enrolment") == {
        "spec": "enrolment",
        "rows": 2,
        "dryRun": False,
        "resources": {
            "Patient": {"created": 2, "updated": 0, "unchanged": 0},
            "ResearchSubject": {"created": 2, "updated": 0, "unchanged": 0},
        },
        "issues": [],
    }
    labs = load(client, "depil-2", "labs")
    assert labs["resources"] == {"Observation": {"created": 5, "updated": 0, "unchanged": 0}}

    [subject] = search(client, "ResearchSubject?identifier=https://trialbridge.dev/fhir/sid/depil-2/subject|T-001")
    assert subject["assignedArm"] == "Active treatment"
    assert subject["study"] == {"reference": "ResearchStudy/depil-2"}
    assert subject["period"] == {"start": "2021-03-01"}
    patient_id = subject["individual"]["reference"].removeprefix("Patient/")
    patient = client.get(f"/fhir/Patient/{patient_id}").json()
    assert patient["identifier"] == [
        {"system": "https://trialbridge.dev/fhir/sid/depil-2/subject", "value": "T-001"},
        {"system": "https://trialbridge.dev/fhir/sid/site/APHP-HM/patient", "value": "1000001"},
    ]
    # 4000 /mm3 is 4.0 10*3/uL; the value as reported is kept
    [wbc] = search(client, f"Observation?subject=Patient/{patient_id}&code=http://loinc.org|6690-2")
    assert wbc["valueQuantity"] == {
        "value": 4.0,
        "unit": "10*3/uL",
        "system": "http://unitsofmeasure.org",
        "code": "10*3/uL",
    }
    assert wbc["extension"][0] == {
        "url": "https://trialbridge.dev/fhir/StructureDefinition/reported-quantity",
        "valueQuantity": {"value": 4000, "unit": "/mm3", "system": "http://unitsofmeasure.org", "code": "/mm3"},
    }
    # no dose imported yet: the study time names the study only
    assert study_time(wbc) == {"study": "ResearchStudy/depil-2", "day": None, "visit": None}
    # found by the local code and by value in any unit
    assert len(search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/local-lab|WBC")) == 2
    found = search(
        client, "Observation?code=http://loinc.org|6690-2&value-quantity=4000|http://unitsofmeasure.org|/mm3"
    )
    assert [o["id"] for o in found] == [wbc["id"]]


def test_reimporting_a_file_changes_nothing(client: TestClient) -> None:
    load(client, "depil-2", "enrolment")
    load(client, "depil-2", "dosing")
    first = load(client, "depil-2", "labs")
    again = load(client, "depil-2", "labs")
    assert first["resources"] == {"Observation": {"created": 5, "updated": 0, "unchanged": 0}}
    assert again["resources"] == {"Observation": {"created": 0, "updated": 0, "unchanged": 5}}
    assert load(client, "depil-2", "enrolment")["resources"] == {
        "Patient": {"created": 0, "updated": 0, "unchanged": 2},
        "ResearchSubject": {"created": 0, "updated": 0, "unchanged": 2},
    }
    assert load(client, "depil-2", "dosing")["resources"] == {
        "MedicationAdministration": {"created": 0, "updated": 0, "unchanged": 4}
    }
    for resource_type in ("Observation", "Patient", "ResearchSubject", "MedicationAdministration"):
        stored = search(client, f"{resource_type}?_count=100")
        assert stored and {r["meta"]["versionId"] for r in stored} == {"1"}, resource_type


def test_a_dry_run_checks_and_counts_but_writes_nothing(client: TestClient) -> None:
    load(client, "depil-2", "enrolment")
    dry = load(client, "depil-2", "labs", **{"dry-run": "true"})
    assert dry == {
        "spec": "labs",
        "rows": 5,
        "dryRun": True,
        "resources": {"Observation": {"created": 5, "updated": 0, "unchanged": 0}},
        "issues": [],
    }
    assert search(client, "Observation?category=laboratory") == []
    load(client, "depil-2", "labs")
    assert load(client, "depil-2", "labs", **{"dry-run": "true"})["resources"] == {
        "Observation": {"created": 0, "updated": 0, "unchanged": 5}
    }


def test_multipart_form_and_a_utf8_bom_are_accepted(client: TestClient) -> None:
    data = (FILES / "depil-2" / "enrolment.csv").read_bytes()
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="comment"\r\n\r\nweekly export\r\n'
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="enrolment.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + b"\xef\xbb\xbf" + data + b"\r\n--XyZ--\r\n"
    )
    response = client.post(
        "/api/imports/enrolment", content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == 2
    no_file = b'--XyZ\r\nContent-Disposition: form-data; name="csv"\r\n\r\na,b\r\n--XyZ--\r\n'
    response = client.post(
        "/api/imports/enrolment", content=no_file, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert (response.status_code, response.json()["issue"][0]["diagnostics"]) == (
        400,
        "The form has no 'file' part: send the CSV file as the form field named file.",
    )


# ------------------------------------------------------------------------------------------ study time


def test_study_day_and_visit_are_searchable(client: TestClient) -> None:
    for spec in ("enrolment", "dosing", "labs"):
        load(client, "depil-2", spec)
    days = {local_code(o): study_time(o) for o in search(client, "Observation?subject:Patient.identifier=T-001")}
    assert days == {
        "WBC": {"study": "ResearchStudy/depil-2", "day": -1, "visit": "screening"},
        "HGB": {"study": "ResearchStudy/depil-2", "day": 1, "visit": "d1"},
        "TREG_PCT": {"study": "ResearchStudy/depil-2", "day": 5, "visit": "d5"},
        "RBC": {"study": "ResearchStudy/depil-2", "day": 7, "visit": None},
    }
    first_week = search(client, "Observation?study-day=ge1&study-day=le5&_sort=date")
    assert sorted((local_code(o), study_time(o)["day"]) for o in first_week) == [
        ("HGB", 1),
        ("TREG_PCT", 5),
        ("WBC", 1),  # T-002's, on the day of its first (placebo) dose
    ]
    assert [local_code(o) for o in search(client, "Observation?study-visit=d5")] == ["TREG_PCT"]
    doses = search(client, "MedicationAdministration?study-day=5")
    assert [(d["effectiveDateTime"], study_time(d)["visit"]) for d in doses] == [("2021-03-08T09:00:00+01:00", "d5")]
    assert len(search(client, "MedicationAdministration?study-visit=d1")) == 2  # T-001's and T-002's first doses


def test_a_dosing_file_after_the_labs_recomputes_their_study_time(client: TestClient) -> None:
    load(client, "depil-2", "enrolment")
    load(client, "depil-2", "labs")
    assert search(client, "Observation?study-day:missing=false") == []
    dosing = load(client, "depil-2", "dosing")
    assert dosing["resources"] == {
        "MedicationAdministration": {"created": 4, "updated": 0, "unchanged": 0},
        "Observation": {"created": 0, "updated": 5, "unchanged": 0},
    }
    hgb = search(client, "Observation?code=http://loinc.org|718-7")[0]
    assert (study_time(hgb), hgb["meta"]["versionId"]) == (
        {"study": "ResearchStudy/depil-2", "day": 1, "visit": "d1"},
        "2",
    )
    # and the next dosing import leaves them alone
    assert load(client, "depil-2", "dosing")["resources"] == {
        "MedicationAdministration": {"created": 0, "updated": 0, "unchanged": 4}
    }


def test_msc_sle_counts_from_day_0(client: TestClient) -> None:
    for spec in ("enrolment", "dosing", "adverse_events", "selena_sledai"):
        load(client, "msc-sle", spec)
    events = {e["event"]["text"]: study_time(e) for e in search(client, "AdverseEvent?study=ResearchStudy/msc-sle")}
    assert events == {
        "Pyrexia": {"study": "ResearchStudy/msc-sle", "day": 0, "visit": "d0"},
        "Headache": {"study": "ResearchStudy/msc-sle", "day": 1, "visit": "d10"},
    }
    [sledai] = search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|selena-sledai")
    assert study_time(sledai) == {"study": "ResearchStudy/msc-sle", "day": -1, "visit": "screening"}
    assert sledai["valueQuantity"]["value"] == 23
    assert search(client, "Observation?study-day=-1")[0]["id"] == sledai["id"]


def test_the_study_time_search_parameters_are_published_and_listed(client: TestClient) -> None:
    parameter = client.get("/fhir/SearchParameter/study-day").json()
    assert {k: parameter[k] for k in ("url", "code", "base", "type")} == {
        "url": "https://trialbridge.dev/fhir/SearchParameter/study-day",
        "code": "study-day",
        "base": ["Observation", "AdverseEvent", "MedicationAdministration"],
        "type": "number",
    }
    assert client.get("/fhir/SearchParameter/study-visit").json()["type"] == "token"
    statement = client.get("/fhir/metadata").json()
    listed = {
        r["type"]: {p["name"]: p["type"] for p in r["searchParam"] if p["name"].startswith("study-")}
        for r in statement["rest"][0]["resource"]
        if r["type"] in ("Observation", "AdverseEvent", "MedicationAdministration")
    }
    assert listed == {t: {"study-day": "number", "study-visit": "token"} for t in listed}
    assert len(listed) == 3


# ------------------------------------------------------------------------------------- scales and AEs


def test_scales_totals_members_and_a_missing_item(client: TestClient) -> None:
    load(client, "depil-2", "enrolment")
    load(client, "depil-2", "dosing")
    madrs = load(client, "depil-2", "madrs")
    assert madrs["resources"] == {"Observation": {"created": 21, "updated": 0, "unchanged": 0}}
    assert madrs["issues"] == [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": "Line 3, column item_4: item_4 is empty, so the MADRS total score (0\u201360) was not "
            "computed; the total Observation says so (dataAbsentReason, note).",
            "expression": ["line[3].item_4"],
        }
    ]
    totals = search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|madrs-total&_sort=date")
    assert [t.get("valueQuantity", {}).get("value") for t in totals] == [26, None]
    complete, partial = totals
    assert len(complete["hasMember"]) == 10 and complete["derivedFrom"] == complete["hasMember"]
    assert study_time(complete) == {"study": "ResearchStudy/depil-2", "day": 1, "visit": "d1"}
    assert partial["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert partial["note"] == [{"text": "Total not computed: item_4 is empty."}]
    assert study_time(partial) == {"study": "ResearchStudy/depil-2", "day": 22, "visit": "w4"}
    members = search(client, f"Observation?_id={','.join(m['reference'][12:] for m in complete['hasMember'])}")
    assert len(members) == 10

    ids = load(client, "depil-2", "ids_c30")
    assert ids["resources"] == {"Observation": {"created": 30, "updated": 0, "unchanged": 0}}  # 29 items + total
    [total] = search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|ids-c30-total")
    assert total["valueQuantity"]["value"] == 34  # 29 outside the pairs + max(2, 1) + max(-, 3)


def test_mirocals_strata_units_and_alsfrs(client: TestClient) -> None:
    for spec in ("enrolment", "labs", "alsfrs_r"):
        load(client, "mirocals", spec)
    [subject] = search(client, "ResearchSubject?study=ResearchStudy/mirocals")
    assert [e for e in subject["extension"] if e["url"].endswith("/stratum")] == [
        {
            "url": "https://trialbridge.dev/fhir/StructureDefinition/stratum",
            "extension": [{"url": "key", "valueString": "country"}, {"url": "value", "valueString": "FR"}],
        },
        {
            "url": "https://trialbridge.dev/fhir/StructureDefinition/stratum",
            "extension": [{"url": "key", "valueString": "onset"}, {"url": "value", "valueString": "bulbar"}],
        },
    ]
    [pnfh] = search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|pnfh-csf")
    assert pnfh["valueQuantity"]["value"] == 3900  # 3.9 ng/mL
    pnfh_code = "code=https://trialbridge.dev/fhir/CodeSystem/measure|pnfh-csf"
    assert search(client, f"Observation?{pnfh_code}&value-quantity=le3.7|http://unitsofmeasure.org|ng/mL") == []
    assert search(client, f"Observation?{pnfh_code}&value-quantity=gt3.7|http://unitsofmeasure.org|ng/mL") == [pnfh]
    [alsfrs] = search(client, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|alsfrs-r-total")
    assert alsfrs["valueQuantity"] == {
        "value": 40,
        "unit": "{score}",
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
    }


# ------------------------------------------------------------------------------------- error reports


def test_a_labs_file_with_bad_rows_is_refused_whole_with_every_problem(client: TestClient) -> None:
    load(client, "depil-2", "enrolment")
    bad = (
        "study,subject,collected_at,test,value,unit,ref_low,ref_high,interpretation\n"
        "depil-2,T-001,2021-03-03,WBC,4000,/mm3,4000,10000,N\n"
        'depil-2,T-001,2021-03-04,WBC,"4,5",G/L,,,\n'
        "depil-2,T-001,2021-03-04,GLUCOSE,5.1,mmol/L,,,\n"
        "depil-2,T-001,2021-03-05,PLT,250,kg,,,\n"
        "depil-2,T-099,2021-03-05,PLT,250,G/L,,,\n"
        "depil-2,T-001,2021-03-06T08:00,HGB,13,g/dL,,,X\n"
    )
    response = post(client, "labs", bad)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/fhir+json")
    tests = "WBC, PLT, HGB, RBC, ANTI_TPO, ANTI_TG, HCG_URINE, HCG_SERUM, CD4_ABS, CD4_PCT, TREG_PCT, TREG_ABS, "
    tests += "NFL_SERUM, NFL_CSF, PNFH_CSF, PNFH_SERUM, SVC_PCT, ANA"
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "value",
                "diagnostics": "Line 3, column value: '4,5' is not a number (use a point as the decimal separator).",
                "expression": ["line[3].value"],
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": f"Line 4, column test: 'GLUCOSE' is not one of {tests}.",
                "expression": ["line[4].test"],
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Line 5, column unit: unit 'kg' is not accepted for Platelets; "
                "use one of 10*3/uL, 10*9/L, G/L, /mm3, /uL.",
                "expression": ["line[5].unit"],
            },
            {
                "severity": "error",
                "code": "not-found",
                "diagnostics": "Line 6, column subject: subject 'T-099' is not enrolled in DEPIL-2: import its "
                "enrolment first (enrolment.csv, POST /api/imports/enrolment).",
                "expression": ["line[6].subject"],
            },
            {
                "severity": "error",
                "code": "value",
                "diagnostics": "Line 7, column collected_at: '2021-03-06T08:00' has a time but no time zone; add it "
                "(2021-03-04T09:30:00+01:00 or ...Z).",
                "expression": ["line[7].collected_at"],
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Line 7, column interpretation: 'X' is not one of N, H, L, POS, NEG.",
                "expression": ["line[7].interpretation"],
            },
        ],
    }
    assert search(client, "Observation") == []  # not even the good row


def test_an_unknown_arm_and_an_out_of_range_item_are_reported(client: TestClient) -> None:
    enrolment = (
        "study,site,subject,site_patient_id,sex,birth_date,consent_date,randomisation_date,arm,status,"
        "end_date,end_reason,death_date,strata\n"
        "depil-2,APHP-HM,T-001,1000001,F,1980-05-02,2021-03-01,2021-03-03,il2,on-study,,,,\n"
        "depil-2,APHP-HM,T-002,1000002,X,1975-11-20,2021-02-30,,placebo,on-study,,,,country=FR\n"
    )
    response = post(client, "enrolment", enrolment)
    assert response.status_code == 422
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Line 2, column arm: 'il2' is not an arm of DEPIL-2 (ilt101, placebo).",
                "expression": ["line[2].arm"],
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Line 3, column sex: 'X' is not one of M, F.",
                "expression": ["line[3].sex"],
            },
            {
                "severity": "error",
                "code": "value",
                "diagnostics": "Line 3, column consent_date: '2021-02-30' is not a date of the calendar.",
                "expression": ["line[3].consent_date"],
            },
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "Line 3, column strata: 'country' is not a stratification factor of DEPIL-2 "
                "(none: the study is not stratified).",
                "expression": ["line[3].strata"],
            },
        ],
    }
    load(client, "depil-2", "enrolment")
    madrs = (
        "study,subject,assessed_at,visit,item_1,item_2,item_3,item_4,item_5,item_6,item_7,item_8,item_9,item_10\n"
        "depil-2,T-001,2021-03-04,d1,3,3,2,4,2,3,3,2,3,1\n"
        "depil-2,T-001,2021-03-04,d1,3,3,2,4,2,3,3,2,3,2\n"
        "depil-2,T-002,2021-03-05,d1,3,3,2,7,2,3,3,2,3,1\n"
        "depil-2,T-002,2021-03-26,day-1,3,3,2,4,2,3,3,2,3,-1\n"
    )
    response = post(client, "madrs", madrs)
    assert response.status_code == 422
    visits = "screening, d1, d2, d3, d4, d5, w3, w4, w5, w6, d60"
    assert response.json()["issue"] == [
        {
            "severity": "error",
            "code": "duplicate",
            "diagnostics": "Line 3, columns assessed_at, study, subject: this row repeats line 2 (same study, "
            "subject, assessed_at); keep one of them.",
            "expression": ["line[3].assessed_at", "line[3].study", "line[3].subject"],
        },
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "Line 4, column item_4: 7 is above the maximum 6.",
            "expression": ["line[4].item_4"],
        },
        {
            "severity": "error",
            "code": "code-invalid",
            "diagnostics": f"Line 5, column visit: 'day-1' is not a visit of DEPIL-2 ({visits}).",
            "expression": ["line[5].visit"],
        },
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "Line 5, column item_10: -1 is below the minimum 0.",
            "expression": ["line[5].item_10"],
        },
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", [{"code": "required", "diagnostics": "The file is empty: send a header row and at least one data row."}]),
        (
            b"study;subject;administered_at\ndepil-2;T-001;2021-03-04\n",
            [
                {
                    "code": "structure",
                    "diagnostics": "Line 1 (header): the columns are separated by semicolons; this import reads "
                    "comma-separated files (in Excel: save as 'CSV UTF-8 (comma delimited)').",
                    "expression": ["line[1]"],
                }
            ],
        ),
        (
            b"study,subject,administered_at,intervention,dose,dose_unit,route\ndepil-2,T-\xe9,2021-03-04,x,1,mL,SC\n",
            [
                {
                    "code": "structure",
                    "diagnostics": "Line 2: the file is not UTF-8 (byte 0xE9, byte 11 of the line). Save it as UTF-8 "
                    "('CSV UTF-8' in Excel) and send it again.",
                    "expression": ["line[2]"],
                }
            ],
        ),
        (
            b"study,subject,administered_at,intervention,dose,route,colour\n",
            [
                {
                    "code": "structure",
                    "diagnostics": "Line 1 (header), column colour: unknown column 'colour'; the columns are: study, "
                    "subject, administered_at, intervention, dose, dose_unit, route.",
                    "expression": ["line[1].colour"],
                },
                {
                    "code": "required",
                    "diagnostics": "Line 1 (header), column dose_unit: missing column 'dose_unit'; the columns are: "
                    "study, subject, administered_at, intervention, dose, dose_unit, route.",
                    "expression": ["line[1].dose_unit"],
                },
            ],
        ),
        (
            b"study,subject,administered_at,intervention,dose,dose_unit,route\n",
            [{"code": "required", "diagnostics": "The file has a header but no data rows: nothing to import."}],
        ),
        (
            b'study,subject,administered_at,intervention,dose,dose_unit,route\n"depil-2,T-001\n',
            [
                {
                    "code": "structure",
                    "diagnostics": "Line 2: this is not valid CSV (unexpected end of data); check the quotes.",
                    "expression": ["line[2]"],
                }
            ],
        ),
    ],
    ids=["empty", "semicolons", "latin-1", "header", "no-rows", "open-quote"],
)
def test_unreadable_files_are_422_never_500(client: TestClient, body: bytes, expected: list[dict[str, Any]]) -> None:
    response = post(client, "dosing", body)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", **i} for i in expected],
    }


def test_unknown_spec_and_wrong_content_type(client: TestClient) -> None:
    response = post(client, "vitals", "a,b\n1,2\n")
    assert (response.status_code, response.json()) == (
        404,
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "not-found",
                    "diagnostics": "No CSV source spec 'vitals'; the specs are: adverse_events, alsfrs_r, dosing, "
                    "enrolment, ids_c30, labs, madrs, selena_sledai.",
                }
            ],
        },
    )
    response = client.post("/api/imports/labs", content=b"{}", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["issue"][0]["code"]) == (415, "not-supported")
    response = client.post("/api/imports/labs", content=b"x", headers={"Content-Type": "text/csv; charset=latin-1"})
    assert response.status_code == 415


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_import_into_a_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert cli_main(["import", "enrolment", str(FILES / "depil-2" / "enrolment.csv"), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert '"Patient": {\n      "created": 2,' in out
    bad = tmp_path / "labs.csv"
    bad.write_text(
        "study,subject,collected_at,test,value,unit,ref_low,ref_high,interpretation\n"
        "depil-2,T-001,2021-03-03,WBC,lots,/mm3,,,\n"
    )
    assert cli_main(["import", "labs", str(bad), "--database-url", url]) == 1
    assert capsys.readouterr().err == (
        f"{bad}: not imported (422)\nline[2].value: Line 2, column value: 'lots' is not a number.\n"
    )
    assert cli_main(["import", "labs", str(FILES / "depil-2" / "labs.csv"), "--database-url", url]) == 0
    assert '"created": 5' in capsys.readouterr().out


def test_import_directory_takes_enrolment_and_dosing_first(store: Store) -> None:
    studies = load_studies(ROOT / "mappings" / "studies")
    first = import_directory(store, studies, FILES)
    assert [(s.spec, s.rows) for s in first] == [
        ("enrolment", 2),
        ("dosing", 4),
        ("ids_c30", 1),
        ("labs", 5),
        ("madrs", 2),
        ("enrolment", 1),
        ("alsfrs_r", 1),
        ("labs", 2),
        ("enrolment", 1),
        ("dosing", 1),
        ("adverse_events", 2),
        ("selena_sledai", 1),
    ]
    again = import_directory(store, studies, FILES)
    assert all(counts["created"] == counts["updated"] == 0 for s in again for counts in s.resources.values())
