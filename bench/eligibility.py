"""Eligibility screening benchmark: a synthetic hospital population screened against DEPIL-2 in SQL.

Generates N patients (~20 resources each: conditions, labs around the DEPIL-2 thresholds in mixed
units, MADRS totals and item 10, temperatures, HbA1c, hCG, medications, some ResearchSubjects)
straight into the store: resource rows and their index rows and eligibility facts from the indexer, written with the
store's bulk insert (COPY on PostgreSQL), secondary indexes dropped during the load and rebuilt after.
Then, medians of 3 runs:

- the compiled screening (`app.eligibility.sql.screen`: counts + a page; on PostgreSQL in shards of Patient id
  ranges, one statement each, side by side), and on PostgreSQL the same as one statement;
- the hand-written SQL a DBA would write for the same computable DEPIL-2 criteria (`HAND_WRITTEN`),
  same tables, same counts;
- the reference evaluator (`app.eligibility.reference`) on a sample of 2,000 patients, their
  resources read from the store: its per-patient rate, extrapolated to the population.

Prints patients/s, wall time, peak memory (getrusage) and the ratios. Targets (issue 5), PostgreSQL:
100,000 patients <= 2 s and 1,000,000 <= 20 s, within 1.5x of the hand-written SQL.

    python bench/eligibility.py --patients 100000 --backend postgresql [--database-url URL] [--reuse]
    python bench/eligibility.py --patients 100000 --backend sqlite --sqlite-path /var/tmp/elig.sqlite3 --reuse

Generating 1,000,000 patients takes a while: give a --database-url of a server that outlives the run
(`python -m app.testing.postgres --base-dir /var/tmp --database elig`) and pass --reuse on later runs
(the population is reused when the database already holds N patients from this generator).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, DateTime, Engine, Index, bindparam, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/eligibility.py`


from app.eligibility.criteria import Eligibility
from app.eligibility.reference import evaluate_patient
from app.eligibility.sql import POPULATION_SETTINGS, default_parallel, screen, shard_count
from app.fhir.systems import ATC, ICD10, INTERPRETATION, LOCAL_LAB, LOINC, MEASURE, SNOMED, UCUM
from app.fhir.systems import CONDITION_CLINICAL as CLINICAL
from app.fhir.systems import CONDITION_VERIFICATION as VERIFICATION
from app.fhir.ucum import RELATIVE_TOLERANCE, canonical, warm_up
from app.mapping.study_spec import load_studies
from app.store import indexer
from app.store.bulk import bulk_insert
from app.store.db import make_engine, migrate
from app.store.schema import INDEX_TABLES, Resource

ROOT = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 11, 1)
STUDY = "ResearchStudy/depil-2"
NOW = "2026-11-01T00:00:00Z"
_NOW = datetime(2026, 11, 1, tzinfo=UTC)
resource_table = Resource.__table__  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ the population

# (system, code, weight): most patients have some unrelated condition, a third a bipolar depression.
CONDITIONS = [
    (SNOMED, "191627008", 12), (ICD10, "F31.4", 8), (ICD10, "F31.32", 6), (ICD10, "F31.1", 4),
    (SNOMED, "38341003", 20), (ICD10, "I10", 15), (ICD10, "E11.9", 6), (SNOMED, "44054006", 3),
    (ICD10, "C50.9", 2), (ICD10, "C44.3", 1), (SNOMED, "363346000", 1), (ICD10, "N18.5", 1),
    (ICD10, "I50.9", 1), (ICD10, "B20", 1), (ICD10, "G20", 1), (ICD10, "Z94.0", 1), (ICD10, "D84.9", 1),
    (ICD10, "O80", 1), (ICD10, "Z39.1", 1), (ICD10, "J45.909", 10), (SNOMED, "195967001", 8),
]  # fmt: skip
# (local code, loinc, display, [(unit, low, high)]): values spread around the DEPIL-2 thresholds.
LABS: list[tuple[str, str, list[tuple[str, float, float]]]] = [
    ("WBC", "6690-2", [("10*3/uL", 2.5, 9.0), ("/mm3", 2500, 9000), ("10*9/L", 2.5, 9.0)]),
    ("PLT", "777-3", [("10*3/uL", 60, 350), ("10*9/L", 60, 350)]),
    ("HGB", "718-7", [("g/dL", 8.0, 16.0), ("mmol/L", 5.0, 9.9)]),
    ("RBC", "789-8", [("10*12/L", 3.0, 5.5), ("10*6/uL", 3.0, 5.5)]),
]
# Labs no DEPIL-2 criterion reads: the screening must skip them.
OTHER_LABS: list[tuple[str, str, float, float]] = [
    ("2345-7", "mg/dL", 70, 180), ("2160-0", "umol/L", 50, 130), ("2951-2", "mmol/L", 132, 146),
    ("2823-3", "mmol/L", 3.2, 5.4), ("1742-6", "U/L", 8, 80),
]  # fmt: skip
MEDICATIONS = [
    ("N06AB06", 14), ("N05AN01", 10), ("N03AG01", 5), ("N06AX16", 6), ("J01CA04", 3), ("M01AE01", 5),
    ("L04AX03", 1), ("C09AA05", 15), ("A10BA02", 10), ("C10AA05", 12),
]  # fmt: skip


def _pick(rng: random.Random, weighted: list[Any]) -> Any:
    return rng.choices(weighted, weights=[item[-1] for item in weighted])[0]


def _day(rng: random.Random, back_low: int, back_high: int) -> date:
    return AS_OF - timedelta(days=rng.randint(back_low, back_high))


def _when(rng: random.Random, back_low: int, back_high: int) -> str:
    day = _day(rng, back_low, back_high)
    return f"{day.isoformat()}T{rng.randint(7, 17):02d}:{rng.choice((0, 20, 40)):02d}:00+01:00"


def _concept(*codings: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code} for system, code in codings]}


def _quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


CANDIDATES = 0.04  # the share of patients built to meet every computable DEPIL-2 criterion


def candidate(pid: str, gender: str, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """A patient meeting every computable DEPIL-2 criterion: adult, active bipolar depression, MADRS > 17 this
    month, on an antidepressant, normal recent labs, negative thyroid antibodies, and unrelated labs."""
    subject = {"reference": f"Patient/{pid}"}
    born = _day(rng, 365 * 25, 365 * 60).isoformat()
    resources: list[tuple[str, str, dict[str, Any]]] = [
        ("Patient", pid, {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born}),
    ]

    def add(resource_type: str, **content: Any) -> None:
        rid = f"{pid}-{len(resources)}"
        resource = {"resourceType": resource_type, "id": rid, "subject": subject, **content}
        resources.append((resource_type, rid, resource))

    def observation(codings: list[tuple[str, str]], when: str, **content: Any) -> None:
        add("Observation", status="final", code=_concept(*codings), effectiveDateTime=when, **content)

    add(
        "Condition",
        clinicalStatus=_concept((CLINICAL, "active")),
        code=_concept((SNOMED, "191627008")),
        verificationStatus=_concept((VERIFICATION, "confirmed")),
        onsetDateTime=_day(rng, 365, 1800).isoformat(),
    )
    start = _day(rng, 40, 400).isoformat()
    add("MedicationStatement", status="active", medicationCodeableConcept=_concept((ATC, "N06AB06")),
        effectivePeriod={"start": start})  # fmt: skip
    when = _when(rng, 1, 20)
    for code, score in (("madrs-total", rng.randint(20, 32)), ("madrs-item-10", rng.randint(0, 2))):
        observation([(MEASURE, code)], when, valueQuantity=_quantity(score, "{score}"))
    normal: tuple[tuple[str, str, str, float, float], ...] = (
        ("WBC", "6690-2", "10*3/uL", 5, 9), ("PLT", "777-3", "10*3/uL", 150, 350),
        ("HGB", "718-7", "g/dL", 12, 16), ("RBC", "789-8", "10*12/L", 4, 5.5),
    )  # fmt: skip
    for local, loinc, unit, low, high in normal:
        when = _when(rng, 1, 60)
        observation(
            [(LOCAL_LAB, local), (LOINC, loinc)], when, valueQuantity=_quantity(round(rng.uniform(low, high), 1), unit)
        )
    for loinc in ("8099-4", "8098-6"):
        when = _when(rng, 1, 60)
        titre = _quantity(round(rng.uniform(5, 30), 1), "[IU]/mL")
        observation([(LOINC, loinc)], when, valueQuantity=titre, interpretation=[_concept((INTERPRETATION, "N"))])
    for loinc, unit, low, high in OTHER_LABS:
        when = _when(rng, 0, 400)
        observation([(LOINC, loinc)], when, valueQuantity=_quantity(round(rng.uniform(low, high), 1), unit))
    return resources


def patient_resources(n: int, seed: int = 5) -> list[tuple[str, str, dict[str, Any]]]:
    """Patient n and its resources: (type, id, content); deterministic per (n, seed)."""
    rng = random.Random(seed * 10_000_019 + n)
    pid = f"p{n:07d}"
    subject = {"reference": f"Patient/{pid}"}
    out: list[tuple[str, str, dict[str, Any]]] = []
    counter = iter(range(100))

    def add(resource_type: str, content: dict[str, Any]) -> None:
        rid = f"{pid}-{next(counter)}"
        out.append((resource_type, rid, {"resourceType": resource_type, "id": rid, **content}))

    gender = rng.choice(("female", "male"))
    if rng.random() < CANDIDATES:
        out += candidate(pid, gender, rng)
        return out
    born = _day(rng, 365 * 12, 365 * 85)
    birth = rng.choices([born.isoformat(), born.isoformat()[:7], born.isoformat()[:4], None], [94, 3, 2, 1])[0]
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender}
    if birth is not None:
        patient["birthDate"] = birth
    out.append(("Patient", pid, patient))

    for _ in range(rng.randint(1, 4)):
        system, code, _weight = _pick(rng, CONDITIONS)
        condition: dict[str, Any] = {
            "clinicalStatus": _concept((CLINICAL, rng.choices(["active", "resolved", "remission"], [6, 2, 1])[0])),
            "verificationStatus": _concept((VERIFICATION, rng.choices(["confirmed", "refuted"], [30, 1])[0])),
            "code": _concept((system, code)),
            "subject": subject,
        }
        onset = _day(rng, 0, 365 * 12).isoformat()
        condition["onsetDateTime"] = rng.choices([onset, onset[:7], onset[:4]], [90, 6, 4])[0]
        add("Condition", condition)

    def observation(codings: list[tuple[str, str]], when: str, **content: Any) -> None:
        status = rng.choices(["final", "amended", "preliminary", "cancelled"], [85, 5, 5, 5])[0]
        coded = {"status": status, "code": _concept(*codings), "subject": subject, "effectiveDateTime": when}
        add("Observation", {**coded, **content})

    for local, loinc, units in LABS:
        for _ in range(rng.choices([0, 1, 2], [15, 65, 20])[0]):
            unit, low, high = rng.choice(units)
            value = round(rng.uniform(low, high), 1 if high < 100 else 0)
            observation([(LOCAL_LAB, local), (LOINC, loinc)], _when(rng, -2, 150), valueQuantity=_quantity(value, unit))
    for loinc, unit, low, high in OTHER_LABS:
        for _ in range(rng.choices([0, 1, 2], [30, 50, 20])[0]):
            value = round(rng.uniform(low, high), 1)
            observation([(LOINC, loinc)], _when(rng, 0, 400), valueQuantity=_quantity(value, unit))
    for loinc in ("8099-4", "8098-6"):  # anti-TPO, anti-TG: interpretation, or a value and its reference high
        if rng.random() < 0.5:
            value = round(rng.uniform(5, 60), 1)
            extra: dict[str, Any] = {"valueQuantity": _quantity(value, "[IU]/mL")}
            if rng.random() < 0.5:
                extra["interpretation"] = [_concept((INTERPRETATION, "H" if value > 34 else "N"))]
            else:
                extra["referenceRange"] = [{"high": _quantity(34, "[IU]/mL")}]
            observation([(LOINC, loinc)], _when(rng, 0, 120), **extra)
    for _ in range(rng.choices([0, 1, 2], [40, 45, 15])[0]):  # MADRS total and item 10
        when = _when(rng, 0, 45)
        observation([(MEASURE, "madrs-total")], when, valueQuantity=_quantity(rng.randint(8, 34), "{score}"))
        observation([(MEASURE, "madrs-item-10")], when, valueQuantity=_quantity(rng.randint(0, 4), "{score}"))
    if rng.random() < 0.6:
        celsius = round(rng.uniform(36.2, 38.8), 1)
        value, unit = (celsius, "Cel") if rng.random() < 0.8 else (round(celsius * 9 / 5 + 32, 1), "[degF]")
        observation([(LOINC, "8310-5")], _when(rng, 0, 6), valueQuantity=_quantity(value, unit))
    if rng.random() < 0.3:
        observation([(LOINC, "4548-4")], _when(rng, 0, 250), valueQuantity=_quantity(round(rng.uniform(5, 11), 1), "%"))
    if gender == "female" and rng.random() < 0.2:
        positive = rng.random() < 0.1
        result = _concept((SNOMED, "10828004" if positive else "260385009"))
        observation([(LOINC, "2106-3")], _when(rng, 0, 60), valueCodeableConcept=result)

    for _ in range(rng.randint(1, 4)):
        atc, _weight = _pick(rng, MEDICATIONS)
        start = _day(rng, 0, 900)
        period: dict[str, Any] = {"start": start.isoformat()}
        status = rng.choices(["active", "completed", "stopped"], [7, 2, 1])[0]
        if status != "active" or rng.random() < 0.2:
            period["end"] = min(start + timedelta(days=rng.randint(3, 400)), AS_OF + timedelta(days=30)).isoformat()
        add("MedicationStatement", {"status": status, "medicationCodeableConcept": _concept((ATC, atc)),
                                    "subject": subject, "effectivePeriod": period})  # fmt: skip

    if rng.random() < 0.08:
        start = _day(rng, 20, 700)
        period = {"start": start.isoformat()}
        status = rng.choice(["on-study", "off-study", "follow-up", "withdrawn", "screening"])
        if status == "off-study" and rng.random() < 0.8:
            period["end"] = min(start + timedelta(days=rng.randint(30, 400)), AS_OF).isoformat()
        add("ResearchSubject", {"status": status, "period": period, "individual": subject,
                                "study": {"reference": rng.choice(["ResearchStudy/other", STUDY])}})  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------ loading


def _rows(first: int, last: int, seed: int) -> Iterator[tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]]:
    """Resource rows and index rows (per index table), 1,000 patients at a time."""
    for chunk in range(first, last, 1000):
        resources: list[dict[str, Any]] = []
        index: dict[str, list[dict[str, Any]]] = {}
        for n in range(chunk, min(chunk + 1000, last)):
            for resource_type, rid, content in patient_resources(n, seed):
                content["meta"] = {"versionId": "1", "lastUpdated": NOW}
                rows = indexer.extract(resource_type, rid, content)
                resources.append(
                    {
                        "res_type": resource_type,
                        "res_id": rid,
                        "version_id": 1,
                        "last_updated": _NOW,
                        "deleted": False,
                        "patient_id": rows.patient_id,
                        "content": content,
                    }
                )
                for kind, table_rows in rows.rows.items():
                    index.setdefault(kind, []).extend(table_rows)
        yield resources, index


def _load_range(url: str, first: int, last: int, seed: int) -> int:
    engine = make_engine(url)
    count = 0
    with engine.begin() as conn:
        for resources, index in _rows(first, last, seed):
            bulk_insert(conn, resource_table, resources)
            for kind, rows in index.items():
                bulk_insert(conn, INDEX_TABLES[kind], rows)
            count += len(resources)
    engine.dispose()
    return count


def _secondary_indexes() -> list[Index]:
    return [index for table in (resource_table, *INDEX_TABLES.values()) for index in table.indexes]


def populated(engine: Engine, patients: int) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")).scalar_one()
        last = conn.execute(text("SELECT max(res_id) FROM resource WHERE res_type = 'Patient'")).scalar_one()
    return bool(found == patients and last == f"p{patients - 1:07d}")


def generate(url: str, patients: int, seed: int, workers: int) -> float:
    """Empty the store and write the population; returns the seconds it took (indexes rebuilt, analysed)."""
    engine = make_engine(url)
    migrate(engine)
    sqlite = engine.dialect.name == "sqlite"
    started = time.perf_counter()
    with engine.begin() as conn:
        for table in (resource_table, *INDEX_TABLES.values()):
            conn.execute(table.delete())
        for index in _secondary_indexes():
            conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    if sqlite or workers <= 1:
        _load_range(url, 0, patients, seed)
    else:
        bounds = [patients * k // workers for k in range(workers + 1)]
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            pool.starmap(_load_range, [(url, bounds[k], bounds[k + 1], seed) for k in range(workers)])
    print(f"  loaded in {time.perf_counter() - started:,.0f} s; building indexes", flush=True)
    with engine.begin() as conn:
        for index in _secondary_indexes():
            index.create(conn)
    if sqlite:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--database-url", help="an existing database (PostgreSQL) to fill or reuse")
    parser.add_argument("--sqlite-path", help="SQLite file (default: a temporary one)")
    parser.add_argument("--base-dir", default="/var/tmp", help="where a throwaway PostgreSQL server keeps its data")
    parser.add_argument("--reuse", action="store_true", help="keep a database that already holds the population")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"# eligibility benchmark — {time.strftime('%Y-%m-%d')} — {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}) — {args.backend}, {args.patients:,} patients"
    )
    with contextlib.ExitStack() as stack:
        url = args.database_url
        if args.backend == "postgresql" and url is None:
            from app.testing.postgres import PostgresServer

            url = stack.enter_context(PostgresServer(base_dir=args.base_dir)).create_database("bench")
        elif args.backend == "sqlite":
            path = args.sqlite_path or str(Path(args.base_dir) / f"eligibility-{os.getpid()}.sqlite3")
            url = f"sqlite:///{path}"
            if args.sqlite_path is None:
                for suffix in ("", "-wal", "-shm"):
                    stack.callback(Path(path + suffix).unlink, missing_ok=True)
        assert url is not None
        engine = make_engine(url)
        migrate(engine)
        if args.reuse and populated(engine, args.patients):
            print("  reusing the population already in the database")
        else:
            seconds = generate(url, args.patients, args.seed, args.workers)
            print(f"  generated in {seconds:,.0f} s")
        if not args.generate_only:
            run(engine, args)
        engine.dispose()


# ------------------------------------------------------------------------------------------ hand-written SQL

# What a DBA would write for the computable DEPIL-2 criteria, on the same tables (the eligibility facts, the
# Patient and ResearchSubject index rows), knowing the data
# (MedicationStatements only; one effectiveDateTime per Observation; onsetDateTime only; one coding per
# Condition): per-criterion CTEs, the latest value per patient and code by ROW_NUMBER(), canonical UCUM
# values against thresholds written as numbers (with the documented tolerance), 1 / 0 / NULL per criterion.
HAND_WRITTEN = """
WITH
patients AS (SELECT res_id AS pid FROM resource WHERE res_type = 'Patient' AND deleted = false),
ages AS MATERIALIZED (
  SELECT res_id AS pid,
    CASE WHEN low >= :adult_from OR high < :old_before THEN 0
         WHEN high < :adult_from AND low >= :old_before THEN 1 END AS adult,
    CASE WHEN high < :adult_from THEN 0 WHEN low >= :adult_from THEN 1 END AS minor
  FROM idx_date WHERE res_type = 'Patient' AND param = 'birthdate'
),
conditions AS (
  SELECT patient_id AS pid, system, code, lo AS low, hi AS high,
    CASE WHEN clinical_status IS NULL OR clinical_status IN ('active', 'recurrence', 'relapse') THEN 1 ELSE 0 END
      AS active,
    CASE WHEN clinical_status IN ('active', 'recurrence', 'relapse') THEN 1 ELSE 0 END AS clinically_active
  FROM clinical_fact
  WHERE res_type = 'Condition' AND (lo IS NULL OR lo < :tomorrow)
    AND (status IS NULL OR status NOT IN ('refuted', 'entered-in-error'))
),
condition_flags AS MATERIALIZED (
  SELECT pid,
    MAX(CASE WHEN (system = :snomed AND code = '191627008')
              OR (system = :icd10 AND (code LIKE 'F31.3%' OR code LIKE 'F31.4%' OR code LIKE 'F31.5%'))
         THEN active END) AS bipolar,
    MAX(CASE WHEN (system = :snomed AND code IN ('59927004', '42399005', '84114007', '65710008'))
              OR (system = :icd10 AND (code LIKE 'K72%' OR code LIKE 'N17%' OR code = 'N18.5' OR code LIKE 'N19%'
                                       OR code LIKE 'I50%' OR code LIKE 'J96%')) THEN active END) AS organ_failure,
    MAX(CASE WHEN (system = :snomed AND code = '234532001')
              OR (system = :icd10 AND substr(code, 1, 3) IN ('D80', 'D81', 'D82', 'D83', 'D84'))
         THEN active END) AS immune,
    MAX(CASE WHEN (system = :snomed AND code = '161663000') OR (system = :icd10 AND code LIKE 'Z94%')
         THEN 1 END) AS transplant,
    MAX(CASE WHEN (system = :snomed AND code IN ('46635009', '44054006'))
              OR (system = :icd10 AND (code LIKE 'E10%' OR code LIKE 'E11%')) THEN active END) AS diabetes,
    MAX(CASE WHEN (system = :snomed AND code = '363346000')
              OR (system = :icd10 AND substr(code, 1, 3) BETWEEN 'C00' AND 'C97' AND code NOT LIKE 'C44%')
         THEN CASE WHEN low >= :five_years THEN 2 WHEN high < :five_years THEN 0 ELSE 1 END END) AS cancer,
    MAX(CASE WHEN (system = :snomed AND code IN ('86406008', '62479008', '49049000', '26929004'))
              OR (system = :icd10 AND substr(code, 1, 3) IN ('B20', 'B21', 'B22', 'B23', 'B24', 'Z21', 'G20', 'G30'))
         THEN 1 END) AS hiv,
    MAX(CASE WHEN ((system = :snomed AND code = '77386006')
               OR (system IN (:icd10, :icd10cm)
                   AND (code LIKE 'O%' OR code LIKE 'Z33%' OR code LIKE 'Z34%' OR code LIKE 'Z39.1%')))
              AND (clinically_active = 1 OR low >= :thirty_days) THEN 1 END) AS pregnant
  FROM conditions
  GROUP BY pid
),
medications AS (
  SELECT patient_id AS pid, code, lo AS started
  FROM clinical_fact
  WHERE res_type = 'MedicationStatement' AND system = :atc
    AND status NOT IN ('entered-in-error', 'not-taken', 'intended') AND lo < :tomorrow
    AND (hi >= :today OR (hi IS NULL AND (status = 'active' OR lo >= :today)))
),
medication_flags AS MATERIALIZED (
  SELECT pid,
    MAX(CASE WHEN code IN ('N05AN01', 'N03AG01', 'N03AX09') OR code LIKE 'N06A%' THEN 1 END) AS mood,
    MAX(CASE WHEN code LIKE 'J01%' THEN 1 END) AS antibiotics,
    MAX(CASE WHEN code LIKE 'L04%' THEN 1 END) AS immunosuppressant,
    MAX(CASE WHEN (code LIKE 'M01A%' OR code LIKE 'L04%' OR code LIKE 'J06BA%') AND started < :four_weeks
         THEN 1 END) AS nsaid
  FROM medications
  GROUP BY pid
),
observations AS (
  SELECT patient_id AS pid, code, lo AS at, substr(CAST(lo AS TEXT), 1, 10) AS day,
         canonical_value AS v, canonical_code AS u, positive
  FROM clinical_fact
  WHERE res_type = 'Observation'
    AND ((system = :loinc AND code IN ('6690-2', '777-3', '718-7', '789-8', '8310-5', '4548-4', '8099-4', '8098-6',
                                       '93278-0', '2106-3', '2118-8'))
         OR (system = :measure AND code IN ('madrs-total', 'madrs-item-10')))
    AND lo < :tomorrow AND lo >= :half_year
    AND status NOT IN ('registered', 'cancelled', 'entered-in-error', 'unknown')
),
ranked AS (
  SELECT pid, code, v, u, ROW_NUMBER() OVER (
      PARTITION BY pid, code
      ORDER BY day DESC,
        CASE WHEN u = 'm-3.mol' THEN v * 10 / 6.2 WHEN u = 'kg.m-3' AND code = '718-7' THEN v / 10 ELSE v END DESC
    ) AS n
  FROM observations
  WHERE code NOT IN ('8099-4', '8098-6', '2106-3', '2118-8')
    AND at >= CASE code WHEN '8310-5' THEN :three_days WHEN '4548-4' THEN :half_year
                        WHEN 'madrs-total' THEN :thirty_days WHEN 'madrs-item-10' THEN :thirty_days
                        WHEN '93278-0' THEN :thirty_days ELSE :ninety_days END
),
lab_flags AS MATERIALIZED (
  SELECT pid,
    MAX(CASE WHEN code = 'madrs-total' THEN CASE WHEN v > :madrs THEN 1 ELSE 0 END END) AS madrs,
    MAX(CASE WHEN code = '6690-2' THEN CASE WHEN v < :leukocytes THEN 1 ELSE 0 END END) AS leukocytes,
    MAX(CASE WHEN code = '777-3' THEN CASE WHEN v < :platelets THEN 1 ELSE 0 END END) AS platelets,
    MAX(CASE WHEN code = '718-7' THEN CASE WHEN (u = 'kg.m-3' AND v < :haemoglobin)
                                             OR (u = 'm-3.mol' AND v < :haemoglobin_molar)
                                           THEN 1 ELSE 0 END END) AS haemoglobin,
    MAX(CASE WHEN code = '789-8' THEN CASE WHEN v < :erythrocytes THEN 1 ELSE 0 END END) AS erythrocytes,
    MAX(CASE WHEN code = '8310-5' THEN CASE WHEN v >= :fever THEN 1 ELSE 0 END END) AS fever,
    MAX(CASE WHEN code = '4548-4' THEN CASE WHEN v > :hba1c THEN 1 ELSE 0 END END) AS hba1c,
    MAX(CASE WHEN code = 'madrs-item-10' THEN CASE WHEN v > :item_10 THEN 1 ELSE 0 END END) AS item_10,
    MAX(CASE WHEN code = '93278-0' THEN CASE WHEN v > :item_10 THEN 1 ELSE 0 END END) AS columbia
  FROM ranked WHERE n = 1 GROUP BY pid
),
readings AS (
  SELECT pid, code, at, day, positive
  FROM observations
  WHERE code IN ('8099-4', '8098-6', '2106-3', '2118-8') AND at >= :ninety_days
),
antibodies AS (
  SELECT pid, MAX(CASE WHEN n = 1 THEN positive END) AS positive, code
  FROM (SELECT pid, code, positive, ROW_NUMBER() OVER (PARTITION BY pid, code ORDER BY day DESC, positive DESC) AS n
        FROM readings WHERE code IN ('8099-4', '8098-6') AND positive IS NOT NULL) r
  GROUP BY pid, code
),
antibody_flags AS MATERIALIZED (
  SELECT pid, MAX(CASE WHEN code = '8099-4' THEN positive END) AS tpo,
         MAX(CASE WHEN code = '8098-6' THEN positive END) AS tg
  FROM antibodies GROUP BY pid
),
hcg AS MATERIALIZED (
  SELECT DISTINCT pid FROM readings WHERE code IN ('2106-3', '2118-8') AND at >= :thirty_days AND positive = 1
),
other_studies AS MATERIALIZED (
  SELECT r.patient_id AS pid,
    MAX(CASE WHEN p.high IS NOT NULL THEN CASE WHEN p.high >= :thirty_days THEN 2 ELSE 0 END
             WHEN r.code <> 'off-study' THEN 2 WHEN p.low >= :thirty_days THEN 2 ELSE 1 END) AS score
  FROM idx_token r
  LEFT JOIN idx_date p ON p.res_type = 'ResearchSubject' AND p.param = 'date' AND p.res_id = r.res_id
  WHERE r.res_type = 'ResearchSubject' AND r.param = 'status'
    AND r.code IN ('on-study', 'on-study-intervention', 'on-study-observation', 'pending-on-study', 'follow-up',
                   'off-study')
    AND NOT EXISTS (SELECT 1 FROM idx_reference s WHERE s.res_type = 'ResearchSubject' AND s.param = 'study'
                    AND s.res_id = r.res_id AND s.target_type = 'ResearchStudy' AND s.target_id = :study)
    AND (p.low IS NULL OR p.low < :tomorrow)
  GROUP BY r.patient_id
),
criteria AS (
  SELECT p.pid,
    a.adult AS age, COALESCE(c.bipolar, 0) AS bipolar, l.madrs AS madrs, COALESCE(m.mood, 0) AS mood,
    COALESCE(m.antibiotics, 0) AS antibiotics, COALESCE(c.organ_failure, 0) AS organ_failure,
    CASE WHEN c.immune = 1 OR m.immunosuppressant = 1 THEN 1 ELSE 0 END AS immunosuppressed,
    COALESCE(c.transplant, 0) AS transplant, l.leukocytes, l.platelets, l.haemoglobin, l.erythrocytes,
    CASE WHEN t.tpo = 1 OR t.tg = 1 THEN 1 WHEN t.tpo IS NULL OR t.tg IS NULL THEN NULL ELSE 0 END AS antibodies,
    COALESCE(m.nsaid, 0) AS nsaid, COALESCE(l.fever, 0) AS fever,
    CASE WHEN COALESCE(c.diabetes, 0) = 0 OR l.hba1c = 0 THEN 0 WHEN l.hba1c IS NULL THEN NULL ELSE 1 END AS diabetes,
    CASE c.cancer WHEN 2 THEN 1 WHEN 1 THEN NULL ELSE 0 END AS cancer,
    CASE WHEN c.pregnant = 1 OR h.pid IS NOT NULL THEN 1 ELSE 0 END AS pregnancy,
    a.minor AS minor,
    CASE WHEN l.item_10 = 1 OR l.columbia = 1 THEN 1 WHEN l.item_10 IS NULL THEN NULL ELSE 0 END AS suicide,
    COALESCE(c.hiv, 0) AS hiv,
    CASE o.score WHEN 2 THEN 1 WHEN 1 THEN NULL ELSE 0 END AS other_study
  FROM patients p
  LEFT JOIN ages a ON a.pid = p.pid
  LEFT JOIN condition_flags c ON c.pid = p.pid
  LEFT JOIN medication_flags m ON m.pid = p.pid
  LEFT JOIN lab_flags l ON l.pid = p.pid
  LEFT JOIN antibody_flags t ON t.pid = p.pid
  LEFT JOIN hcg h ON h.pid = p.pid
  LEFT JOIN other_studies o ON o.pid = p.pid
)
SELECT status, COUNT(*) FROM (
  SELECT CASE
    WHEN age = 0 OR bipolar = 0 OR madrs = 0 OR mood = 0 OR antibiotics = 1 OR organ_failure = 1 OR immunosuppressed = 1
      OR transplant = 1 OR leukocytes = 1 OR platelets = 1 OR haemoglobin = 1 OR erythrocytes = 1 OR antibodies = 1
      OR nsaid = 1 OR fever = 1 OR diabetes = 1 OR cancer = 1 OR pregnancy = 1 OR minor = 1 OR suicide = 1 OR hiv = 1
      OR other_study = 1 THEN 'ineligible'
    WHEN age IS NULL OR madrs IS NULL OR leukocytes IS NULL OR platelets IS NULL OR haemoglobin IS NULL
      OR erythrocytes IS NULL OR antibodies IS NULL OR diabetes IS NULL OR cancer IS NULL OR minor IS NULL
      OR suicide IS NULL OR other_study IS NULL THEN 'incomplete'
    ELSE 'eligible' END AS status
  FROM criteria
) screened GROUP BY status
"""


def hand_written_parameters() -> dict[str, Any]:
    def at(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    def below(value: float, unit: str) -> float:  # "< threshold", values within the tolerance counting as equal
        found = canonical(value, unit)
        assert found is not None
        return found[0] * (1 - RELATIVE_TOLERANCE)

    def above(value: float, unit: str) -> float:
        found = canonical(value, unit)
        assert found is not None
        return found[0] * (1 + RELATIVE_TOLERANCE)

    return {
        "snomed": SNOMED, "icd10": ICD10, "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm", "atc": ATC, "loinc": LOINC,
        "measure": MEASURE, "study": "depil-2",
        "today": at(AS_OF), "tomorrow": at(AS_OF + timedelta(days=1)), "three_days": at(AS_OF - timedelta(days=3)),
        "thirty_days": at(AS_OF - timedelta(days=30)), "ninety_days": at(AS_OF - timedelta(days=90)),
        "half_year": at(AS_OF - timedelta(days=180)), "five_years": at(date(AS_OF.year - 5, AS_OF.month, AS_OF.day)),
        "four_weeks": at(AS_OF - timedelta(days=27)),  # started on or before D - 28 days
        "adult_from": at(date(AS_OF.year - 18, AS_OF.month, AS_OF.day) + timedelta(days=1)),
        "old_before": at(date(AS_OF.year - 66, AS_OF.month, AS_OF.day) + timedelta(days=1)),
        "madrs": above(17, "{score}"), "item_10": above(2, "{score}"), "leukocytes": below(4.0, "10*3/uL"),
        "platelets": below(100, "10*3/uL"), "haemoglobin": below(10.0, "g/dL"),
        "haemoglobin_molar": below(6.2, "mmol/L"),
        "erythrocytes": below(3.5, "10*12/L"), "fever": below(38, "Cel"), "hba1c": above(9, "%"),
    }  # fmt: skip


def hand_written(conn: Connection) -> dict[str, int]:
    dates = ("today", "tomorrow", "three_days", "thirty_days", "ninety_days", "half_year", "five_years", "four_weeks",
             "adult_from", "old_before")  # fmt: skip
    statement = text(HAND_WRITTEN).bindparams(*(bindparam(name, type_=DateTime(timezone=True)) for name in dates))
    rows = conn.execute(statement, hand_written_parameters()).all()
    counts = dict.fromkeys(("eligible", "ineligible", "incomplete"), 0)
    counts.update({str(status): int(count) for status, count in rows})
    return counts


# ------------------------------------------------------------------------------------------ measuring


def median_seconds(runs: int, work: Any) -> tuple[float, Any]:
    timings, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


def reference_rate(
    engine: Engine, criteria: Eligibility, patients: int, sample: int
) -> tuple[float, float, dict[str, int]]:
    """Patients/s of the reference evaluator on an evenly spread sample, resources read from the store
    (patient_id index) and evaluated; also the rate of the evaluation alone."""
    step = max(1, patients // sample)
    ids = [f"p{n:07d}" for n in range(0, patients, step)][:sample]
    started = time.perf_counter()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.execute(
                text("SELECT patient_id, content FROM resource WHERE patient_id = ANY(:ids) AND deleted = false"),
                {"ids": ids},
            ).all()
        else:
            rows = []
            for first in range(0, len(ids), 500):
                chunk = ids[first : first + 500]
                marks = ", ".join(f":p{k}" for k in range(len(chunk)))
                rows += conn.execute(
                    text(f"SELECT patient_id, content FROM resource WHERE patient_id IN ({marks}) AND deleted = 0"),
                    {f"p{k}": pid for k, pid in enumerate(chunk)},
                ).all()
    groups: dict[str, list[dict[str, Any]]] = {}
    for patient_id, content in rows:
        groups.setdefault(patient_id, []).append(orjson.loads(content) if isinstance(content, str | bytes) else content)
    evaluated = time.perf_counter()
    counts = dict.fromkeys(("eligible", "ineligible", "incomplete"), 0)
    for patient_id in ids:
        counts[evaluate_patient(criteria, groups[patient_id], AS_OF, STUDY).status] += 1
    finished = time.perf_counter()
    return len(ids) / (finished - started), len(ids) / (finished - evaluated), counts


def run(engine: Engine, args: argparse.Namespace) -> None:
    spec = load_studies(ROOT / "mappings" / "studies").find("depil-2")
    assert spec is not None
    criteria = spec.eligibility
    patients = args.patients
    warm_up()
    print(
        f"  {engine.dialect.name}: screening {patients:,} patients against DEPIL-2 as of {AS_OF} "
        f"(medians of {args.runs})"
    )

    def compiled() -> Any:
        return screen(engine, criteria, AS_OF, STUDY, limit=50)

    screen_seconds, screening = median_seconds(args.runs, compiled)
    rss_after_screening = peak_rss_mib()
    sharding = ""
    if engine.dialect.name == "postgresql":
        parallel = default_parallel()
        sharding = f" ({shard_count(patients, parallel)} shards, {parallel} at a time)"
    print(
        f"  compiled SQL:      {screen_seconds:8.2f} s  {patients / screen_seconds:>12,.0f} patients/s  "
        f"counts {screening.counts}  peak RSS {rss_after_screening:,.0f} MiB{sharding}"
    )
    one_seconds = None
    if engine.dialect.name == "postgresql":  # like for like with the hand-written query: one statement

        def one_statement() -> Any:
            with engine.connect() as conn:
                for setting in POPULATION_SETTINGS:
                    conn.exec_driver_sql(setting)
                return screen(conn, criteria, AS_OF, STUDY, limit=50)

        one_seconds, single = median_seconds(args.runs, one_statement)
        same = "same counts" if single.counts == screening.counts else f"counts differ: {single.counts}"
        print(f"  compiled, 1 stmt:  {one_seconds:8.2f} s  {patients / one_seconds:>12,.0f} patients/s  ({same})")

    def by_hand() -> dict[str, int]:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                for setting in POPULATION_SETTINGS:  # the session settings `screen` uses, for a fair comparison
                    conn.exec_driver_sql(setting)
            return hand_written(conn)

    hand_seconds, hand_counts = median_seconds(args.runs, by_hand)
    same = "same counts" if hand_counts == screening.counts else f"counts differ: {hand_counts}"
    print(f"  hand-written SQL:  {hand_seconds:8.2f} s  {patients / hand_seconds:>12,.0f} patients/s  ({same})")
    rate, evaluation_rate, sample_counts = reference_rate(engine, criteria, patients, args.sample)
    print(
        f"  reference (sample of {args.sample:,}): {rate:,.0f} patients/s with reading ({evaluation_rate:,.0f}/s "
        f"evaluation alone), {patients / rate:,.1f} s extrapolated; sample counts {sample_counts}"
    )
    single_ratio = f" (one statement {one_seconds / hand_seconds:.2f})" if one_seconds is not None else ""
    print(
        f"  ratios: compiled / hand-written time {screen_seconds / hand_seconds:.2f}{single_ratio}; "
        f"compiled vs reference speed {patients / screen_seconds / rate:,.1f}x; peak RSS {peak_rss_mib():,.0f} MiB"
    )


if __name__ == "__main__":
    main()
