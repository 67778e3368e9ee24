"""Tables: current resources, superseded versions, and one search-index table per parameter type.

Index rows are written at write time, keyed by (res_type, res_id) and carrying the resource's
patient (`patient_id`, its Patient compartment owner), so that a later distributed engine can
shard every table by patient and population queries (eligibility, cohorts) need no join to find
whose data a row is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Index, SmallInteger, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# One JSON column type for both databases: JSONB on PostgreSQL (queryable, compact), JSON text on SQLite.
JsonColumn = JSON().with_variant(JSONB(), "postgresql")

metadata = SQLModel.metadata


class Resource(SQLModel, table=True):
    """The current version of every resource; a delete leaves a tombstone (deleted=True, content NULL)."""

    __tablename__ = "resource"
    __table_args__ = (
        Index("ix_resource_type_updated", "res_type", "last_updated"),
        Index("ix_resource_patient", "patient_id"),
        # the live resources of a type from the index alone (a screening's population: every Patient)
        Index("ix_resource_live", "res_type", "deleted", "res_id"),
    )

    res_type: str = Field(primary_key=True, max_length=64)
    res_id: str = Field(primary_key=True, max_length=64)
    version_id: int
    last_updated: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    deleted: bool = False
    patient_id: str | None = Field(default=None, max_length=64)
    content: dict[str, Any] | None = Field(default=None, sa_column=Column(JsonColumn, nullable=True))


class ResourceHistory(SQLModel, table=True):
    """Superseded versions (the current one lives in `resource`); `method` is the interaction that wrote it."""

    __tablename__ = "resource_history"
    __table_args__ = (Index("ix_history_type_updated", "res_type", "last_updated"),)

    res_type: str = Field(primary_key=True, max_length=64)
    res_id: str = Field(primary_key=True, max_length=64)
    version_id: int = Field(primary_key=True)
    last_updated: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    method: str = Field(max_length=8)
    content: dict[str, Any] | None = Field(default=None, sa_column=Column(JsonColumn, nullable=True))


def _index_table(name: str, *value_columns: Column[Any] | Index, lookup: tuple[str, ...]) -> Table:
    """An index table: who (res_type, res_id, patient_id), which parameter, and the indexed values.

    No primary key on purpose: rows are replaced wholesale per resource and never addressed singly.
    """
    return Table(
        name,
        metadata,
        Column("res_type", String(64), nullable=False),
        Column("res_id", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *value_columns,
        Column("patient_id", String(64), nullable=True),
        Index(f"ix_{name}_resource", "res_type", "res_id"),
        Index(f"ix_{name}_lookup", "res_type", "param", *lookup),
    )


idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("text", Text, nullable=True),  # normalised display/text, for :text
    lookup=("code", "system", "res_id", "patient_id"),  # covering: population screening reads only the index
)
idx_string = _index_table(
    "idx_string",
    Column("value", Text, nullable=False),  # lower-cased, accents removed: what default/:contains compare
    Column("exact", Text, nullable=False),  # as written, for :exact
    lookup=("value",),
)
idx_date = _index_table(
    "idx_date",
    Column("low", DateTime(timezone=True), nullable=True),  # NULL low: open start
    Column("high", DateTime(timezone=True), nullable=True),  # NULL high: open end
    lookup=("low", "high", "res_id"),
)
idx_number = _index_table("idx_number", Column("value", Float, nullable=False), lookup=("value",))
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    # The same quantity in UCUM base units, so comparisons work across units (filled where convertible).
    Column("canonical_value", Float, nullable=True),
    Column("canonical_code", String(255), nullable=True),
    Index("ix_idx_quantity_canonical", "res_type", "param", "canonical_code", "canonical_value", "res_id"),
    lookup=("code", "value"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_version", String(64), nullable=True),
    Column("url", Text, nullable=True),  # absolute or canonical references, as written
    Column("identifier_system", String(255), nullable=True),  # Reference.identifier, for :identifier
    Column("identifier_value", String(255), nullable=True),
    lookup=("target_id", "target_type"),
)
idx_uri = _index_table("idx_uri", Column("value", Text, nullable=False), lookup=("value",))
# Composite parameters (code-value-quantity, ...): both components of one element in one row, so that
# "code X with value > Y" cannot match X from one component and Y from another.
idx_composite = _index_table(
    "idx_composite",
    Column("c1_system", String(255), nullable=True),  # first component: a token (or a reference as Type/id)
    Column("c1_code", String(255), nullable=True),
    Column("c2_system", String(255), nullable=True),  # second: token, quantity, date or string
    Column("c2_code", String(255), nullable=True),
    Column("c2_value", Float, nullable=True),
    Column("c2_unit", String(255), nullable=True),
    Column("c2_canonical_value", Float, nullable=True),
    Column("c2_canonical_code", String(255), nullable=True),
    Column("c2_low", DateTime(timezone=True), nullable=True),
    Column("c2_high", DateTime(timezone=True), nullable=True),
    Column("c2_text", Text, nullable=True),
    lookup=("c1_code", "c2_code"),
)

FACT_COVERED = (
    "status",
    "clinical_status",
    "lo",
    "hi",
    "value",
    "unit_system",
    "unit_code",
    "canonical_value",
    "canonical_code",
    "positive",
    "res_id",
)
# Eligibility facts (app/eligibility/facts.py): per clinical resource (Observation, Condition, medication
# statements, requests, administrations) and coding of its `code`, what a screening reads, in one row, so a
# population screening scans rows by code and groups them by patient without joining index tables.
clinical_fact = Table(
    "clinical_fact",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    # Observation / medication status; Condition verification status (a void one when any coding is void)
    Column("status", String(255), nullable=True),  # as long as a token code: a Condition's may be a local one
    Column("clinical_status", String(255), nullable=True),  # Condition: an active code when any coding is active
    Column("lo", DateTime(timezone=True), nullable=True),  # the date span the screening reads (UTC instants)
    Column("hi", DateTime(timezone=True), nullable=True),
    Column("value", Float, nullable=True),  # Observation.valueQuantity as written and in UCUM base units
    Column("unit_system", String(255), nullable=True),
    Column("unit_code", String(255), nullable=True),
    Column("canonical_value", Float, nullable=True),
    Column("canonical_code", String(255), nullable=True),
    Column("positive", SmallInteger, nullable=True),  # Observation: 1 positive, 0 negative, NULL unreadable
    Index("ix_clinical_fact_resource", "res_type", "res_id"),
    # PostgreSQL: covering (a screening reads its candidates from the index alone, in code order, instead of
    # fetching rows spread over the whole table) and with pattern ops (ATC / ICD-10 prefixes are index ranges).
    Index(
        "ix_clinical_fact_code",
        "res_type",
        "code",
        "system",
        "patient_id",  # a shard of a screening reads its own patients' rows of a coding (migration 0007)
        postgresql_ops={"code": "text_pattern_ops"},
        postgresql_include=list(FACT_COVERED),
    ),
    Index("ix_clinical_fact_patient", "patient_id", "res_type"),
)

# Tables of rows derived from each resource at write time and replaced with it (keyed by parameter type,
# and "fact" for the eligibility facts).
INDEX_TABLES: dict[str, Table] = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "reference": idx_reference,
    "uri": idx_uri,
    "composite": idx_composite,
    "fact": clinical_fact,
}

__all__ = ["INDEX_TABLES", "Resource", "ResourceHistory", "metadata"]
