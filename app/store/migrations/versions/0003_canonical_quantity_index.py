"""canonical quantity index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 21:27:50.921901
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.create_index(
            "ix_idx_quantity_canonical", ["res_type", "param", "canonical_code", "canonical_value"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_quantity_canonical")
