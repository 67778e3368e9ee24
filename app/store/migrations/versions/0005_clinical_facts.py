"""eligibility facts: clinical_fact, filled for the resources already stored

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 06:00:00.000000

One row per clinical resource and coding of its code with what a screening reads (app/eligibility/facts.py),
so population screenings scan rows by code and group them by patient instead of joining the search-index
tables. Existing Observations, Conditions and medication resources get their facts here. A large database
takes a while (~6,000 resources/s per process; progress on the `trialbridge.facts` logger): fill it offline
first, in id ranges by several processes (`app.store.facts.write_facts(conn, first=..., last=...)`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# What the screening reads from the code index alone on PostgreSQL (index-only scans).
COVERED = ("patient_id", "status", "clinical_status", "lo", "hi", "value", "unit_system", "unit_code",
           "canonical_value", "canonical_code", "positive", "res_id")  # fmt: skip

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinical_fact",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("code", sa.String(255), nullable=True),
        sa.Column("status", sa.String(255), nullable=True),
        sa.Column("clinical_status", sa.String(255), nullable=True),
        sa.Column("lo", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hi", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("unit_system", sa.String(255), nullable=True),
        sa.Column("unit_code", sa.String(255), nullable=True),
        sa.Column("canonical_value", sa.Float, nullable=True),
        sa.Column("canonical_code", sa.String(255), nullable=True),
        sa.Column("positive", sa.SmallInteger, nullable=True),
    )
    # Filled before the indexes are built: one bulk build instead of row-by-row maintenance. `write_facts`
    # writes the columns the table has here (reflected), whatever later revisions add.
    from app.store.facts import write_facts  # the facts as this version of the code derives them

    write_facts(op.get_bind())
    op.create_index("ix_clinical_fact_resource", "clinical_fact", ["res_type", "res_id"])
    op.create_index(
        "ix_clinical_fact_code",
        "clinical_fact",
        ["res_type", "code", "system"],
        postgresql_ops={"code": "text_pattern_ops"},
        postgresql_include=list(COVERED),
    )
    op.create_index("ix_clinical_fact_patient", "clinical_fact", ["patient_id", "res_type"])

    # A screening's population (every live Patient) from an index alone, not the resource table's rows.
    op.create_index("ix_resource_live", "resource", ["res_type", "deleted", "res_id"])


def downgrade() -> None:
    op.drop_index("ix_resource_live", table_name="resource")
    op.drop_table("clinical_fact")
