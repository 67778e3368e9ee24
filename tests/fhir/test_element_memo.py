"""Validation with remembered elements (app/fhir/element_memo.py) gives the fhir.resources models' own verdict.

Checked against the models without the memo on the official R4 examples (hundreds of resources of the types
trials exchange) and on random damage to them, with the memo warmed by the undamaged examples so that most
elements of each damaged resource are taken from it.
"""

from __future__ import annotations

import copy
import gzip
import uuid
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.fhir import element_memo
from app.fhir.element_memo import ElementMemo
from app.fhir.errors import Issue
from app.fhir.validation import model_issues
from app.fhir.version import model_class

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "r4-examples" / "examples.ndjson.gz"
TYPES = ("Patient", "Observation", "Condition", "MedicationStatement", "AdverseEvent", "ResearchStudy",
         "ResearchSubject", "Encounter", "Procedure", "DiagnosticReport", "Specimen", "Group")  # fmt: skip


@cache
def examples() -> tuple[bytes, ...]:
    """The official examples of the trial types that are under 20 kB, as JSON (each test parses its own copy)."""
    found = []
    with gzip.open(EXAMPLES, "rb") as lines:
        for line in lines:
            if len(line) < 20_000 and orjson.loads(line).get("resourceType") in TYPES:
                found.append(line.strip())
    return tuple(found)


def plain_issues(resource: dict[str, Any]) -> list[Issue]:
    """The models' verdict with nothing remembered: every element validated from its JSON."""
    return model_issues(resource, ElementMemo())


@pytest.fixture(scope="module")
def warm_memo() -> ElementMemo:
    """The process's memo, holding every element of every example (validated twice: the second pass reuses)."""
    element_memo.MEMO.clear()
    for _ in range(2):
        for line in examples():
            model_issues(orjson.loads(line))
    return element_memo.MEMO


def test_the_examples_are_many_and_varied() -> None:
    kinds = {orjson.loads(line)["resourceType"] for line in examples()}
    assert len(examples()) > 100
    assert {"Patient", "Observation", "Condition", "Encounter"} <= kinds


def test_every_example_gets_the_same_verdict_and_the_same_model(warm_memo: ElementMemo) -> None:
    assert len(warm_memo) > 500  # the examples' elements are remembered, so what follows does reuse them
    for line in examples():
        resource = orjson.loads(line)
        model = model_class(resource["resourceType"])
        assert model_issues(resource) == plain_issues(resource)
        if not plain_issues(resource):
            remembered = element_memo.validate(model, resource)
            assert remembered.model_dump(mode="json") == model.model_validate(resource).model_dump(mode="json")


# -------------------------------------------------------------------------------------- random damage


def _paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into a JSON value (object members and array items), the root excluded."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*path, key))
            found.extend(_paths(value, (*path, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*path, index))
            found.extend(_paths(value, (*path, index)))
    return found


DAMAGE = st.sampled_from(
    [
        ("delete", None),
        ("set", None),
        ("set", 7),
        ("set", -1.5),
        ("set", True),
        ("set", ""),
        ("set", "not a date or code?"),
        ("set", "2024-13-45"),
        ("set", []),
        ("set", [None]),
        ("set", {}),
        ("set", {"unknownElement": 1}),
        ("set", {"reference": "Patient/1"}),
        ("set", {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}),
        ("wrap", None),
        ("add", "unknownElement"),
    ]
)


def _damage(resource: dict[str, Any], path: tuple[str | int, ...], kind: str, value: Any) -> None:
    parent: Any = resource
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "set":
        parent[last] = copy.deepcopy(value)
    elif kind == "wrap":  # an object where an array is expected, or the reverse
        parent[last] = parent[last][0] if isinstance(parent[last], list) and parent[last] else [parent[last]]
    elif kind == "add" and isinstance(parent[last], dict):
        parent[last][value] = "x"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), damages=st.integers(min_value=1, max_value=3))
