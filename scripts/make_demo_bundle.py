"""Writes fixtures/demo/001_hospital_sample.json: a small, deterministic transaction bundle.

A handful of patients of a hospital (site identifiers), bipolar-depression diagnoses, blood counts
and Treg percentages: enough to try the REST API by hand. The three studies' data comes with the
mapping issue. PUT with stable ids keeps reloading idempotent.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SITE = "https://trialbridge.dev/sid/hopital-demo-mrn"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MEASURE = "https://trialbridge.dev/fhir/CodeSystem/measure"
SNOMED = "http://snomed.info/sct"

PATIENTS = [
    ("demo-p01", "Martin", "Claire", "female", "1979-04-12"),
    ("demo-p02", "Bernard", "Lucas", "male", "1990-11-03"),
    ("demo-p03", "Dubois", "Inès", "female", "1964-02-28"),
    ("demo-p04", "Thomas", "Hugo", "male", "1985-07-19"),
    ("demo-p05", "Robert", "Léa", "female", "2001-01-09"),
    ("demo-p06", "Petit", "Gabriel", "male", "1958-09-30"),
]
LABS = [  # (code system, code, display, unit, low, high)
    (LOINC, "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.2, 9.5),
    (LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 90, 380),
    (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 9.4, 16.2),
    (MEASURE, "treg-pct-cd4", "Regulatory T cells (CD4+CD25+FOXP3+) / CD4+ T cells", "%", 3.5, 9.0),
]


def entry(resource: dict) -> dict:
    return {
        "fullUrl": f"http://127.0.0.1:8000/fhir/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def build() -> dict:
    rng = random.Random(20261122)
    entries = []
    for pid, family, given, gender, birth in PATIENTS:
        entries.append(
            entry(
                {
                    "resourceType": "Patient",
                    "id": pid,
                    "identifier": [{"system": SITE, "value": pid.upper().replace("DEMO-P", "MRN-00")}],
                    "name": [{"family": family, "given": [given]}],
                    "gender": gender,
                    "birthDate": birth,
                }
            )
        )
        entries.append(
            entry(
                {
                    "resourceType": "Condition",
                    "id": f"{pid}-bd",
                    "clinicalStatus": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                        ]
                    },
                    "code": {
                        "coding": [
                            {
                                "system": SNOMED,
                                "code": "191627008",
                                "display": "Bipolar affective disorder, current episode depression",
                            }
                        ]
                    },
                    "subject": {"reference": f"Patient/{pid}"},
                    "onsetDateTime": "2023-05-01",
                }
            )
        )
        for index, (system, code, display, unit, low, high) in enumerate(LABS):
            value = round(rng.uniform(low, high), 1)
            entries.append(
                entry(
                    {
                        "resourceType": "Observation",
                        "id": f"{pid}-lab{index}",
                        "status": "final",
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": "laboratory",
                                    }
                                ]
                            }
                        ],
                        "code": {"coding": [{"system": system, "code": code, "display": display}]},
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": f"2026-10-{10 + index:02d}T08:30:00Z",
                        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                    }
                )
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "001_hospital_sample.json"
    target.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {target}")
