"""Bulk inserts at driver level: COPY on PostgreSQL, executemany on SQLite.

Ingest writes ~10 index rows per resource; going through SQLAlchemy's per-row parameter processing
cost more than validating the resource. Here rows become plain tuples in the exact storage format
SQLAlchemy itself uses (so its reads and comparisons still work), and go to the driver in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import JSON, Connection, DateTime, Table

from app.fhir.errors import conflict, unprocessable
from app.store.indexer import IndexRows
from app.store.schema import INDEX_TABLES


def _sqlite_datetime(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (UTC here); it compares these strings in searches.
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


def _iso_datetime(value: datetime) -> str:
    # PostgreSQL parses the ISO form with its offset in COPY; as a string it crosses process boundaries far
    # cheaper than a pickled datetime.
    return value.isoformat()


def _converters(table: Table, sqlite: bool) -> list[Any]:
    converters: list[Any] = []
    for column in table.columns:
        if isinstance(column.type, JSON):
            converters.append(lambda v: None if v is None else orjson.dumps(v).decode())
        elif isinstance(column.type, DateTime):
            convert = _sqlite_datetime if sqlite else _iso_datetime
            converters.append(lambda v, convert=convert: None if v is None else convert(v))
        else:
            converters.append(None)
    return converters


_CONVERTERS: dict[tuple[str, tuple[str, ...], bool], list[Any]] = {}


def storage_tuples(table: Table, rows: list[dict[str, Any]], sqlite: bool) -> list[tuple[Any, ...]]:
    """Rows as tuples in the table's column order and the database's storage format (what `insert_tuples`
    takes): JSON serialised, datetimes as the strings each database stores or parses."""
    key = (table.name, tuple(table.columns.keys()), sqlite)  # a reflected table may have other columns
    converters = _CONVERTERS.get(key)
    if converters is None:
        converters = _CONVERTERS[key] = _converters(table, sqlite)
    names = [c.name for c in table.columns]
    converted = [(i, f) for i, f in enumerate(converters) if f is not None]
    if not converted:
        return [tuple(map(row.get, names)) for row in rows]
    tuples = []
    for row in rows:
        values = list(map(row.get, names))
        for i, convert in converted:
            values[i] = convert(values[i])
        tuples.append(tuple(values))
    return tuples


@dataclass(frozen=True, slots=True)
class StorageIndex:
    """A resource's index rows in storage format, per index table (keyed like `INDEX_TABLES`)."""

    tuples: dict[str, list[tuple[Any, ...]]]
    patient_id: str | None


def storage_index(index: IndexRows, sqlite: bool) -> StorageIndex:
    return StorageIndex(
        {kind: storage_tuples(INDEX_TABLES[kind], rows, sqlite) for kind, rows in index.rows.items()}, index.patient_id
    )


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    insert_tuples(conn, table, storage_tuples(table, rows, conn.dialect.name == "sqlite"))


def insert_tuples(conn: Connection, table: Table, tuples: list[tuple[Any, ...]]) -> None:
    """Insert rows from `storage_tuples` in one driver call."""
    if not tuples:
        return
    names = [c.name for c in table.columns]
    columns = ", ".join(names)
    if conn.dialect.name == "sqlite":
        placeholders = ", ".join("?" for _ in names)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) VALUES ({placeholders})", tuples)  # noqa: S608
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for values in tuples:
                copy.write_row(values)
    except psycopg.errors.UniqueViolation:
        raise conflict(
            "Another request created the same resource at the same moment; nothing was saved. Retry."
        ) from None
    except psycopg.DataError as exc:  # a value PostgreSQL refuses (too long for an index column, ...)
        raise unprocessable(f"A value cannot be stored: {exc.diag.message_primary}.") from None
