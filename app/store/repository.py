"""The repository: versioned reads and writes of resources, their index rows, and searches.

Writes happen inside `Store.transaction()`, one database transaction that a whole FHIR transaction
bundle shares. Creates are buffered and flushed in bulk (executemany) because they dominate ingest;
anything that reads inside the transaction flushes first, so it always sees its own writes.

Concurrency: SQLite transactions that write begin IMMEDIATE (one writer at a time, others wait);
on PostgreSQL, conditional interactions take a transaction-scoped advisory lock on their condition,
so two clients racing the same `ifNoneExist` cannot both create.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.fhir.errors import FhirError, conflict, gone, not_found, precondition_failed
from app.store import indexer
from app.store.bulk import (
    StorageIndex,
    bulk_insert,
    insert_tuples,
    json_text,
    storage_datetime,
    storage_index,
    storage_tuples,
)
from app.store.db import WalCheckpointer, is_sqlite
from app.store.schema import INDEX_TABLES, Resource, ResourceHistory
from app.store.search import (
    IncludeSpec,
    SearchRequest,
    canonical_condition,
    compile_count,
    compile_select,
    encode_page_token,
    param_rows,
)

# Buffered creates are written every so many resources: a big bundle's inserts then overlap with the
# checking of its later resources in worker processes, and memory stays bounded.
_FLUSH_EVERY = 200
_PREFETCH_CHUNK = 500  # ids per IN list: well under SQLite's 32,766 bound variables
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
# Buffered creates carry their content as JSON text, and the transaction's instant in storage format, already.
_SERIALIZED = frozenset({"content", "last_updated"})

# (resource type, content) -> content to store: e.g. alias codings completed. Injected (the store knows
# nothing of mappings); must return the same dict when it changes nothing, and never mutate its input.
Normalize = Callable[[str, dict[str, Any]], dict[str, Any]]

resource_table = Resource.__table__  # type: ignore[attr-defined]
history_table = ResourceHistory.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """Which version of which resource, and when it was written."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version_id}"


@dataclass(frozen=True, slots=True)
class StoredResource(ResourceVersion):
    """One version as stored: content carries `id` and `meta.versionId/lastUpdated`; None for a deletion."""

    content: dict[str, Any] | None
    method: str = "PUT"

    @property
    def deleted(self) -> bool:
        return self.content is None


@dataclass(frozen=True, slots=True)
class SerializedResource(ResourceVersion):
    """A current version whose content is still the stored JSON text."""

    json: bytes


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: StoredResource
    created: bool  # True: 201 Created; False: 200 OK (updated, or unchanged)


@dataclass(frozen=True, slots=True)
class SearchPage:
    resources: list[StoredResource]
    total: int | None
    included: list[StoredResource] = field(default_factory=list)
    next_page: str | None = None  # the _page token of the following page, when this one is full


