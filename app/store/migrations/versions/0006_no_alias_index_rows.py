"""index rows: none for parameters that repeat other parameters

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000

A search parameter whose paths are another's (Patient `phonetic` = `name`) or the union of others' (Observation
`combo-code` = `code` | `component-code`) no longer gets index rows of its own: search reads its parts' rows
(`app.store.indexer.stored_as`). Those rows were a quarter of every Observation's. This revision deletes the
ones stored before; downgrading copies them back from the parts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index table, resource type, parameter, the parameters that hold its rows): what `stored_as` said when this
# revision was written, frozen here so that the migration does not change with the code.
ALIASES = (
    ("idx_token", "CapabilityStatement", "version", ("fhirversion",)),
    ("idx_uri", "CodeSystem", "url", ("system",)),
    ("idx_reference", "Coverage", "patient", ("beneficiary",)),
    ("idx_reference", "DeviceUseStatement", "subject", ("patient",)),
    ("idx_reference", "EnrollmentRequest", "subject", ("patient",)),
    ("idx_reference", "Linkage", "source", ("item",)),
    ("idx_token", "Observation", "combo-code", ("code", "component-code")),
    ("idx_composite", "Observation", "combo-code-value-concept",
     ("code-value-concept", "component-code-value-concept")),
    ("idx_composite", "Observation", "combo-code-value-quantity",
     ("code-value-quantity", "component-code-value-quantity")),
    ("idx_token", "Observation", "combo-data-absent-reason", ("component-data-absent-reason", "data-absent-reason")),
    ("idx_token", "Observation", "combo-value-concept", ("component-value-concept", "value-concept")),
    ("idx_quantity", "Observation", "combo-value-quantity", ("component-value-quantity", "value-quantity")),
    ("idx_string", "Patient", "phonetic", ("name",)),
    ("idx_string", "Person", "phonetic", ("name",)),
    ("idx_string", "Practitioner", "phonetic", ("name",)),
    ("idx_string", "RelatedPerson", "phonetic", ("name",)),
    ("idx_reference", "ResearchSubject", "patient", ("individual",)),
)  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    for table, resource_type, param, _parts in ALIASES:
        bind.execute(
            sa.text(f"DELETE FROM {table} WHERE res_type = :type AND param = :param"),  # noqa: S608
            {"type": resource_type, "param": param},
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table, resource_type, param, parts in ALIASES:
        columns = [column["name"] for column in sa.inspect(bind).get_columns(table)]
        copied = ", ".join(":param" if name == "param" else name for name in columns)
        names = ", ".join(columns)
        bind.execute(
            sa.text(
                f"INSERT INTO {table} ({names}) SELECT {copied} FROM {table} "  # noqa: S608
                "WHERE res_type = :type AND param IN :parts"
            ).bindparams(sa.bindparam("parts", expanding=True)),
            {"type": resource_type, "param": param, "parts": list(parts)},
        )