def test_damaged_examples_get_the_same_issues_as_without_the_memo(
    warm_memo: ElementMemo, data: st.DataObject, damages: int
) -> None:
    resource = orjson.loads(data.draw(st.sampled_from(examples())))
    for _ in range(damages):
        paths = [p for p in _paths(resource) if p != ("resourceType",)]
        if not paths:
            break
        kind, value = data.draw(DAMAGE)
        _damage(resource, data.draw(st.sampled_from(paths)), kind, value)
    assert model_issues(copy.deepcopy(resource)) == plain_issues(copy.deepcopy(resource))


# ----------------------------------------------------------------------------------------- the memo


def _observation(code: str = "718-7", value: float = 13.2) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
    }


def test_a_repeated_element_is_validated_once_and_reused() -> None:
    memo = ElementMemo()
    model = model_class("Observation")
    first = element_memo.validate(model, _observation(value=1.0), memo)
    remembered = len(memo)
    second = element_memo.validate(model, _observation(value=2.0), memo)
    assert second.code is first.code and second.subject is first.subject  # reused, not validated again
    assert second.valueQuantity is not first.valueQuantity  # a different value: validated
    assert len(memo) == remembered + 1
    assert float(second.valueQuantity.value) == 2.0


def test_an_element_valid_under_one_field_is_not_taken_for_another() -> None:
    memo = ElementMemo()
    model = model_class("Observation")
    element_memo.validate(model, _observation(), memo)  # {"reference": "Patient/p1"} is a valid `subject`
    as_code = {**_observation(), "code": {"reference": "Patient/p1"}}  # ... but not a CodeableConcept
    issues = model_issues(as_code)
    assert issues == plain_issues(as_code)
    assert [i.expression for i in issues] == [("Observation.code.reference",)]


def test_a_remembered_element_beside_an_invalid_one_reports_only_the_invalid_one() -> None:
    model_issues(_observation())
    broken = {**_observation(), "status": "bogus-status", "effectiveDateTime": "2024-13-45"}
    issues = model_issues(broken)
    assert issues == plain_issues(broken)
    assert ("Observation.effectiveDateTime",) in [i.expression for i in issues]


def test_elements_that_are_not_json_are_validated_as_they_are() -> None:
    memo = ElementMemo()
    built = {**_observation(), "valueQuantity": {"value": Decimal("13.20"), "unit": "g/dL"}}
    instance = element_memo.validate(model_class("Observation"), built, memo)
    assert instance.valueQuantity.value == Decimal("13.20")
    assert all(key[1] != "valueQuantity" for key in memo._young)


def test_the_memo_is_bounded_and_keeps_what_is_used_again() -> None:
    memo = ElementMemo(capacity=2)
    keys = [(dict, f"k{i}", b"{}") for i in range(4)]
    memo.put(keys[0], "a")
    memo.put(keys[1], "b")
    memo.put(keys[2], "c")  # turnover: a and b become the old generation
    assert memo.get(keys[0]) == "a"  # used again: back in the young generation
    memo.put(keys[3], "d")  # turnover: b, not used since, is forgotten
    assert memo.get(keys[1]) is None
    assert memo.get(keys[0]) == "a" and memo.get(keys[3]) == "d"
    assert len(memo) <= 2 * memo.capacity


def test_values_that_json_would_blur_are_never_taken_for_each_other() -> None:
    """orjson writes NaN as null and a UUID as its string: the memo reuses a value only for equal JSON."""
    memo = ElementMemo()
    model = model_class("Observation")
    element_memo.validate(model, {**_observation(), "valueQuantity": {"value": None, "unit": "mg"}}, memo)
    not_a_number = {**_observation(), "valueQuantity": {"value": float("nan"), "unit": "mg"}}
    assert model_issues(not_a_number, memo) == plain_issues(not_a_number)
    element_memo.validate(model, {**_observation(), "subject": {"reference": str(uuid.UUID(int=5))}}, memo)
    an_object = {**_observation(), "subject": {"reference": uuid.UUID(int=5)}}
    assert model_issues(an_object, memo) == plain_issues(an_object) != []


