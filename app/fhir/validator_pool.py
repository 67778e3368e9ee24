"""The per-resource work of a write that needs no database, spread over worker processes.

Validating with the fhir.resources models costs ~250 µs per resource and holds the GIL; the semantic
checks and the search-index extraction cost about as much again. Within one Python process that caps
a bundle at one core, and the request thread (which must resolve ids, rewrite references and insert
rows) would do it all. For large bundles this work runs in a small process pool: the request thread
sends each chunk as soon as it is stamped (its references final, or resolved by the worker from the
bundle's ids) and inserts the rows of one chunk while the workers check the next; the transaction
commits only after every resource passed. Small batches run
inline, where shipping them to another process would cost more than it saves.
"""

from __future__ import annotations

import marshal
import multiprocessing
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.fhir.element_memo import MEMO, ElementMemo
from app.fhir.errors import Issue
from app.fhir.references import BundleReferences
from app.fhir.validation import model_verdict, semantic_issues
from app.runtime import settle_heap, usable_cores
from app.store import indexer
from app.store.bulk import StorageIndex, storage_index

INLINE_BELOW = 64  # resources; below this a round trip to a worker costs more than it saves
CHUNK = 100


@dataclass(frozen=True, slots=True)
class Checked:
    """One resource's verdict: what is wrong with it ([] when valid) and, when it was sent with the id it
    will be stored under and passed, its search-index rows in the database's storage format (tuples of
    strings and numbers: they cross back from a worker process several times cheaper than dicts of datetimes)
    and its content as the JSON text to store. `unresolved`: the references that named no entry of the
    bundle, when the check resolved them (see `BundleReferences`)."""

    issues: list[Issue]
    index: StorageIndex | None = None
    content: str | None = None
    unresolved: list[Issue] = field(default_factory=list)


def check_resource(
    resource: dict[str, Any],
    index_id: str | None = None,
    *,
    sqlite: bool = False,
    references: BundleReferences | None = None,
    memo: ElementMemo = MEMO,
) -> Checked:
    """Model validation, then (only for a structurally valid resource) the semantic checks, then (only for
    a valid one, given the id it is stored under) the index rows, for SQLite or PostgreSQL, and the JSON text
    to store. With `references`, the references of a resource sent with an id (a new one, whose stored form the
    check makes) are resolved first, in place. `memo`: the elements seen before, whose validation, checks and
    index rows are reused (see `element_memo`)."""
    resolving = references if index_id is not None else None
    unresolved = [] if resolving is None else resolving.rewrite(resource, resource["resourceType"])
    issues, known = model_verdict(resource, memo)
    # An element that passed the semantic checks before passes them again, unless they depend on the rest of the
    # resource: a local reference (ref-1) on what it contains.
    context_free = "contained" not in resource
    if not issues:
        clean = frozenset(key for key, entry in known.items() if entry.clean) if context_free else frozenset()
        issues = semantic_issues(resource, clean)
        if not issues and context_free:
            for entry in known.values():
                entry.clean = True
    if issues or unresolved or index_id is None:
        return Checked(issues, unresolved=unresolved)
    rows = indexer.extract(resource["resourceType"], index_id, resource, remembered=known)
    return Checked([], storage_index(rows, sqlite), orjson.dumps(resource).decode())


# A verdict as it crosses back from a worker: issues and unresolved references as field tuples, index tuples per
# table (or None), patient id, JSON text to store.
_Fields = tuple[tuple[Any, ...], ...]
Packed = tuple[_Fields, dict[str, list[tuple[Any, ...]]] | None, str | None, str | None, _Fields]


def _fields(issues: list[Issue]) -> _Fields:
    return tuple((i.code, i.diagnostics, i.expression, i.severity) for i in issues)


def _packed(checked: Checked) -> Packed:
    index = checked.index
    return (
        _fields(checked.issues),
        None if index is None else index.tuples,
        None if index is None else index.patient_id,
        checked.content,
        _fields(checked.unresolved),
    )


def _unpacked(packed: Packed) -> Checked:
    issues, tuples, patient_id, content, unresolved = packed
    return Checked(
        [Issue(*fields) for fields in issues],
        None if tuples is None else StorageIndex(tuples, patient_id),
        content,
        [Issue(*fields) for fields in unresolved],
    )


# A `reference` string value as orjson writes it (no whitespace; '"', '\\' and control characters escaped).
# Unrolled ("normal* (special normal*)*"): the same strings as `(?:[^"\\]|\\.)*`, three times faster in `re`.
_REFERENCE_VALUE = re.compile(rb'"reference":"([^"\\]*(?:\\.[^"\\]*)*)"')


