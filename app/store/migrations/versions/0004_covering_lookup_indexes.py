"""covering lookup indexes for population screening

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 01:00:00.000000

The lookup indexes of idx_token, idx_date and idx_quantity (canonical) end with the resource id (and, for
tokens, the patient id): eligibility screening (app/eligibility/sql.py) reads candidates, dates and values
for a whole population from these indexes alone (index-only scans), never from the tables' heaps, whose rows
for one parameter are spread over the whole table. Searches use the same leading columns as before.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, index, columns before, columns after)
INDEXES = (
    ("idx_token", "ix_idx_token_lookup", ["code", "system"], ["code", "system", "res_id", "patient_id"]),
    ("idx_date", "ix_idx_date_lookup", ["low", "high"], ["low", "high", "res_id"]),
    ("idx_quantity", "ix_idx_quantity_canonical", ["canonical_code", "canonical_value"],
     ["canonical_code", "canonical_value", "res_id"]),
)  # fmt: skip


def upgrade() -> None:
    for table, name, _before, after in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["res_type", "param", *after], unique=False)


def downgrade() -> None:
    for table, name, before, _after in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["res_type", "param", *before], unique=False)