def test_large_elements_are_not_remembered() -> None:
    memo = ElementMemo()
    narrative = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"x" * 5000}</div>'}
    element_memo.validate(model_class("Observation"), {**_observation(), "text": narrative}, memo)
    assert {key[1] for key in memo._young} == {"code", "subject", "valueQuantity"}


# ------------------------------------------------------- the rest of a write's checks, from the same memo


def _ids(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as a write stamps it: an id (its index rows are keyed by it) and meta."""
    return {
        **resource,
        "id": resource.get("id", "x1"),
        "meta": {"versionId": "1", "lastUpdated": "2026-12-07T10:00:00Z"},
    }


def _full_check(resource: dict[str, Any], memo: ElementMemo, sqlite: bool = True) -> Any:
    from app.fhir.validator_pool import check_resource

    return check_resource(copy.deepcopy(resource), resource["id"], sqlite=sqlite, memo=memo)


@pytest.fixture(scope="module")
def warm_check_memo() -> ElementMemo:
    """A memo holding every example's elements, with their semantic verdicts and index rows (two passes: the
    second reuses what the first remembered)."""
    memo = ElementMemo(capacity=100_000)
    for _ in range(2):
        for line in examples():
            _full_check(_ids(orjson.loads(line)), memo)
    return memo


def test_checks_and_index_rows_of_the_examples_are_those_made_without_the_memo(warm_check_memo: ElementMemo) -> None:
    remembered = list(warm_check_memo._young.values()) + list(warm_check_memo._old.values())
    assert sum(1 for entry in remembered if entry.clean and entry.rows) > 200  # verdicts and rows to reuse
    for line in examples():
        resource = _ids(orjson.loads(line))
        for sqlite in (True, False):
            assert _full_check(resource, warm_check_memo, sqlite) == _full_check(resource, ElementMemo(), sqlite)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), damages=st.integers(min_value=1, max_value=3))
def test_damaged_examples_get_the_same_checks_and_rows_as_without_the_memo(
    warm_check_memo: ElementMemo, data: st.DataObject, damages: int
) -> None:
    """Damage deep inside an element changes its JSON (so it is checked afresh); damage elsewhere leaves the
    remembered elements beside it, whose verdicts and rows are reused."""
    resource = _ids(orjson.loads(data.draw(st.sampled_from(examples()))))
    for _ in range(damages):
        paths = [p for p in _paths(resource) if p[0] not in ("resourceType", "id")]
        if not paths:
            break
        kind, value = data.draw(DAMAGE)
        _damage(resource, data.draw(st.sampled_from(paths)), kind, value)
    assert _full_check(resource, warm_check_memo) == _full_check(resource, ElementMemo())


def test_a_local_reference_is_checked_again_where_contained_resources_differ() -> None:
    """ref-1 depends on the resource around the element: an element clean in one resource is checked in another."""
    memo = ElementMemo()
    performer = [{"reference": "#doc"}]
    with_doc = _ids(
        {
            **_observation(),
            "contained": [{"resourceType": "Practitioner", "id": "doc"}],
            "performer": performer,
        }
    )
    assert _full_check(with_doc, memo).issues == []
    without_doc = _ids({**_observation(), "performer": performer})
    issues = _full_check(without_doc, memo).issues
    assert [i.expression for i in issues] == [("Observation.performer[0].reference",)]
    again = _full_check(without_doc, memo).issues  # remembered from a resource without contained: still checked
    assert again == issues


def test_index_rows_of_a_remembered_element_carry_the_new_resources_id_and_patient() -> None:
    memo = ElementMemo()
    first = _full_check(_ids({**_observation(), "id": "o1"}), memo)
    second = _full_check(_ids({**_observation(value=9.0), "id": "o2"}), memo)
    assert first.index is not None and second.index is not None
    tokens = second.index.tuples["token"]
    assert tokens and all(row[1] == "o2" and row[-1] == "p1" for row in tokens)
    assert second.index.patient_id == "p1"
    assert [row[2:-1] for row in first.index.tuples["token"]] == [row[2:-1] for row in tokens]
