"""The worker pool gives exactly what the same checks give inline: issues per resource, in order, and the
index rows of the valid resources sent with an id."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import orjson
import pytest

from app.fhir.references import BundleReferences
from app.fhir.validator_pool import CHUNK, INLINE, INLINE_BELOW, ValidatorPool, check_resource, chunk_sizes
from app.store import indexer
from app.store.bulk import storage_index
from app.store.schema import idx_date, idx_token


@pytest.fixture(scope="module")
def pool() -> Iterator[ValidatorPool]:
    workers = ValidatorPool(2)
    yield workers
    workers.close()


def observation(n: int, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-23T08:00:00Z"},
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"reference": f"Patient/p{n % 7}"},
        "effectiveDateTime": "2026-05-01T08:00:00Z",
        "valueQuantity": {"value": n / 10, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }


def batch() -> tuple[list[dict[str, Any]], list[str | None]]:
    """More than two chunks; a model error (a string where a number goes), a required-binding error (status
    'bogus', which the models accept), and resources sent without an id (checked, not indexed)."""
    resources = [observation(n) for n in range(2 * CHUNK + 17)]
    resources[5]["valueQuantity"]["value"] = "high"
    resources[CHUNK + 3]["status"] = "bogus"
    ids: list[str | None] = [r["id"] if n % 11 else None for n, r in enumerate(resources)]
    return resources, ids


def test_the_pool_agrees_with_the_inline_checks(pool: ValidatorPool) -> None:
    resources, ids = batch()
    assert len(resources) >= INLINE_BELOW  # so it really goes to the workers
    pooled = list(pool.check(resources, ids))
    inline = list(INLINE.check(resources, ids))
    assert pooled == inline
    assert len(pooled) == len(resources)
    assert [n for n, checked in enumerate(pooled) if checked.issues] == [5, CHUNK + 3]
    assert "valueQuantity.value" in pooled[5].issues[0].expression[0]
    assert pooled[CHUNK + 3].issues[0].expression == ("Observation.status",)


@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgresql"])
def test_index_rows_come_back_only_for_valid_resources_sent_with_an_id(pool: ValidatorPool, sqlite: bool) -> None:
    resources, ids = batch()
    param = [column.name for column in idx_token.columns].index("param")
    checks = pool.check(resources, ids, sqlite=sqlite)
    for n, (resource, index_id, checked) in enumerate(zip(resources, ids, checks, strict=True)):
        if checked.issues or index_id is None:
            assert checked.index is None, n
        else:
            assert checked.index == storage_index(indexer.extract("Observation", index_id, resource), sqlite)
            assert checked.index.patient_id == f"p{n % 7}"
            assert {row[param] for row in checked.index.tuples["token"]} >= {"code", "status"}
            # the date range in each database's storage format: SQLite's naive UTC text, ISO with offset
            low = checked.index.tuples["date"][0][[c.name for c in idx_date.columns].index("low")]
            assert low == ("2026-05-01 08:00:00.000000" if sqlite else "2026-05-01T08:00:00+00:00")


def test_a_single_resource_is_checked_inline_the_same_way() -> None:
    resource = observation(1, status="bogus")
    assert check_resource(resource, "o1").issues
    assert check_resource(resource, "o1").index is None
    assert check_resource(observation(2), None).index is None


# ------------------------------------------------------------------ references resolved where checked


def referring(n: int) -> dict[str, Any]:
    resource = observation(n)
    resource["subject"] = {"reference": f"urn:uuid:{n % 7}"}
    resource["performer"] = [{"reference": "https://trialbridge.example/fhir/Practitioner/d1"}]
    return resource


def test_references_resolved_in_the_workers_are_those_resolved_inline(pool: ValidatorPool) -> None:
    references = BundleReferences(
        {f"urn:uuid:{k}": f"Patient/p{k}" for k in range(6)}, "https://trialbridge.example/fhir"
    )
    resources = [referring(n) for n in range(2 * CHUNK + 17)]  # urn:uuid:6 names no entry
    ids = [r["id"] for r in resources]
    pooled = list(pool.check_each(zip(copy.deepcopy(resources), ids, strict=True), len(ids), references=references))
    inline = list(INLINE.check_each(zip(resources, ids, strict=True), len(ids), references=references))
    assert pooled == inline
    for n, (resource, checked) in enumerate(zip(resources, pooled, strict=True)):
        if n % 7 == 6:
            assert checked.index is None and checked.content is None
            assert [i.expression for i in checked.unresolved] == [("Observation.subject.reference",)]
        else:
            assert checked.unresolved == [] and checked.issues == []
            stored = orjson.loads(checked.content or "")
            assert stored == resource  # inline resolves in place: the content is the resource as resolved
            assert stored["subject"] == {"reference": f"Patient/p{n % 7}"}
            assert stored["performer"] == [{"reference": "Practitioner/d1"}]
            assert checked.index is not None and checked.index.patient_id == f"p{n % 7}"


def test_resources_sent_without_an_id_are_checked_as_sent(pool: ValidatorPool) -> None:
    """Only resources the check stores (sent with an id) have their references resolved: the others keep theirs,
    so a fullUrl the map does not name is no issue of theirs."""
    references = BundleReferences({}, "https://trialbridge.example/fhir")
    resources = [referring(1) for _ in range(INLINE_BELOW)]
    checks = list(pool.check_each(((r, None) for r in resources), len(resources), references=references))
    assert all(c.issues == [] and c.unresolved == [] and c.content is None and c.index is None for c in checks)
    stored = list(pool.check_each(((r, "o1") for r in resources), len(resources), references=references))
    assert all([i.expression for i in c.unresolved] == [("Observation.subject.reference",)] for c in stored)


@pytest.mark.parametrize("count", [1, 49, 50, 64, 100, 199, 200, 201, 299, 1000, 1049, 5001])
def test_chunks_cover_every_resource_once_and_end_small(count: int) -> None:
    sizes = chunk_sizes(count)
    assert sum(sizes) == count and all(0 < size <= CHUNK for size in sizes)
    assert sizes[0] <= CHUNK // 2  # the workers start early
    if count > 2 * CHUNK:
        assert sizes[-2:] == [CHUNK // 2, CHUNK // 2]  # and the last verdicts come soon after the others


def test_the_caller_is_told_when_a_verdict_is_not_there_yet(
    pool: ValidatorPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[int] = []
    resources = [observation(n) for n in range(3 * CHUNK)]
    checks = pool.check_each(
        ((r, r["id"]) for r in resources), len(resources), while_waiting=lambda: waits.append(len(waits))
    )
    first = next(checks)  # waits for the first chunk, whether or not it is back yet
    monkeypatch.setattr(Future, "done", lambda self: False)  # from here on no verdict is back when asked for
    assert len([first, *checks]) == len(resources)
    assert len(waits) >= len(chunk_sizes(len(resources))) - 1  # once before each later chunk's verdicts


def test_each_bundle_is_resolved_with_its_own_map(pool: ValidatorPool) -> None:
    """The same fullUrl in two bundles names two different resources: no worker may keep the first map."""
    for target in ("Patient/first", "Patient/second"):
        references = BundleReferences({"urn:uuid:1": target}, "https://trialbridge.example/fhir")
        resources = [referring(1) for _ in range(2 * CHUNK)]
        checks = pool.check_each(((r, f"o{n}") for n, r in enumerate(resources)), len(resources), references=references)
        assert {orjson.loads(c.content or "")["subject"]["reference"] for c in checks} == {target}


def test_a_chunk_is_shipped_the_part_of_the_map_it_names() -> None:
    from app.fhir.validator_pool import _chunk_references

    # quotes, backslashes and a newline: escaped in the payload
    odd = {'urn:x:"odd"\\': "Patient/odd", 'urn:x:two\\\\\n"lines"': "Patient/two"}
    id_map = {f"urn:uuid:{k}": f"Patient/p{k}" for k in range(1000)} | odd
    resources = [referring(3)] + [{**referring(4), "subject": {"reference": reference}} for reference in odd]
    payload = orjson.dumps([resources, ["a", "b", "c"]])
    named, base = orjson.loads(_chunk_references(payload, BundleReferences(id_map, "https://trialbridge.example/fhir")))
    assert named == {"urn:uuid:3": "Patient/p3"} | odd
    assert base == "https://trialbridge.example/fhir/"