def _chunk_references(payload: bytes, references: BundleReferences) -> bytes:
    """The references a chunk (orjson bytes) needs, as JSON: the base and the part of the bundle's id map its
    resources name (the whole map with every chunk would make a bundle's shipping grow with the square of its
    size)."""
    id_map = references.id_map
    named = {}
    for raw in _REFERENCE_VALUE.findall(payload):
        value = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
        if value in id_map:
            named[value] = id_map[value]
    return orjson.dumps([named, references.base])


def _check_chunk(payload: bytes, sqlite: bool, references: bytes | None) -> bytes:
    """A chunk's verdicts, marshalled: plain tuples, lists, strings and numbers load in C several times faster
    than pickled dataclasses, and the pool's result thread only passes the bytes on (it holds the GIL the
    request thread needs while it unpickles). With `references` (a bundle's id map and base, as JSON), the
    references of the resources sent with an id are resolved before they are checked."""
    resources, index_ids = orjson.loads(payload)
    resolver = None if references is None else BundleReferences(*orjson.loads(references))
    return marshal.dumps(
        [
            _packed(check_resource(resource, index_id, sqlite=sqlite, references=resolver))
            for resource, index_id in zip(resources, index_ids, strict=True)
        ]
    )


def chunk_sizes(count: int) -> list[int]:
    """How `count` resources are cut into chunks for the workers: CHUNK each, except a smaller first one (the
    workers start sooner) and smaller last ones (the last verdicts come sooner after the others, so little is
    left to write after them: what is written after the last verdict runs on one core)."""
    small = CHUNK // 2
    if count <= 2 * CHUNK:
        return [small] * (count // small) + ([count % small] if count % small else [])
    middle = count - 3 * small
    sizes = [small] + [CHUNK] * (middle // CHUNK) + ([middle % CHUNK] if middle % CHUNK else []) + [small, small]
    return sizes


def _verdicts(futures: list[Future[bytes]], while_waiting: Callable[[], object] | None) -> Iterator[Checked]:
    for future in futures:
        if while_waiting is not None and not future.done():
            while_waiting()
        yield from (_unpacked(packed) for packed in marshal.loads(future.result()))  # noqa: S302 - our own workers' bytes


def default_workers() -> int:
    """One worker per core the process may use; 0 (inline) on a single core."""
    cores = usable_cores()
    return cores if cores > 1 else 0


class ValidatorPool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # forkserver: workers start from a clean interpreter, not a copy of a threaded server.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=settle_heap)

    def check(
        self,
        resources: Sequence[dict[str, Any]],
        index_ids: Sequence[str | None] | None = None,
        *,
        sqlite: bool = False,
    ) -> Iterator[Checked]:
        """Start checking every resource now; the iterator yields each one's `Checked`, in order, as soon as
        its chunk is done. `index_ids[i]`, when given, is the id resource i is stored under: its index rows
        are extracted too (so its content must be final: references rewritten, id and meta stamped), in the
        storage format of SQLite or of PostgreSQL."""
        ids: Sequence[str | None] = index_ids if index_ids is not None else [None] * len(resources)
        return self.check_each(zip(resources, ids, strict=True), len(resources), sqlite=sqlite)

    def check_each(
        self,
        items: Iterable[tuple[dict[str, Any], str | None]],
        count: int,
        *,
        sqlite: bool = False,
        references: BundleReferences | None = None,
        while_waiting: Callable[[], object] | None = None,
    ) -> Iterator[Checked]:
        """As `check`, for `count` (resource, index id) pairs produced one by one: each chunk goes to a worker
        as soon as its last resource is produced, so the caller prepares the next chunk (stamps it) while the
        workers check this one. Inline (few resources, or no pool), `items` is consumed lazily, one resource per
        result. With `references`, the references of the resources sent with an id are resolved where they are
        checked (in place, inline), and each `Checked.content` is the resource as resolved. `while_waiting` is
        called whenever the next verdict is not there yet (the caller writes what it has meanwhile)."""
        if self._pool is None or count < INLINE_BELOW:
            return (
                check_resource(resource, index_id, sqlite=sqlite, references=references) for resource, index_id in items
            )
        pool = self._pool
        futures: list[Future[bytes]] = []
        resources: list[dict[str, Any]] = []
        ids: list[str | None] = []

        def send() -> None:
            payload = orjson.dumps([resources, ids])
            shipped = None if references is None else _chunk_references(payload, references)
            futures.append(pool.submit(_check_chunk, payload, sqlite, shipped))

        sizes = iter(chunk_sizes(count))
        size = next(sizes)
        for resource, index_id in items:
            resources.append(resource)
            ids.append(index_id)
            if len(resources) == size:
                send()
                resources, ids = [], []
                size = next(sizes, CHUNK)
        if resources:
            send()
        return _verdicts(futures, while_waiting)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


INLINE = ValidatorPool(0)
