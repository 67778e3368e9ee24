"""References a transaction resolves without the database (`BundleReferences`), and the test on the raw body that
decides whether a bundle may leave them to the validation workers (`may_hold_conditional_references`)."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.fhir.references import BundleReferences, may_hold_conditional_references

BASE = "https://trialbridge.example/fhir"


# ------------------------------------------------------------------------------------ BundleReferences


def test_a_full_url_of_the_bundle_becomes_the_id_it_was_given() -> None:
    references = BundleReferences({"urn:uuid:a": "Patient/p1"}, BASE)
    assert references.resolve("urn:uuid:a", "Observation.subject") == ("Patient/p1", None)


def test_an_unknown_urn_is_an_issue_at_the_reference() -> None:
    resolved, issue = BundleReferences({}, BASE).resolve("urn:uuid:b", "Observation.subject")
    assert resolved is None and issue is not None
    assert issue.code == "not-found" and issue.expression == ("Observation.subject.reference",)
    assert "urn:uuid:b" in issue.diagnostics


def test_references_to_this_server_become_relative_and_others_stay() -> None:
    references = BundleReferences({}, BASE + "/")  # a trailing slash on the base changes nothing
    assert references.resolve(f"{BASE}/Patient/p1", "x") == ("Patient/p1", None)
    assert references.resolve(f"{BASE}/Patient/p1/_history/2", "x") == ("Patient/p1/_history/2", None)
    assert references.resolve("https://other.example/fhir/Patient/p1", "x") == (None, None)
    assert references.resolve("Patient/p1", "x") == (None, None)


def test_conditional_references_are_told_apart() -> None:
    references = BundleReferences({}, BASE)
    assert references.conditional("Patient?identifier=a|b") == "Patient?identifier=a|b"
    assert references.conditional(f"{BASE}/Patient?identifier=a|b") == "Patient?identifier=a|b"
    assert references.conditional("Patient/p1") is None
    assert references.conditional("#contained?") is None


def test_rewrite_resolves_in_place_and_reports_what_it_cannot() -> None:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:a"},
        "performer": [{"reference": "urn:uuid:missing"}, {"reference": f"{BASE}/Practitioner/d1"}],
    }
    issues = BundleReferences({"urn:uuid:a": "Patient/p1"}, BASE).rewrite(resource, "Observation")
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert resource["performer"] == [{"reference": "urn:uuid:missing"}, {"reference": "Practitioner/d1"}]
    assert [(i.code, i.expression) for i in issues] == [("not-found", ("Observation.performer[0].reference",))]


def test_a_conditional_reference_reaching_rewrite_is_a_defect_not_a_stored_reference() -> None:
    """Only bundles judged free of conditional references are resolved this way: one found here is our bug."""
    resource = {"resourceType": "Observation", "hasMember": [{"reference": "Observation?code=x"}]}
    with pytest.raises(RuntimeError, match=r"Observation.hasMember\[0\]"):
        BundleReferences({}, BASE).rewrite(resource, "Observation")
    assert resource["hasMember"] == [{"reference": "Observation?code=x"}]


# --------------------------------------------------------------------- may_hold_conditional_references


def _holds_conditional_reference(node: Any) -> bool:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and "?" in reference:
            return True
        return any(_holds_conditional_reference(value) for value in node.values())
    if isinstance(node, list):
        return any(_holds_conditional_reference(item) for item in node)
    return False


TEXT = st.text(alphabet=st.sampled_from([*'abcPé/:?"\\\n\t ', "\x00"]), max_size=12)
KEYS = st.sampled_from(["reference", "display", "url", "text", "referencex", "reference "])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS | TEXT, children, max_size=4),
    max_leaves=25,
)


def _escaped(node: Any, rng: random.Random) -> str:
    """JSON with characters of strings (keys too) written as \\u escapes at random, in either case of hex digit."""
    if isinstance(node, str):
        out = []
        for c in node:
            if c in '"\\' or ord(c) < 0x20 or rng.random() < 0.5:
                hex_digits = f"{ord(c):04x}"
                out.append("\\u" + (hex_digits.upper() if rng.random() < 0.5 else hex_digits))
            else:
                out.append(c)
        return '"' + "".join(out) + '"'
    if isinstance(node, dict):
        return "{" + ",".join(f"{_escaped(k, rng)}:{_escaped(v, rng)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_escaped(item, rng) for item in node) + "]"
    return json.dumps(node)


def _encodings(document: Any, seed: int) -> list[bytes]:
    """The same JSON as different serialisers write it: orjson (no escapes), Python's json with non-ASCII escaped
    (as fhirclient and fhirpy send), with spaces around separators, and with characters escaped at random."""
    spaced = json.dumps(document, ensure_ascii=True, indent=1, separators=(" , ", " : ")).encode()
    encodings = [orjson.dumps(document), json.dumps(document).encode(), spaced]
    encodings.append(_escaped(document, random.Random(seed)).encode())
    assert all(json.loads(body) == document for body in encodings)
    return encodings


@settings(max_examples=500, deadline=None)
@given(document=JSON_VALUES, seed=st.integers(min_value=0, max_value=2**32))
def test_a_bundle_holding_a_conditional_reference_is_never_judged_free_of_them(document: Any, seed: int) -> None:
    for body in _encodings(document, seed):
        if _holds_conditional_reference(document):
            assert may_hold_conditional_references(body), body


def test_references_with_escaped_question_marks_and_key_letters_are_caught() -> None:
    assert may_hold_conditional_references(b'{"reference": "Patient\\u003fidentifier=a"}')
    assert may_hold_conditional_references(b'{"reference":"Patient\\u003Fidentifier=a"}')
    assert may_hold_conditional_references(b'{"r\\u0065ference":"Patient?identifier=a"}')
    assert may_hold_conditional_references(b'{"reference":"Pat\\"ient?identifier=a"}')


def test_typical_bundles_without_conditional_references_are_recognised() -> None:
    rng = random.Random(5)
    entries = [
        {
            "fullUrl": f"urn:uuid:{i}",
            "request": {"method": "PUT", "url": f"Patient?identifier=https://hospital.example|{i}"},
            "resource": {
                "resourceType": "Observation",
                "subject": {"reference": f"urn:uuid:{rng.randint(0, 9)}"},
                "note": [{"text": "Why? Because."}],
                "code": {"text": "Fran\u00e7oise's score"},
            },
        }
        for i in range(10)
    ]
    document = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert not may_hold_conditional_references(orjson.dumps(document))
    assert not may_hold_conditional_references(json.dumps(document).encode())  # \u00e7 escaped: not a letter
    assert not may_hold_conditional_references(b'{"reference": "a\\\\", "x": "?"}')  # a backslash ends the value
