"""Writing the eligibility facts (`clinical_fact`) for resources stored before they existed.

Ingest writes facts with the index rows (`indexer.extract`); this fills them in for the rows already in a
database: the migration that created the table calls it, and a large population can be filled in ranges by
several processes (`write_facts(conn, first=..., last=...)`, bench/eligibility.py does). Resources are read
in pages of `batch` by primary key, their fact parameters extracted again, their facts inserted in bulk.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import Connection, MetaData, Table, delete, select

from app.eligibility.facts import FACT_PARAMETERS, FACT_TYPES
from app.store import indexer
from app.store.bulk import bulk_insert
from app.store.schema import Resource, clinical_fact

resource_table = Resource.__table__  # type: ignore[attr-defined]
log = logging.getLogger("trialbridge.facts")
_PROGRESS_EVERY = 200_000  # resources between progress lines


def write_facts(conn: Connection, *, first: str | None = None, last: str | None = None, batch: int = 2000) -> int:
    """Replace the facts of every current resource of a fact type (with ids in [first, last) when given);
    returns how many fact rows were written. Writes the columns the database's table has (reflected): a
    migration that runs this on an older revision of the table must not write columns added later."""
    stored_table = Table(clinical_fact.name, MetaData(), autoload_with=conn)
    written = read = 0
    for resource_type in sorted(FACT_TYPES):
        where = [resource_table.c.res_type == resource_type, resource_table.c.deleted.is_(False)]
        if first is not None:
            where.append(resource_table.c.res_id >= first)
        if last is not None:
            where.append(resource_table.c.res_id < last)
        conn.execute(
            delete(clinical_fact).where(
                clinical_fact.c.res_type == resource_type,
                *([clinical_fact.c.res_id >= first] if first is not None else []),
                *([clinical_fact.c.res_id < last] if last is not None else []),
            )
        )
        after: str | None = None
        while True:
            page = select(resource_table.c.res_id, resource_table.c.content).where(*where)
            if after is not None:
                page = page.where(resource_table.c.res_id > after)
            rows = conn.execute(page.order_by(resource_table.c.res_id).limit(batch)).all()
            if not rows:
                break
            facts: list[dict[str, Any]] = []
            for res_id, content in rows:
                resource = orjson.loads(content) if isinstance(content, str | bytes) else content
                if isinstance(resource, dict):
                    index = indexer.extract(resource_type, res_id, resource, only=FACT_PARAMETERS[resource_type])
                    facts += index.rows.get("fact", [])
            bulk_insert(conn, stored_table, facts)
            written += len(facts)
            read += len(rows)
            if read // _PROGRESS_EVERY != (read - len(rows)) // _PROGRESS_EVERY:
                log.info("eligibility facts: %d resources read, %d fact rows written", read, written)
            after = rows[-1][0]
    return written


__all__ = ["write_facts"]
