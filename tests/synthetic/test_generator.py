"""The synthetic generator: deterministic, faithful to the CSV contract, and the committed fixtures are its output."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.fhir.references import find_references
from app.fhir.validation import validate_resource
from app.synthetic import depil2
from app.synthetic.contract import COLUMNS
from app.synthetic.generator import DEFAULT_SEED, HOSPITAL_BUNDLE, generate, rng_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
CONTRACT = ROOT / "mappings" / "README.md"
STUDY_SPECS = ROOT / "mappings" / "studies"
REGENERATE = f"python -m app.synthetic --seed {DEFAULT_SEED} --out fixtures"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("first")
    generate(out, DEFAULT_SEED)
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def contract_columns() -> dict[str, list[str]]:
    """The column list of every CSV kind, read from mappings/README.md itself."""
    text = CONTRACT.read_text(encoding="utf-8")
    columns = {
        match[1]: [column.strip() for column in match[2].split(",")]
        for match in re.finditer(r"^### (\w+\.csv) -> .*?\n`([^`]+)`", text, re.M | re.S)
    }
    scales = text[text.index("### Scale CSVs") :]
    prefix_match = re.search(r"`([^`]+), item_1 \.\.\. item_n`", scales)
    assert prefix_match, "the scale CSV header line moved in mappings/README.md"
    prefix = [column.strip() for column in prefix_match[1].split(",")]
    for name, count in re.findall(r"`(\w+\.csv)`: items 1-(\d+)", scales):
        columns[name] = prefix + [f"item_{number}" for number in range(1, int(count) + 1)]
    selena = re.search(r"`selena_sledai\.csv`:.*?0/1 columns `([^`]+)`", scales, re.S)
    assert selena, "the SELENA-SLEDAI descriptor list moved in mappings/README.md"
    columns["selena_sledai.csv"] = prefix + [column.strip() for column in selena[1].split(",")]
    return columns


def test_same_seed_same_bytes(generated: Path, tmp_path: Path) -> None:
    # A second run in another process with another string-hash seed: set or dict-of-str order must not matter.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, "-m", "app.synthetic", "--seed", str(DEFAULT_SEED), "--out", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    first, second = files_under(generated), files_under(tmp_path)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_another_seed_other_values() -> None:
    one = depil2.generate(rng_for(DEFAULT_SEED, "depil-2")).files["labs.csv"]
    other = depil2.generate(rng_for(DEFAULT_SEED + 1, "depil-2")).files["labs.csv"]
    assert one != other


def test_committed_fixtures_are_a_fresh_generation(generated: Path) -> None:
    fresh = files_under(generated)
    committed = {name: (FIXTURES / name).read_bytes() for name in fresh if (FIXTURES / name).is_file()}
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(name for name in committed if committed[name] != fresh[name])
    assert (missing, stale) == ([], []), f"fixtures are out of date or edited by hand: run `{REGENERATE}`"
    # Nothing under fixtures/studies that the generator does not write.
    extra = sorted(
        str(path.relative_to(FIXTURES))
        for path in (FIXTURES / "studies").rglob("*")
        if path.is_file() and str(path.relative_to(FIXTURES)) not in fresh
    )
    assert extra == []


def test_our_column_table_is_the_contract() -> None:
    assert {name: list(columns) for name, columns in COLUMNS.items()} == contract_columns()


def test_every_csv_header_is_the_contract(generated: Path) -> None:
    contract = contract_columns()
    paths = sorted((generated / "studies").glob("*/*.csv"))
    assert len(paths) == 16
    for path in paths:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle))
        assert header == contract[path.name], path
        text = path.read_text(encoding="utf-8")
        assert "\r" not in text and text.endswith("\n")
        assert {row["study"] for row in read_csv(path)} == {path.parent.name}


def test_ids_exist_in_the_study_specs(generated: Path) -> None:
    for study_dir in sorted((generated / "studies").iterdir()):
        if not study_dir.is_dir():
            continue
        spec = yaml.safe_load((STUDY_SPECS / f"{study_dir.name}.yaml").read_text(encoding="utf-8"))
        arms = {arm["id"] for arm in spec["arms"]}
        interventions = {intervention["id"] for intervention in spec["interventions"]}
        visits = {visit["id"] for visit in spec["schedule"]}
        assert {row["arm"] for row in read_csv(study_dir / "enrolment.csv")} - {""} <= arms
        assert {row["intervention"] for row in read_csv(study_dir / "dosing.csv")} <= interventions
        for scale in study_dir.glob("*.csv"):
            if "visit" in COLUMNS[scale.name]:
                assert {row["visit"] for row in read_csv(scale)} <= visits, scale


def test_scale_items_in_range(generated: Path) -> None:
    top = {"madrs.csv": 6, "ids_c30.csv": 3, "alsfrs_r.csv": 4, "selena_sledai.csv": 1}
    empty = 0
    for path in sorted((generated / "studies").glob("*/*.csv")):
        if path.name not in top:
            continue
        for row in read_csv(path):
            for column in COLUMNS[path.name][4:]:
                if row[column] == "":
                    empty += 1
                else:
                    assert 0 <= int(row[column]) <= top[path.name], (path, row)
    assert empty == 2  # DEPIL-2 MADRS and MIROCALS ALSFRS-R, one deliberate gap each


def test_depil2_is_randomised_two_to_one(generated: Path) -> None:
    enrolment = read_csv(generated / "studies" / "depil-2" / "enrolment.csv")
    assert Counter(row["arm"] for row in enrolment if row["randomisation_date"]) == {"ilt101": 12, "placebo": 6}
    assert [row["status"] for row in enrolment if not row["arm"]] == ["ineligible"]


def test_depil2_treg_response(generated: Path) -> None:
    arms = {row["subject"]: row["arm"] for row in read_csv(generated / "studies" / "depil-2" / "enrolment.csv")}
    values: dict[str, list[float]] = {}
    for row in read_csv(generated / "studies" / "depil-2" / "labs.csv"):
        if row["test"] == "TREG_PCT":
            values.setdefault(row["subject"], []).append(float(row["value"]))
    folds: dict[str, list[float]] = {"ilt101": [], "placebo": []}
    for subject, series in values.items():
        folds[arms[subject]].append(series[1] / series[0])  # D5 / D1
    mean = {arm: sum(fold) / len(fold) for arm, fold in folds.items()}
    assert 1.12 < mean["ilt101"] < 1.22 and 0.96 < mean["placebo"] < 1.06


def test_mirocals_population(generated: Path) -> None:
    study = generated / "studies" / "mirocals"
    enrolment = read_csv(study / "enrolment.csv")
    assert len(enrolment) == 220
    arms = Counter(row["arm"] for row in enrolment)
    assert arms.keys() == {"il2", "placebo"} and abs(arms["il2"] - arms["placebo"]) <= 8
    assert all(re.fullmatch(r"country=(FR|UK);onset=(bulbar|limb)", row["strata"]) for row in enrolment)
    pnfh = [float(row["value"]) for row in read_csv(study / "labs.csv") if row["test"] == "PNFH_CSF"]
    assert 0.6 <= sum(value <= 3700 for value in pnfh) / len(pnfh) <= 0.8
    assert all(row["death_date"] <= row["end_date"] for row in enrolment if row["death_date"])
    assert (study / "dosing.csv").stat().st_size < 3_000_000


def test_msc_sle_single_infusion(generated: Path) -> None:
    study = generated / "studies" / "msc-sle"
    dosing = read_csv(study / "dosing.csv")
    assert len(dosing) == 8 and {row["dose_unit"] for row in dosing} == {"10*6/kg"}
    events = read_csv(study / "adverse_events.csv")
    assert len(events) == 3 and {row["ctcae_grade"] for row in events} <= {"1", "2"}


@pytest.fixture(scope="module")
def hospital(generated: Path) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads((generated / HOSPITAL_BUNDLE).read_text(encoding="utf-8"))
    return bundle


def test_hospital_bundle_resources_validate(hospital: dict[str, Any]) -> None:
    assert hospital["resourceType"] == "Bundle" and hospital["type"] == "transaction"
    for entry in hospital["entry"]:
        resource = entry["resource"]
        validate_resource(resource)
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    types = Counter(entry["resource"]["resourceType"] for entry in hospital["entry"])
    assert types["Patient"] == 150 and types["ResearchStudy"] == 1


def test_hospital_references_resolve_inside_the_bundle(hospital: dict[str, Any]) -> None:
    present = {f"{entry['resource']['resourceType']}/{entry['resource']['id']}" for entry in hospital["entry"]}
    for index, entry in enumerate(hospital["entry"]):
        for holder, location in find_references(entry["resource"], f"Bundle.entry[{index}].resource"):
            assert holder["reference"] in present, location


def test_hospital_expected_outcomes_per_study() -> None:
    from app.synthetic.hospital import ELIGIBLE, population

    records = population(rng_for(DEFAULT_SEED, "hospital"))
    eligible = Counter(study for record in records for study, outcome in record.expect.items() if outcome == ELIGIBLE)
    candidates = Counter(study for record in records for study in record.expect)
    assert 10 <= eligible["depil-2"] <= 20
    assert 15 <= candidates["mirocals"] <= 20 and 10 <= candidates["msc-sle"] <= 15
