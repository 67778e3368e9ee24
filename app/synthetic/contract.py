"""The CSV contract of mappings/README.md as data: the columns of each source file, in contract order."""

from __future__ import annotations

ENROLMENT = (
    "study",
    "site",
    "subject",
    "site_patient_id",
    "sex",
    "birth_date",
    "consent_date",
    "randomisation_date",
    "arm",
    "status",
    "end_date",
    "end_reason",
    "death_date",
    "strata",
)
DOSING = ("study", "subject", "administered_at", "intervention", "dose", "dose_unit", "route")
LABS = ("study", "subject", "collected_at", "test", "value", "unit", "ref_low", "ref_high", "interpretation")
ADVERSE_EVENTS = (
    "study",
    "subject",
    "ae_number",
    "meddra_pt_code",
    "meddra_pt_term",
    "onset_date",
    "resolution_date",
    "ctcae_grade",
    "serious",
    "relatedness",
    "outcome",
)
SCALE_PREFIX = ("study", "subject", "assessed_at", "visit")

# SELENA-SLEDAI descriptors in contract order with their weights (8 x 8, 6 x 4, 7 x 2, 3 x 1; total 0-105).
SELENA_WEIGHTS: dict[str, int] = {
    "seizure": 8,
    "psychosis": 8,
    "organic_brain_syndrome": 8,
    "visual_disturbance": 8,
    "cranial_nerve_disorder": 8,
    "lupus_headache": 8,
    "cva": 8,
    "vasculitis": 8,
    "arthritis": 4,
    "myositis": 4,
    "urinary_casts": 4,
    "hematuria": 4,
    "proteinuria": 4,
    "pyuria": 4,
    "new_rash": 2,
    "alopecia": 2,
    "mucosal_ulcers": 2,
    "pleurisy": 2,
    "pericarditis": 2,
    "low_complement": 2,
    "increased_dna_binding": 2,
    "fever": 1,
    "thrombocytopenia": 1,
    "leukopenia": 1,
}


def items(count: int) -> tuple[str, ...]:
    """`item_1` ... `item_n`."""
    return tuple(f"item_{number}" for number in range(1, count + 1))


COLUMNS: dict[str, tuple[str, ...]] = {
    "enrolment.csv": ENROLMENT,
    "dosing.csv": DOSING,
    "labs.csv": LABS,
    "madrs.csv": SCALE_PREFIX + items(10),
    "ids_c30.csv": SCALE_PREFIX + items(30),
    "alsfrs_r.csv": SCALE_PREFIX + items(12),
    "selena_sledai.csv": SCALE_PREFIX + tuple(SELENA_WEIGHTS),
    "adverse_events.csv": ADVERSE_EVENTS,
}
