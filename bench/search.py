"""Search benchmark: 10,000 patients and 500,000 observations, typical searches and concurrent reads.

Loads the data straight into the store (the same index extraction and bulk inserts as ingest, without
HTTP), starts `trialbridge serve` on it, and prints:
- median and p95 latency of typical searches (one client, sequential, random patients);
- reads/s of `GET /fhir/Patient/{id}` with 32 concurrent connections (wrk, random ids).
Targets (issue 3): p95 <= 50 ms for the per-patient searches, >= 1,500 reads/s.

    python bench/search.py [--patients 10000] [--per-patient 50] [--backends postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from app.store.db import make_engine, migrate
from app.store.repository import Store
from app.testing.live import start_live_server, stop_live_server
from app.testing.postgres import PostgresServer

SITE = "https://hospital.example/mrn"
LABS = [
    ("6690-2", "10*3/uL", 3.0, 11.0),
    ("777-3", "10*3/uL", 80, 400),
    ("718-7", "g/dL", 9.0, 17.0),
    ("789-8", "10*6/uL", 3.2, 5.9),
    ("24467-3", "/uL", 300, 1500),
]
WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/fhir/Patient/pat-" .. math.random(0, {patients} - 1))
end
"""


def effective(index: int, rng: random.Random) -> str:
    return f"202{4 + index % 2}-{1 + index % 12:02d}-{1 + rng.randint(0, 27):02d}T08:00:00Z"


def load(url: str, patients: int, per_patient: int) -> float:
    """Write the population through WriteTransaction (indexing included); returns resources/s."""
    rng = random.Random(7)
    engine = make_engine(url)
    migrate(engine)
    store = Store(engine)
    start = time.perf_counter()
    batch = 200  # patients per database transaction
    for first in range(0, patients, batch):
        with store.transaction() as tx:
            for p in range(first, min(first + batch, patients)):
                pid = f"pat-{p}"
                tx.create(
                    "Patient",
                    {
                        "identifier": [{"system": SITE, "value": f"MRN{p:06d}"}],
                        "name": [{"family": rng.choice(["Martin", "Dubois", "Durand"])}],
                        "gender": rng.choice(["female", "male"]),
                        "birthDate": f"{rng.randint(1940, 2005)}-0{rng.randint(1, 9)}-15",
                    },
                    pid,
                )
                for o in range(per_patient):
                    code, unit, low, high = LABS[o % len(LABS)]
                    tx.create(
                        "Observation",
                        {
                            "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                            "subject": {"reference": f"Patient/{pid}"},
                            "effectiveDateTime": effective(o, rng),
                            "valueQuantity": {
                                "value": round(rng.uniform(low, high), 2),
                                "unit": unit,
                                "system": "http://unitsofmeasure.org",
                                "code": unit,
                            },
                        },
                    )
    elapsed = time.perf_counter() - start
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return patients * (1 + per_patient) / elapsed


def latencies(base: str, patients: int, rounds: int) -> dict[str, tuple[float, float, int]]:
    rng = random.Random(11)
    searches = {
        "Observation?subject&code&date": lambda p: (
            "Observation",
            {"subject": f"Patient/pat-{p}", "code": "http://loinc.org|6690-2", "date": "ge2025-01-01"},
        ),
        "Observation?code&value-quantity": lambda p: (
            "Observation",
            {"code": "http://loinc.org|6690-2", "value-quantity": f"gt{10 + (p % 10) / 10}"},
        ),
        "Patient?identifier": lambda p: ("Patient", {"identifier": f"{SITE}|MRN{p:06d}"}),
        "Patient?_id&_revinclude": lambda p: ("Patient", {"_id": f"pat-{p}", "_revinclude": "Observation:subject"}),
    }
    results = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, make in searches.items():
            timings, sizes = [], []
            for _ in range(rounds):
                path, params = make(rng.randrange(patients))
                start = time.perf_counter()
                response = client.get(f"/{path}", params=params)
                timings.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                sizes.append(len(response.json().get("entry", [])))
            timings.sort()
            results[name] = (
                statistics.median(timings),
                timings[int(len(timings) * 0.95) - 1],
                int(statistics.median(sizes)),
            )
    return results


def reads_per_second(base_url: str, patients: int, seconds: int) -> float:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.replace("{patients}", str(patients)))
    root = base_url.rsplit("/fhir", 1)[0]
    output = subprocess.run(
        [wrk, "-t2", "-c32", f"-d{seconds}s", "-s", script.name, root],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    for line in output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"could not read wrk's output:\n{output}")


def run(backend: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(PostgresServer()).create_database("bench")
        else:
            url = f"sqlite:///{Path(tmp) / 'b.sqlite3'}"
        rate = load(url, args.patients, args.per_patient)
        print(
            f"\n## {backend}: loaded {args.patients:,} patients and {args.patients * args.per_patient:,} "
            f"observations at {rate:,.0f} resources/s (in-process, indexing included)"
        )
        server = start_live_server(url, Path(tmp) / "server.log")
        try:
            print(f"{'search':<36}{'median ms':>10}{'p95 ms':>9}{'entries':>9}")
            for name, (median, p95, size) in latencies(server.base_url, args.patients, args.rounds).items():
                print(f"{name:<36}{median:>10.1f}{p95:>9.1f}{size:>9}")
            one = reads_per_second(server.base_url, args.patients, args.seconds)
        finally:
            stop_live_server(server)
        server = start_live_server(url, Path(tmp) / "server2.log", "--workers", "2")
        try:
            two = reads_per_second(server.base_url, args.patients, args.seconds)
        finally:
            stop_live_server(server)
        print(
            f"reads/s, 32 connections (wrk, {args.seconds}s): {one:,.0f} with one server process, "
            f"{two:,.0f} with --workers 2"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--per-patient", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--backends", default="postgresql,sqlite")
    args = parser.parse_args()
    print(
        f"# search benchmark — {time.strftime('%Y-%m-%d')} — {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})"
    )
    for backend in args.backends.split(","):
        run(backend, args)


if __name__ == "__main__":
    main()
