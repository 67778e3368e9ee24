"""Model validation of many resources at once, spread over worker processes.

Validating with the fhir.resources models costs ~250 µs per resource and holds the GIL, so within
one Python process it caps a bundle at one core. For large bundles the models run in a small
process pool while the request thread resolves ids, rewrites references and builds index rows;
the transaction commits only after every resource passed. Small batches validate inline, where
shipping them to another process would cost more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import orjson

from app.fhir.errors import Issue
from app.fhir.validation import model_issues

INLINE_BELOW = 64  # resources; below this a round trip to a worker costs more than it saves
CHUNK = 100

Waiter = Callable[[], list[list[Issue]]]


def _validate_chunk(payload: bytes) -> list[list[Issue]]:
    return [model_issues(resource) for resource in orjson.loads(payload)]


def default_workers() -> int:
    """One worker per core the process may use; 0 (inline) on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 else 0


class ValidatorPool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # forkserver: workers start from a clean interpreter, not a copy of a threaded server.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(workers, mp_context=context)

    def start(self, resources: Sequence[dict[str, Any]]) -> Waiter:
        """Begin validating; the returned callable gives each resource's issues, in order."""
        if self._pool is None or len(resources) < INLINE_BELOW:
            # Validate now, before the caller opens its database transaction: on SQLite that transaction
            # holds the database's write lock, which other server processes then wait for.
            results = [model_issues(r) for r in resources]
            return lambda: results
        futures: list[Future[list[list[Issue]]]] = [
            self._pool.submit(_validate_chunk, orjson.dumps(resources[start : start + CHUNK]))
            for start in range(0, len(resources), CHUNK)
        ]
        return lambda: [issues for future in futures for issues in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


INLINE = ValidatorPool(0)
