"""index rows: none for parameters that repeat other parameters

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000

A search parameter whose paths are another's (Patient `phonetic` = `name`), the union of others' (Observation
`combo-code` = `code` | `component-code`) or another reference's restricted to some targets (Observation `patient`
= `subject` to a Patient) no longer gets index rows of its own: search reads the rows it is stored as
(`app.store.indexer.stored_as`). Those were a third of every Observation's index rows. This revision deletes the
ones stored before; downgrading copies them back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index table, resource type, parameter, the parameters that hold its rows, and for a target-restricted
# reference its target types): what `stored_as` said when this revision was written, frozen here so that the
# migration does not change with the code.
ALIASES = (
    ("idx_reference", "Account", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Appointment", "location", ("actor",), ("Location",)),
    ("idx_reference", "Appointment", "patient", ("actor",), ("Patient",)),
    ("idx_reference", "Appointment", "practitioner", ("actor",), ("Practitioner",)),
    ("idx_reference", "AppointmentResponse", "location", ("actor",), ("Location",)),
    ("idx_reference", "AppointmentResponse", "patient", ("actor",), ("Patient",)),
    ("idx_reference", "AppointmentResponse", "practitioner", ("actor",), ("Practitioner",)),
    ("idx_reference", "Basic", "patient", ("subject",), ("Patient",)),
    ("idx_token", "CapabilityStatement", "version", ("fhirversion",), ()),
    ("idx_reference", "CarePlan", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "CareTeam", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "ChargeItem", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "ClinicalImpression", "patient", ("subject",), ("Patient",)),
    ("idx_uri", "CodeSystem", "url", ("system",), ()),
    ("idx_reference", "Communication", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "CommunicationRequest", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Composition", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Condition", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Contract", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Coverage", "patient", ("beneficiary",), ()),
    ("idx_reference", "DeviceRequest", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "DeviceUseStatement", "subject", ("patient",), ()),
    ("idx_reference", "DiagnosticReport", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "DocumentManifest", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "DocumentReference", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Encounter", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Encounter", "practitioner", ("participant",), ("Practitioner",)),
    ("idx_reference", "EnrollmentRequest", "subject", ("patient",), ()),
    ("idx_reference", "Flag", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Goal", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "GuidanceResponse", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "ImagingStudy", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Invoice", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Linkage", "source", ("item",), ()),
    ("idx_reference", "List", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "MeasureReport", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Media", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "MedicationAdministration", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "MedicationDispense", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "MedicationRequest", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "MedicationStatement", "patient", ("subject",), ("Patient",)),
    ("idx_token", "Observation", "combo-code", ("code", "component-code"), ()),
    ("idx_composite", "Observation", "combo-code-value-concept",
     ("code-value-concept", "component-code-value-concept"), ()),
    ("idx_composite", "Observation", "combo-code-value-quantity",
     ("code-value-quantity", "component-code-value-quantity"), ()),
    ("idx_token", "Observation", "combo-data-absent-reason",
     ("component-data-absent-reason", "data-absent-reason"), ()),
    ("idx_token", "Observation", "combo-value-concept", ("component-value-concept", "value-concept"), ()),
    ("idx_quantity", "Observation", "combo-value-quantity", ("component-value-quantity", "value-quantity"), ()),
    ("idx_reference", "Observation", "patient", ("subject",), ("Patient",)),
    ("idx_string", "Patient", "phonetic", ("name",), ()),
    ("idx_reference", "Person", "patient", ("link",), ("Patient",)),
    ("idx_string", "Person", "phonetic", ("name",), ()),
    ("idx_reference", "Person", "practitioner", ("link",), ("Practitioner",)),
    ("idx_reference", "Person", "relatedperson", ("link",), ("RelatedPerson",)),
    ("idx_string", "Practitioner", "phonetic", ("name",), ()),
    ("idx_reference", "Procedure", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Provenance", "patient", ("target",), ("Patient",)),
    ("idx_reference", "QuestionnaireResponse", "patient", ("subject",), ("Patient",)),
    ("idx_string", "RelatedPerson", "phonetic", ("name",), ()),
    ("idx_reference", "RequestGroup", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "ResearchSubject", "patient", ("individual",), ()),
    ("idx_reference", "RiskAssessment", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "ServiceRequest", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Specimen", "patient", ("subject",), ("Patient",)),
    ("idx_reference", "Task", "patient", ("subject",), ("Patient",)),
)  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    for table, resource_type, param, _parts, _targets in ALIASES:
        bind.execute(
            sa.text(f"DELETE FROM {table} WHERE res_type = :type AND param = :param"),  # noqa: S608
            {"type": resource_type, "param": param},
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table, resource_type, param, parts, targets in ALIASES:
        columns = [column["name"] for column in sa.inspect(bind).get_columns(table)]
        copied = ", ".join(":param" if name == "param" else name for name in columns)
        names = ", ".join(columns)
        restricted = " AND target_type IN :targets" if targets else ""
        statement = sa.text(
            f"INSERT INTO {table} ({names}) SELECT {copied} FROM {table} "  # noqa: S608
            f"WHERE res_type = :type AND param IN :parts{restricted}"
        ).bindparams(sa.bindparam("parts", expanding=True))
        values = {"type": resource_type, "param": param, "parts": list(parts)}
        if targets:
            statement = statement.bindparams(sa.bindparam("targets", expanding=True))
            values["targets"] = list(targets)
        bind.execute(statement, values)
