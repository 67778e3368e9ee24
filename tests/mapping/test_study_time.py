"""Study time: CDISC study days (D1 and D0 studies), nominal visits, recomputation, and the study-day /
study-visit search parameters (compiled paths with two filter steps, the published SearchParameters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.fhir.definitions import SearchPath, search_parameters
from app.fhir.validation import validate_resource
from app.mapping import study_time
from app.mapping.study_spec import StudyRegistry, load_studies
from app.store.indexer import extract, indexed_parameters

ROOT = Path(__file__).resolve().parents[2]
URL = study_time.STUDY_TIME_URL


@pytest.fixture(scope="module")
def studies() -> StudyRegistry:
    return load_studies(ROOT / "mappings" / "studies")


@pytest.mark.parametrize(
    ("when", "first_dose", "first_dose_day", "day"),
    [
        ("2021-03-04", "2021-03-04T09:00:00+01:00", 1, 1),
        ("2021-03-08T23:30:00+01:00", "2021-03-04T09:00:00+01:00", 1, 5),
        ("2021-03-03", "2021-03-04T09:00:00+01:00", 1, -1),  # D1 studies have no day 0
        ("2021-02-25", "2021-03-04", 1, -7),
        ("2019-04-01", "2019-04-01T10:30:00+02:00", 0, 0),
        ("2019-04-02", "2019-04-01T10:30:00+02:00", 0, 1),
        ("2019-03-31", "2019-04-01T10:30:00+02:00", 0, -1),
        ("2019-04-11", "2019-04-01", 0, 10),
        # the calendar date as written counts, not the UTC instant
        ("2021-03-05T00:30:00+01:00", "2021-03-04T23:50:00+01:00", 1, 2),
    ],
)
def test_study_day(when: str, first_dose: str, first_dose_day: int, day: int) -> None:
    assert study_time.study_day(when, first_dose, first_dose_day) == day


def test_nominal_visits_of_the_three_schedules(studies: StudyRegistry) -> None:
    depil, mirocals, msc = (studies.find(s) for s in ("depil-2", "mirocals", "msc-sle"))
    assert depil is not None and mirocals is not None and msc is not None
    first = "2021-03-04"
    assert [study_time.compute(depil, d, first).visit for d in ("2021-02-10", "2021-03-04", "2021-03-08")] == [
        "screening",
        "d1",
        "d5",
    ]
    assert study_time.compute(depil, "2021-03-10", first).visit is None  # day 7: between d5 and w3's window
    assert study_time.compute(depil, "2021-03-17", first).visit == "w3"  # day 14, in 15 +/- 2
    course = study_time.compute(mirocals, "2017-12-19", "2017-09-25")
    assert (course.day, course.visit, course.visit_name) == (86, "course-3", "Course 3")
    assert study_time.compute(msc, "2019-04-01", "2019-04-01").extension() == {
        "url": URL,
        "extension": [
            {"url": "study", "valueReference": {"reference": "ResearchStudy/msc-sle"}},
            {"url": "day", "valueInteger": 0},
            {
                "url": "visit",
                "valueCoding": {
                    "system": "https://trialbridge.dev/fhir/CodeSystem/msc-sle/visit",
                    "code": "d0",
                    "display": "Day 0 (infusion)",
                },
            },
        ],
    }
    assert study_time.compute(msc, "2019-04-01", None).extension() == {
        "url": URL,
        "extension": [{"url": "study", "valueReference": {"reference": "ResearchStudy/msc-sle"}}],
    }


def test_recompute_keeps_a_recorded_visit_and_reports_no_change(studies: StudyRegistry) -> None:
    depil = studies.find("depil-2")
    assert depil is not None
    recorded = study_time.compute(depil, "2021-03-03", None, "d1")
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "extension": [{"url": "https://example.org/other", "valueString": "kept"}, recorded.extension()],
        "effectiveDateTime": "2021-03-03",
    }
    changed = study_time.recompute(observation, depil, "2021-03-04T09:00:00+01:00")
    assert changed is not None
    assert changed["extension"][0] == {"url": "https://example.org/other", "valueString": "kept"}
    assert changed["extension"][1]["extension"][1:] == [
        {"url": "day", "valueInteger": -1},
        {
            "url": "visit",
            "valueCoding": {
                "system": "https://trialbridge.dev/fhir/CodeSystem/depil-2/visit",
                "code": "d1",
                "display": "Day 1 (baseline)",
                "userSelected": True,
            },
        },
    ]
    assert study_time.recompute(changed, depil, "2021-03-04T09:00:00+01:00") is None
    event = {"resourceType": "AdverseEvent", "id": "a", "date": "2021-03-08"}
    added = study_time.recompute(event, depil, "2021-03-04")
    assert added is not None and list(added) == ["resourceType", "id", "extension", "date"]


# ------------------------------------------------------------------------------------- search parameters


def test_the_parameters_compile_to_two_filter_steps() -> None:
    for resource_type in study_time.TIMED_TYPES:
        day = search_parameters(resource_type)["study-day"]
        assert (day.type, day.url) == ("number", "https://trialbridge.dev/fhir/SearchParameter/study-day")
        assert day.paths == (
            SearchPath(
                ("extension", "extension", "valueInteger"),
                "integer",
                filters=((1, (("url", URL),)), (2, (("url", "day"),))),
            ),
        )
        assert {"study-day", "study-visit"} <= set(indexed_parameters(resource_type))
    assert "study-day" not in search_parameters("Patient")


def test_the_indexer_applies_every_filter_step() -> None:
    observation = {
        "resourceType": "Observation",
        "extension": [
            {"url": "https://example.org/other", "extension": [{"url": "day", "valueInteger": 99}]},
            {
                "url": URL,
                "extension": [
                    {"url": "study", "valueReference": {"reference": "ResearchStudy/depil-2"}},
                    {"url": "day", "valueInteger": -1},
                    {"url": "visit", "valueCoding": {"system": "https://x.org/visit", "code": "screening"}},
                    {"url": "other", "valueInteger": 7},
                ],
            },
        ],
    }
    rows = extract("Observation", "o1", observation).rows
    assert [(r["param"], r["value"]) for r in rows["number"]] == [("study-day", -1.0)]
    assert [(r["param"], r["system"], r["code"]) for r in rows["token"]] == [
        ("study-visit", "https://x.org/visit", "screening")
    ]


def test_the_search_parameter_resources_are_valid_r4() -> None:
    resources = study_time.search_parameter_resources()
    ours = [(r["id"], r["code"], r["type"]) for r in resources if r["code"].startswith("study-")]
    assert ours == [("study-day", "study-day", "number"), ("study-visit", "study-visit", "token")]
    for resource in resources:
        validate_resource(resource, "SearchParameter")
        for base in resource["base"]:
            compiled = search_parameters(base)[resource["code"]]
            assert (compiled.url, compiled.type) == (resource["url"], resource["type"])
            assert compiled.expression in resource["expression"]