def _utc(value: datetime) -> datetime:
    """UTC with `datetime.UTC` as tzinfo, whatever zone the driver attached (psycopg uses the server's)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=256)  # a transaction stamps every resource it writes with the same instant
def fhir_instant(value: datetime) -> str:
    return _utc(value).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A server-assigned id: a UUID version 7 (RFC 9562), 48 bits of Unix milliseconds then 74 random bits.

    Time-ordered on purpose: every index keyed by (res_type, res_id) then grows at its right edge, so a
    bundle's inserts touch a few B-tree pages instead of one random page per row, in SQLite and PostgreSQL
    alike (random UUIDs made each commit rewrite pages spread over the whole index, and the cost per row grew
    with the table). The price is that an id tells when it was created, to the millisecond; sponsor views
    pseudonymise ids anyway."""
    raw = bytearray((time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | raw[6] & 0x0F  # version 7
    raw[8] = 0x80 | raw[8] & 0x3F  # variant 0b10 (RFC 9562)
    digits = raw.hex()  # formatted by hand: uuid.UUID(int=...) and str() cost twice as much, per resource
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _without_meta(content: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (content.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    body = {k: v for k, v in content.items() if k != "meta"}
    if meta:
        body["meta"] = meta
    return body


def _row_to_stored(row: Any, method: str = "PUT") -> StoredResource:
    return StoredResource(row.res_type, row.res_id, row.version_id, _utc(row.last_updated), row.content, method)


def parse_etag(value: str) -> int | None:
    """'W/"3"' or '"3"' or '3' -> 3; anything else -> None."""
    cleaned = value.strip().removeprefix("W/").strip('"')
    return int(cleaned) if re.fullmatch(r"[0-9]{1,9}", cleaned) else None


class Store:
    def __init__(self, engine: Engine, normalize: Normalize | None = None) -> None:
        self.engine = engine
        self.normalize = normalize
        self._sqlite = is_sqlite(engine)
        # In-process writers queue here rather than in SQLite's busy-wait loop (which sleeps and backs off).
        self._write_lock = threading.Lock() if self._sqlite else None
        in_memory = engine.url.database in (None, "", ":memory:")
        self._checkpointer = WalCheckpointer(engine) if self._sqlite and not in_memory else None

    def close(self) -> None:
        """Stop the background work of this store (the engine is the caller's to dispose of)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    # ----------------------------------------------------------------------------------------- reads

    def read(self, resource_type: str, res_id: str) -> StoredResource:
        with self.engine.connect() as conn:
            return read_current(conn, resource_type, res_id)

    def read_serialized(self, resource_type: str, res_id: str) -> SerializedResource:
        """The current version as stored JSON text, for answering a read without parsing and re-serialising.

        The hottest path of the server: one primary-key lookup on a pooled driver connection, skipping
        SQLAlchemy's statement machinery (which costs several times the query itself).
        """
        raw = self.engine.raw_connection()
        try:
            if self._sqlite:
                cursor = raw.cursor()
                cursor.execute(self._read_sql, (resource_type, res_id))
                row = cursor.fetchone()
                cursor.close()
            else:
                # Autocommit for this one statement: no BEGIN, and no ROLLBACK when the connection goes
                # back to the pool. One round trip instead of three.
                driver = raw.driver_connection
                assert driver is not None  # None only once the pool has invalidated it; this one was just checked out
                driver.autocommit = True
                try:
                    row = driver.execute(self._read_sql, (resource_type, res_id)).fetchone()
                finally:
                    driver.autocommit = False
        finally:
            raw.close()
        if row is None:
            raise not_found(f"{resource_type}/{res_id} does not exist.")
        version_id, last_updated, deleted, content = row
        if deleted:
            raise gone(f"{resource_type}/{res_id} was deleted (version {version_id}).")
        if isinstance(last_updated, str):  # SQLite keeps SQLAlchemy's text format, in UTC
            last_updated = datetime.fromisoformat(last_updated)
        return SerializedResource(resource_type, res_id, version_id, _utc(last_updated), content.encode())

    @property
    def _read_sql(self) -> str:
        if self._sqlite:
            return "SELECT version_id, last_updated, deleted, content FROM resource WHERE res_type = ? AND res_id = ?"
        return (
            "SELECT version_id, last_updated, deleted, content::text FROM resource WHERE res_type = %s AND res_id = %s"
        )

    def vread(self, resource_type: str, res_id: str, version_id: int) -> StoredResource:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(resource_table).where(
                    resource_table.c.res_type == resource_type, resource_table.c.res_id == res_id
                )
            ).first()
            if row is None:
                raise not_found(f"{resource_type}/{res_id} does not exist.")
            if row.version_id == version_id:
                if row.deleted:
                    raise gone(f"Version {version_id} of {resource_type}/{res_id} is its deletion.")
                return _row_to_stored(row)
            old = conn.execute(
                select(history_table).where(
                    history_table.c.res_type == resource_type,
                    history_table.c.res_id == res_id,
                    history_table.c.version_id == version_id,
                )
            ).first()
            if old is None:
                raise not_found(f"{resource_type}/{res_id} has no version {version_id}.")
            if old.content is None:
                raise gone(f"Version {version_id} of {resource_type}/{res_id} is its deletion.")
            return _row_to_stored(old, old.method)

    def history(
        self,
        resource_type: str | None,
        res_id: str | None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[StoredResource], int]:
        """Versions newest first (instance, type or system level), with the total count."""
        current = select(
            resource_table.c.res_type,
            resource_table.c.res_id,
            resource_table.c.version_id,
            resource_table.c.last_updated,
            resource_table.c.content,
            resource_table.c.deleted,
        )
        older = select(
            history_table.c.res_type,
            history_table.c.res_id,
            history_table.c.version_id,
            history_table.c.last_updated,
            history_table.c.content,
            history_table.c.method,
        )
        for table, statement_name in ((resource_table, "current"), (history_table, "older")):
            filters = []
            if resource_type:
                filters.append(table.c.res_type == resource_type)
            if res_id:
                filters.append(table.c.res_id == res_id)
            if since:
                filters.append(table.c.last_updated >= since)
            if statement_name == "current":
                current = current.where(*filters)
            else:
                older = older.where(*filters)
        with self.engine.connect() as conn:
            rows = [
                (
                    r.res_type,
                    r.res_id,
                    r.version_id,
                    _utc(r.last_updated),
                    r.content,
                    "DELETE" if r.deleted else ("POST" if r.version_id == 1 else "PUT"),
                )
                for r in conn.execute(current)
            ]
            rows += [
                (r.res_type, r.res_id, r.version_id, _utc(r.last_updated), r.content, r.method)
                for r in conn.execute(older)
            ]
        if res_id and not rows:
            raise not_found(f"{resource_type}/{res_id} does not exist.")
        rows.sort(key=lambda r: (r[3], r[2]), reverse=True)
        page = rows[offset : offset + count]
        return [StoredResource(t, i, v, lu, c, m) for t, i, v, lu, c, m in page], len(rows)

    def search(self, request: SearchRequest) -> SearchPage:
        with self.engine.connect() as conn:
            return run_search(conn, request)

    def compartment(self, patient_id: str, types: Sequence[str] | None = None) -> list[StoredResource]:
        """Every current resource in a patient's compartment (the Patient first)."""
        with self.engine.connect() as conn:
            patient = read_current(conn, "Patient", patient_id)
            statement = select(resource_table).where(
                resource_table.c.patient_id == patient_id,
                resource_table.c.deleted.is_(False),
                resource_table.c.res_type != "Patient",
            )
            if types:
                statement = statement.where(resource_table.c.res_type.in_(types))
            rows = conn.execute(statement.order_by(resource_table.c.res_type, resource_table.c.res_id))
            return [patient, *(_row_to_stored(r) for r in rows)]

    # ---------------------------------------------------------------------------------------- writes

    @contextmanager
    def transaction(self) -> Iterator[WriteTransaction]:
        """One database transaction for a whole interaction or bundle; rolled back on any error."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect() as conn:
                checkpointer = self._checkpointer
                if self._sqlite:
                    conn.info["sqlite_begin"] = "IMMEDIATE"
                if checkpointer is not None:
                    checkpointer.before_write(conn.connection)
                try:
                    with conn.begin():
                        tx = WriteTransaction(conn, self._sqlite, self.normalize)
                        yield tx
                        tx.flush()
                    if checkpointer is not None:
                        checkpointer.written(tx.written)
                except IntegrityError:
                    raise conflict(
                        "Another request wrote the same resource at the same moment; nothing was saved. Retry."
                    ) from None
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) not in _RETRYABLE_SQLSTATES:
                        raise
                    raise conflict(
                        "This request and a concurrent one locked the same resources in opposite orders; the "
                        "database cancelled this one and nothing was saved. Retry it."
                    ) from None
        finally:
            if lock is not None:
                lock.release()


def read_current(conn: Connection, resource_type: str, res_id: str) -> StoredResource:
    row = conn.execute(
        select(resource_table).where(resource_table.c.res_type == resource_type, resource_table.c.res_id == res_id)
    ).first()
    if row is None:
        raise not_found(f"{resource_type}/{res_id} does not exist.")
    if row.deleted:
        raise gone(f"{resource_type}/{res_id} was deleted (version {row.version_id}).")
    return _row_to_stored(row)


def run_search(conn: Connection, request: SearchRequest) -> SearchPage:
    """One page of matches (plus _include/_revinclude). The total is counted when asked for (`_total=accurate`
    or `estimate`, `_summary=count`); otherwise it is given only when it comes free, on a last page.
    Counting every match of a broad search (a lab code over the whole hospital) costs far more than the page."""
    counted = request.total in ("accurate", "estimate") or request.summary == "count" or request.count == 0
    total = int(conn.execute(compile_count(request)).scalar_one()) if counted else None
    if request.count == 0:
        return SearchPage([], total)
    rows = conn.execute(compile_select(request)).all()
    last_page = request.count is None or len(rows) < request.count
    # On a last page the total is the page's position plus what it holds (links carry _offset with _page).
    if total is None and request.total != "none" and last_page:
        total = request.offset + len(rows)
    matches = [_row_to_stored(r) for r in rows]
    included = _includes(conn, request, matches) if matches and (request.include or request.revinclude) else []
    next_page = None
    if request.count and len(rows) == request.count:
        last = rows[-1]._mapping
        next_page = encode_page_token(request, [last[f"k{i}"] for i in range(len(request.sort) + 1)])
    return SearchPage(matches, total, included, next_page)


MAX_INCLUDED = 5_000
MAX_ITERATIONS = 8


def _includes(conn: Connection, request: SearchRequest, matches: list[StoredResource]) -> list[StoredResource]:
    """Resources named by _include (referenced) and _revinclude (referring), following :iterate specs
    over what each round added, until nothing new turns up (bounded)."""
    seen = {(r.resource_type, r.id) for r in matches}
    frontier = set(seen)
    specs = request.include_specs()
    included: list[StoredResource] = []
    for _round in range(MAX_ITERATIONS):
        keys = [k for k in dict.fromkeys(_included_keys(conn, specs, frontier)) if k not in seen]
        if not keys:
            break
        found = _read_many(conn, keys[: MAX_INCLUDED - len(included)])
        included.extend(found)
        frontier = {(r.resource_type, r.id) for r in found}
        seen |= frontier
        specs = [spec for spec in specs if spec.iterate]
        if not specs or len(included) >= MAX_INCLUDED:
            break
    return included


def _included_keys(conn: Connection, specs: list[IncludeSpec], frontier: set[tuple[str, str]]) -> list[tuple[str, str]]:
    refs = INDEX_TABLES["reference"]
    by_type = _by_type(frontier)
    keys: list[tuple[str, str]] = []
    for spec in specs:
        if spec.reverse:  # resources of spec.source whose `param` refers to the frontier
            for target_type, ids in by_type.items():
                if spec.target and spec.target != target_type:
                    continue
                statement = select(refs.c.res_type, refs.c.res_id).where(
                    refs.c.res_type == spec.source, refs.c.target_type == target_type, refs.c.target_id.in_(ids)
                )
                if spec.param != "*":
                    statement = statement.where(param_rows(refs, spec.source, spec.param))
                keys.extend((r.res_type, r.res_id) for r in conn.execute(statement))
        elif spec.source in by_type:  # what the frontier's `param` refers to
            statement = select(refs.c.target_type, refs.c.target_id).where(
                refs.c.res_type == spec.source, refs.c.res_id.in_(by_type[spec.source]), refs.c.target_id.is_not(None)
            )
            if spec.param != "*":
                statement = statement.where(param_rows(refs, spec.source, spec.param))
            if spec.target:
                statement = statement.where(refs.c.target_type == spec.target)
            keys.extend((r.target_type, r.target_id) for r in conn.execute(statement))
    return keys


def _by_type(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for resource_type, res_id in keys:
        grouped.setdefault(resource_type, []).append(res_id)
    return grouped


def _read_many(conn: Connection, keys: list[tuple[str, str]]) -> list[StoredResource]:
    """Current versions of these (type, id) pairs. One `res_type = ? AND res_id IN (...)` per type: SQLite
    does not use the primary key for a row-value IN over (res_type, res_id) and scans the table instead."""
    found: list[StoredResource] = []
    for resource_type, ids in _by_type(keys).items():
        for start in range(0, len(ids), 500):
            rows = conn.execute(
                select(resource_table).where(
                    resource_table.c.res_type == resource_type,
                    resource_table.c.res_id.in_(ids[start : start + 500]),
                    resource_table.c.deleted.is_(False),
                )
            )
            found.extend(_row_to_stored(r) for r in rows)
    return found


class WriteTransaction:
    """Writes within one database transaction. Not thread-safe: one request owns it."""

    def __init__(self, conn: Connection, sqlite: bool, normalize: Normalize | None = None) -> None:
        self.conn = conn
        self._sqlite = sqlite
        self._normalize = normalize
        self.now = datetime.now(UTC)
        self._now_stored = storage_datetime(self.now, sqlite)  # every create of the transaction is stamped with it
        self._pending_resources: list[dict[str, Any]] = []
        self._pending_index: dict[str, list[tuple[Any, ...]]] = {}  # storage tuples per index table
        self._pending_keys: set[tuple[str, str]] = set()
        self._held_locks: set[str] = set()
        self.written = 0  # resources created, updated or deleted
        # Current rows read ahead in bulk (None: known not to exist); each is used once, then re-read.
        self._prefetched: dict[tuple[str, str], Any] = {}

    # Buffered creates ---------------------------------------------------------------------------

    def create(self, resource_type: str, content: dict[str, Any], res_id: str | None = None) -> WriteResult:
        """Create a resource with a server id (or the given one, for update-as-create of a new id)."""
        return self.add_created(self.stamp_new(resource_type, content, res_id or new_id()))

    def stamp_new(self, resource_type: str, content: dict[str, Any], res_id: str) -> StoredResource:
        """Version 1 of a new resource as it will be stored (normalised, id and meta stamped), not yet written:
        bundles have it checked and indexed in worker processes, then `add_created` writes it."""
        if self._normalize is not None:
            content = self._normalize(resource_type, content)
        return self._stamp(resource_type, res_id, 1, content, "POST")

    def add_created(
        self, stored: StoredResource, index: StorageIndex | None = None, content: str | None = None
    ) -> WriteResult:
        """Write a resource from `stamp_new`, with its index rows when they were already extracted (for this
        database: see `sqlite`) and, given as `content`, the JSON text to store instead of `stored.content`
        (from the check that extracted the rows: the validation workers resolve a bundle's references in their
        own copy, so `stored.content` may then still hold them as sent: the text is what is stored)."""
        if content is not None and index is None:
            raise ValueError("content given as JSON text comes with the index rows extracted from it")
        self._queue(stored, index, content)
        return WriteResult(stored, created=True)

    def _create(self, resource_type: str, content: dict[str, Any], res_id: str | None) -> WriteResult:
        res_id = res_id or new_id()
        stored = self._stamp(resource_type, res_id, 1, content, "POST")
        self._queue(stored)
        return WriteResult(stored, created=True)

    def _stamp(
        self, resource_type: str, res_id: str, version: int, content: dict[str, Any], method: str
    ) -> StoredResource:
        meta = dict(content.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = fhir_instant(self.now)
        stamped = {"resourceType": resource_type, "id": res_id, **content}
        stamped["id"] = res_id
        stamped["meta"] = meta
        return StoredResource(resource_type, res_id, version, self.now, stamped, method)

    @property
    def sqlite(self) -> bool:
        """Is the database SQLite (whose storage format index rows prepared elsewhere must use)?"""
        return self._sqlite

    def _queue(self, stored: StoredResource, index: StorageIndex | None = None, content: str | None = None) -> None:
        assert stored.content is not None
        if index is None:
            index = storage_index(indexer.extract(stored.resource_type, stored.id, stored.content), self._sqlite)
        self._pending_resources.append(
            {
                "res_type": stored.resource_type,
                "res_id": stored.id,
                "version_id": stored.version_id,
                "last_updated": self._now_stored,
                "deleted": False,
                "patient_id": index.patient_id,
                "content": json_text(stored.content) if content is None else content,
            }
        )
        for kind, tuples in index.tuples.items():
            self._pending_index.setdefault(kind, []).extend(tuples)
        self._pending_keys.add((stored.resource_type, stored.id))
        self.written += 1
        if len(self._pending_resources) >= _FLUSH_EVERY:
            self.flush()

    @property
    def pending(self) -> int:
        """Creates buffered, not yet written."""
        return len(self._pending_resources)

    def flush(self) -> None:
        if self._pending_resources:
            tuples = storage_tuples(resource_table, self._pending_resources, self._sqlite, serialized=_SERIALIZED)
            insert_tuples(self.conn, resource_table, tuples)
            self._pending_resources = []
        for kind, tuples in self._pending_index.items():
            insert_tuples(self.conn, INDEX_TABLES[kind], tuples)
        self._pending_index = {}
        for key in self._pending_keys:  # a prefetched "does not exist" is stale once the create is written
            self._prefetched.pop(key, None)
        self._pending_keys = set()

    # Immediate writes ---------------------------------------------------------------------------

    def is_current(self, resource_type: str, res_id: str) -> bool:
        """Does this resource exist now (not deleted), counting creates still buffered?"""
        if (resource_type, res_id) in self._pending_keys:
            return True
        row = self._current_row(resource_type, res_id)
        return row is not None and not row.deleted

    def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read (and on PostgreSQL lock) the current rows of resources about to be updated or deleted, a
        few queries for a whole bundle instead of one per entry: a re-import of 20,000 unchanged rows
        spent most of its time in those single-row reads."""
        wanted = {key for key in keys if key not in self._pending_keys}
        for resource_type, ids in _by_type(wanted).items():
            for start in range(0, len(ids), _PREFETCH_CHUNK):
                chunk = ids[start : start + _PREFETCH_CHUNK]
                statement = select(resource_table).where(
                    resource_table.c.res_type == resource_type, resource_table.c.res_id.in_(chunk)
                )
                if not self._sqlite:
                    statement = statement.with_for_update()
                found = {row.res_id: row for row in self.conn.execute(statement)}
                for res_id in chunk:
                    self._prefetched[(resource_type, res_id)] = found.get(res_id)

    def _current_row(self, resource_type: str, res_id: str) -> Any:
        key = (resource_type, res_id)
        if key in self._pending_keys:  # created earlier in this transaction, not yet written
            self.flush()
        elif key in self._prefetched:
            return self._prefetched.pop(key)
        statement = select(resource_table).where(
            resource_table.c.res_type == resource_type, resource_table.c.res_id == res_id
        )
        if not self._sqlite:
            statement = statement.with_for_update()
        return self.conn.execute(statement).first()

    def update(
        self, resource_type: str, res_id: str, content: dict[str, Any], *, if_match: int | None = None
    ) -> WriteResult:
        """Update (or create with this id). An unchanged body writes no new version."""
        if self._normalize is not None:  # before the comparison: the stored version is normalised too
            content = self._normalize(resource_type, content)
        row = self._current_row(resource_type, res_id)
        if row is None or row.deleted:
            if if_match is not None:
                raise precondition_failed(
                    f"If-Match names version {if_match}, but {resource_type}/{res_id} does not exist.", code="not-found"
                )
            if row is None:
                return self._create(resource_type, content, res_id)
            stored = self._stamp(resource_type, res_id, row.version_id + 1, content, "PUT")
            self._replace(row, stored)
            return WriteResult(stored, created=True)
        if if_match is not None and if_match != row.version_id:
            raise precondition_failed(
                f"{resource_type}/{res_id} is at version {row.version_id}, not {if_match} as If-Match says: "
                "someone changed it since you read it. Read it again, re-apply your change and retry."
            )
        if _without_meta({**content, "id": res_id, "resourceType": resource_type}) == _without_meta(row.content):
            return WriteResult(_row_to_stored(row), created=False)
        stored = self._stamp(resource_type, res_id, row.version_id + 1, content, "PUT")
        self._replace(row, stored)
        return WriteResult(stored, created=False)

    def delete(self, resource_type: str, res_id: str, *, if_match: int | None = None) -> StoredResource | None:
        """Delete; returns the tombstone, or None when there was nothing to delete (still a success)."""
        row = self._current_row(resource_type, res_id)
        if row is None or row.deleted:
            return None
        if if_match is not None and if_match != row.version_id:
            raise precondition_failed(
                f"{resource_type}/{res_id} is at version {row.version_id}, not {if_match} as If-Match says."
            )
        tombstone = StoredResource(resource_type, res_id, row.version_id + 1, self.now, None, "DELETE")
        self._replace(row, tombstone)
        return tombstone

    def _replace(self, row: Any, stored: StoredResource) -> None:
        """Move the current version to history and write `stored` (a new version or a tombstone)."""
        key = (stored.resource_type, stored.id)
        self.written += 1
        self.conn.execute(
            insert(history_table).values(
                res_type=row.res_type,
                res_id=row.res_id,
                version_id=row.version_id,
                last_updated=row.last_updated,
                method="DELETE" if row.deleted else ("POST" if row.version_id == 1 else "PUT"),
                content=row.content,
            )
        )
        for table in INDEX_TABLES.values():
            self.conn.execute(delete(table).where(table.c.res_type == key[0], table.c.res_id == key[1]))
        patient_id = None
        if stored.content is not None:
            index = indexer.extract(stored.resource_type, stored.id, stored.content)
            patient_id = index.patient_id
            for kind, rows in index.rows.items():
                bulk_insert(self.conn, INDEX_TABLES[kind], rows)
        self.conn.execute(
            update(resource_table)
            .where(resource_table.c.res_type == key[0], resource_table.c.res_id == key[1])
            .values(
                version_id=stored.version_id,
                last_updated=self.now,
                deleted=stored.content is None,
                patient_id=patient_id,
                content=stored.content,
            )
        )

    # Reads inside the transaction ---------------------------------------------------------------

    def read(self, resource_type: str, res_id: str) -> StoredResource:
        self.flush()
        return read_current(self.conn, resource_type, res_id)

    def search(self, request: SearchRequest) -> SearchPage:
        self.flush()
        return run_search(self.conn, request)

    def lock_conditions(self, conditions: Iterable[tuple[str, str]]) -> None:
        """Serialise conditional interactions on the same (type, condition) pairs, on PostgreSQL (SQLite
        writers are serial already). Conditions are compared in canonical form (decoded, parameters
        sorted) and locked in a fixed order, so that two bundles naming the same conditions in different
        orders wait for each other instead of deadlocking. Locks last until the transaction ends."""
        if self._sqlite:
            return
        keys = sorted({f"{t}?{canonical_condition(c)}" for t, c in conditions} - self._held_locks)
        for key in keys:
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            self.conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest, "big", signed=True)}
            )
            self._held_locks.add(key)


__all__ = ["FhirError", "SearchPage", "Store", "StoredResource", "WriteResult", "WriteTransaction", "parse_etag"]
