"""Writes the synthetic fixtures: the three studies' CSV files, the hospital bundle and a README of edge cases.

Same seed, same bytes: each part draws from its own `random.Random`, seeded from the seed and the part's
name, so adding rows to one study never shifts another's values.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from app.synthetic import depil2, hospital, mirocals, msc_sle
from app.synthetic.common import StudyData, csv_text
from app.synthetic.contract import COLUMNS

DEFAULT_SEED = 20261122
STUDIES = {"depil-2": depil2.generate, "mirocals": mirocals.generate, "msc-sle": msc_sle.generate}
HOSPITAL_BUNDLE = Path("demo") / "002_hospital_population.json"


def rng_for(seed: int, part: str) -> random.Random:
    """A generator per part; seeding with a str is deterministic across runs and platforms (SHA-512)."""
    return random.Random(f"{seed}/{part}")  # noqa: S311 - synthetic data, not security


def render(seed: int) -> dict[Path, str]:
    """Every file, by path relative to the fixtures directory, as text."""
    files: dict[Path, str] = {}
    studies: list[StudyData] = []
    for study, generate in STUDIES.items():
        data = generate(rng_for(seed, study))
        studies.append(data)
        for name, rows in data.files.items():
            files[Path("studies") / study / name] = csv_text(COLUMNS[name], rows)
    bundle, records = hospital.bundle(rng_for(seed, "hospital"))
    files[HOSPITAL_BUNDLE] = bundle_text(bundle)
    files[Path("studies") / "README.md"] = readme(seed, studies, records)
    return files


def bundle_text(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"


def generate(out: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write every file under `out` (e.g. fixtures/); returns the paths written."""
    written = []
    for relative, text in render(seed).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
        written.append(path)
    return written


def readme(seed: int, studies: list[StudyData], records: list[hospital.PatientRecord]) -> str:
    lines = [
        "# Synthetic study data (generated: do not edit by hand)",
        "",
        f"Written by `python -m app.synthetic --seed {seed} --out fixtures`; "
        "tests/synthetic checks that these files equal a fresh generation.",
        "The CSV files follow the contract of mappings/README.md; `fixtures/demo/002_hospital_population.json` is",
        f"the hospital population for pre-screening, dated relative to {hospital.REFERENCE_DATE.isoformat()}.",
        "",
        "Conventions: placebo dosing rows carry no dose (the placebo interventions of the study specs have none);",
        "MSC-SLE is not randomised, so `randomisation_date` is empty there; repeated MIROCALS visits use the",
        "schedule id `course`.",
        "",
        "## Deliberate edge cases in the studies",
        "",
    ]
    for data in studies:
        lines.append(f"### {data.study}")
        lines.append("")
        lines += [f"- `{who}`: {why}" for who, why in data.notes]
        lines.append("")
    lines += [
        "## Hospital population: expected pre-screening outcomes",
        "",
        "Computable criteria only (manual criteria aside). Patients not listed for a study are not candidates.",
        "",
        "| patient | case | DEPIL-2 | MIROCALS | MSC-SLE |",
        "|---|---|---|---|---|",
    ]
    for record in records:
        if record.expect:
            cells = [record.expect.get(study, "") for study in ("depil-2", "mirocals", "msc-sle")]
            lines.append(f"| {record.pid} | {record.why} | " + " | ".join(cells) + " |")
    background = sum(1 for record in records if not record.expect)
    lines += ["", f"{background} further background patients are candidates for none of the studies.", ""]
    return "\n".join(lines)
