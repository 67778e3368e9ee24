"""Bulk inserts at driver level: COPY on PostgreSQL, executemany on SQLite.

Ingest writes ~10 index rows per resource; going through SQLAlchemy's per-row parameter processing
cost more than validating the resource. Here rows become plain tuples in the exact storage format
SQLAlchemy itself uses (so its reads and comparisons still work), and go to the driver in one call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import JSON, Connection, DateTime, Table

from app.fhir.errors import conflict, unprocessable


def _sqlite_datetime(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (UTC here); it compares these strings in searches.
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


def _converters(table: Table, sqlite: bool) -> list[Any]:
    converters: list[Any] = []
    for column in table.columns:
        if isinstance(column.type, JSON):
            converters.append(lambda v: None if v is None else orjson.dumps(v).decode())
        elif sqlite and isinstance(column.type, DateTime):
            converters.append(lambda v: None if v is None else _sqlite_datetime(v))
        else:
            converters.append(None)
    return converters


_CONVERTERS: dict[tuple[str, bool], list[Any]] = {}


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    sqlite = conn.dialect.name == "sqlite"
    key = (table.name, sqlite)
    converters = _CONVERTERS.get(key)
    if converters is None:
        converters = _CONVERTERS[key] = _converters(table, sqlite)
    names = [c.name for c in table.columns]
    converted = [(i, f) for i, f in enumerate(converters) if f is not None]
    if converted:
        tuples = []
        for row in rows:
            values = list(map(row.get, names))
            for i, convert in converted:
                values[i] = convert(values[i])
            tuples.append(tuple(values))
    else:
        tuples = [tuple(map(row.get, names)) for row in rows]
    columns = ", ".join(names)
    if sqlite:
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
