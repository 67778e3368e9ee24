"""The per-resource work of a write that needs no database, spread over worker processes.

Validating with the fhir.resources models costs ~250 µs per resource and holds the GIL; the semantic
checks and the search-index extraction cost about as much again. Within one Python process that caps
a bundle at one core, and the request thread (which must resolve ids, rewrite references and insert
rows) would do it all. For large bundles this work runs in a small process pool: the request thread
sends each chunk as soon as its references are final and inserts the rows of one chunk while the
workers check the next; the transaction commits only after every resource passed. Small batches run
inline, where shipping them to another process would cost more than it saves.
"""

from __future__ import annotations

import marshal
import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from app.fhir.errors import Issue
from app.fhir.validation import model_issues, semantic_issues
from app.runtime import settle_heap, usable_cores
from app.store import indexer
from app.store.bulk import StorageIndex, storage_index

INLINE_BELOW = 64  # resources; below this a round trip to a worker costs more than it saves
CHUNK = 100


@dataclass(frozen=True, slots=True)
class Checked:
    """One resource's verdict: what is wrong with it ([] when valid) and, when it was sent with the id it
    will be stored under and passed, its search-index rows in the database's storage format (tuples of
    strings and numbers: they cross back from a worker process several times cheaper than dicts of datetimes)."""

    issues: list[Issue]
    index: StorageIndex | None = None


def check_resource(resource: dict[str, Any], index_id: str | None = None, *, sqlite: bool = False) -> Checked:
    """Model validation, then (only for a structurally valid resource) the semantic checks, then (only for
    a valid one, given the id it is stored under) the index rows, for SQLite or PostgreSQL."""
    issues = model_issues(resource) or semantic_issues(resource)
    if issues or index_id is None:
        return Checked(issues)
    return Checked([], storage_index(indexer.extract(resource["resourceType"], index_id, resource), sqlite))


# A verdict as it crosses back from a worker: (issues as field tuples, index tuples per table or None, patient id).
Packed = tuple[tuple[tuple[Any, ...], ...], dict[str, list[tuple[Any, ...]]] | None, str | None]


def _packed(checked: Checked) -> Packed:
    issues = tuple((i.code, i.diagnostics, i.expression, i.severity) for i in checked.issues)
    if checked.index is None:
        return issues, None, None
    return issues, checked.index.tuples, checked.index.patient_id


def _unpacked(packed: Packed) -> Checked:
    issues, tuples, patient_id = packed
    return Checked([Issue(*fields) for fields in issues], None if tuples is None else StorageIndex(tuples, patient_id))


def _check_chunk(payload: bytes, sqlite: bool) -> bytes:
    """A chunk's verdicts, marshalled: plain tuples, lists, strings and numbers load in C several times faster
    than pickled dataclasses, and the pool's result thread only passes the bytes on (it holds the GIL the
    request thread needs while it unpickles)."""
    resources, index_ids = orjson.loads(payload)
    return marshal.dumps(
        [
            _packed(check_resource(resource, index_id, sqlite=sqlite))
            for resource, index_id in zip(resources, index_ids, strict=True)
        ]
    )


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
        self, items: Iterable[tuple[dict[str, Any], str | None]], count: int, *, sqlite: bool = False
    ) -> Iterator[Checked]:
        """As `check`, for `count` (resource, index id) pairs produced one by one: each chunk goes to a worker
        as soon as its last resource is produced, so the caller prepares the next chunk (rewrites its
        references, stamps it) while the workers check this one. Inline (few resources, or no pool), `items`
        is consumed lazily, one resource per result."""
        if self._pool is None or count < INLINE_BELOW:
            return (check_resource(resource, index_id, sqlite=sqlite) for resource, index_id in items)
        futures: list[Future[bytes]] = []
        resources: list[dict[str, Any]] = []
        ids: list[str | None] = []
        for resource, index_id in items:
            resources.append(resource)
            ids.append(index_id)
            if len(resources) == CHUNK:
                futures.append(self._pool.submit(_check_chunk, orjson.dumps([resources, ids]), sqlite))
                resources, ids = [], []
        if resources:
            futures.append(self._pool.submit(_check_chunk, orjson.dumps([resources, ids]), sqlite))
        return (_unpacked(packed) for future in futures for packed in marshal.loads(future.result()))  # noqa: S302 - our own workers' bytes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


INLINE = ValidatorPool(0)
