"""composite search index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:14:58.414088
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "idx_composite",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("c1_system", sa.String(length=255), nullable=True),
        sa.Column("c1_code", sa.String(length=255), nullable=True),
        sa.Column("c2_system", sa.String(length=255), nullable=True),
        sa.Column("c2_code", sa.String(length=255), nullable=True),
        sa.Column("c2_value", sa.Float(), nullable=True),
        sa.Column("c2_unit", sa.String(length=255), nullable=True),
        sa.Column("c2_canonical_value", sa.Float(), nullable=True),
        sa.Column("c2_canonical_code", sa.String(length=255), nullable=True),
        sa.Column("c2_low", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_high", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_text", sa.Text(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
    )
    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.create_index("ix_idx_composite_lookup", ["res_type", "param", "c1_code", "c2_code"], unique=False)
        batch_op.create_index("ix_idx_composite_resource", ["res_type", "res_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_composite_resource")
        batch_op.drop_index("ix_idx_composite_lookup")

    op.drop_table("idx_composite")
