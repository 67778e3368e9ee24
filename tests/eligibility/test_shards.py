"""A whole-population screening on PostgreSQL runs in shards of Patient id ranges on several connections, all
reading one exported snapshot: whatever the number of shards, the counts, rows and pages equal those of the
single statement, every live patient is in exactly one shard, and writes made after the screening began are
not seen by any shard."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Connection, Engine

from app.config import Settings
from app.eligibility import sql
from app.eligibility.population import Screening
from app.eligibility.sql import (
    adopt_snapshot,
    population_snapshot,
    screen,
    shard_count,
    shard_ranges,
)
from app.fhir import bundle as bundles
from app.main import create_app
from app.mapping.study_spec import StudySpec, load_studies
from app.store.db import make_engine, migrate
from app.store.repository import Store
from app.store.schema import metadata
from app.synthetic.generator import HOSPITAL_BUNDLE

ROOT = Path(__file__).resolve().parents[2]
D = date(2026, 11, 1)
STUDY = "ResearchStudy/depil-2"
BASE_URL = "http://testserver/fhir"


@pytest.fixture(scope="module")
def pg_store(postgres_url: str) -> Iterator[Store]:
    """The hospital population on PostgreSQL (the only backend that shards), loaded once: the tests that
    write (a deletion, a new patient) compare with the live population rather than the fixture's 150."""
    engine = make_engine(postgres_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(table.name for table in metadata.sorted_tables)}")
    store = Store(engine)
    bundle = json.loads((ROOT / "fixtures" / HOSPITAL_BUNDLE).read_text(encoding="utf-8"))
    bundles.process(store, copy.deepcopy(bundle), bundles.BundleOptions(BASE_URL))
    yield store
    engine.dispose()


@pytest.fixture(scope="module")
def depil2() -> StudySpec:
    spec = load_studies(ROOT / "mappings" / "studies").find("depil-2")
    assert spec is not None
    return spec


def one_statement(engine: Engine, spec: StudySpec, **page: object) -> Screening:
    """The same screening as a single statement (a Connection is never sharded)."""
    with engine.connect() as conn:
        return screen(conn, spec.eligibility, D, STUDY, **page)  # type: ignore[arg-type]


def live_patient_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT res_id FROM resource WHERE res_type = 'Patient' AND deleted = false ORDER BY res_id"
        )
        return [row[0] for row in rows]


@pytest.mark.parametrize(
    ("patients", "parallel", "per_shard", "smallest", "expected"),
    [
        (0, 4, 10, 1, 1),  # nobody: one (empty) statement
        (1, 4, 10, 1, 1),
        (9, 1, 10, 1, 1),  # one connection and one shard's worth
        (25, 1, 10, 1, 3),  # one connection: shards only to bound their size
        (9, 2, 10, 1, 2),  # two connections: at least two shards
        (25, 2, 10, 1, 4),  # three needed, rounded up to a multiple of the connections
        (3, 8, 10, 1, 3),  # never more shards than patients
        (1_000_000, 2, 250_000, 25_000, 4),  # the defaults
        (100_000, 2, 250_000, 25_000, 2),
        (100_000, 8, 250_000, 25_000, 4),  # no shard under the smallest size, whatever the connections
        (49_999, 2, 250_000, 25_000, 1),  # two shards would be under it: one statement
        (50_000, 2, 250_000, 25_000, 2),
    ],
)
def test_shard_count(patients: int, parallel: int, per_shard: int, smallest: int, expected: int) -> None:
    assert shard_count(patients, parallel, per_shard, smallest) == expected


@pytest.mark.parametrize("shards", [1, 2, 7, 150, 400])
def test_shard_ranges_hold_every_live_patient_once_in_id_order(pg_store: Store, shards: int) -> None:
    ids = live_patient_ids(pg_store.engine)
    assert len(ids) >= 100
    with pg_store.engine.connect() as conn:
        ranges = shard_ranges(conn, shards)
    assert len(ranges) == min(shards, len(ids))
    # positions in the database's own order (its collation), not Python's string order
    position = {patient_id: k for k, patient_id in enumerate(ids)}
    spans = [(position[r.first], position[r.last]) for r in ranges]
    assert spans[0][0] == 0 and spans[-1][1] == len(ids) - 1
    assert all(last + 1 == first for (_, last), (first, _) in itertools.pairwise(spans))  # contiguous, in order
    sizes = [last - first + 1 for first, last in spans]
    assert sum(sizes) == len(ids) and max(sizes) - min(sizes) <= 1  # each id once, equal sizes


@pytest.mark.parametrize(("parallel", "per_shard"), [(1, 40), (2, 1_000), (3, 7)])
def test_sharded_screening_equals_the_single_statement(
    pg_store: Store, depil2: StudySpec, parallel: int, per_shard: int
) -> None:
    engine = pg_store.engine
    whole = one_statement(engine, depil2)
    sharded = screen(
        engine, depil2.eligibility, D, STUDY, parallel=parallel, shard_patients=per_shard, min_shard_patients=1
    )
    assert sharded.counts == whole.counts and sharded.total == len(live_patient_ids(engine))
    assert sharded.rows == whole.rows
    assert all(whole.counts.values())  # the fixture has eligible, ineligible and incomplete patients


@pytest.mark.parametrize("status", [None, "ineligible", "incomplete"])
def test_sharded_pages_cross_shard_boundaries(pg_store: Store, depil2: StudySpec, status: str | None) -> None:
    """Four shards of ~38 patients, pages of 25: pages start and end inside shards and span two."""
    engine = pg_store.engine
    whole = one_statement(engine, depil2)
    pages, after = [], None
    while True:
        page = screen(
            engine,
            depil2.eligibility,
            D,
            STUDY,
            status=status,
            after=after,
            limit=25,
            parallel=2,
            shard_patients=40,
            min_shard_patients=1,
        )
        assert page.counts == whole.counts
        assert page.rows == one_statement(engine, depil2, status=status, after=after, limit=25).rows
        pages += page.rows
        after = page.next_after(25)
        if after is None:
            break
    assert pages == [row for row in whole.rows if status is None or row.status == status]


def test_deleted_patients_are_in_no_shard(pg_store: Store, depil2: StudySpec) -> None:
    ids = live_patient_ids(pg_store.engine)
    with pg_store.transaction() as tx:
        for patient_id in ids[::10]:
            tx.delete("Patient", patient_id)
    sharded = screen(pg_store.engine, depil2.eligibility, D, STUDY, parallel=2, shard_patients=9, min_shard_patients=1)
    assert sharded.total == len(ids) - len(ids[::10])
    assert {row.patient_id for row in sharded.rows} == set(ids) - set(ids[::10])
    assert sharded.rows == one_statement(pg_store.engine, depil2).rows


def test_every_shard_reads_the_snapshot_of_the_screenings_start(pg_store: Store) -> None:
    engine = pg_store.engine
    with population_snapshot(engine) as (coordinator, snapshot):
        before = len(live_patient_ids(engine))
        with pg_store.transaction() as tx:  # committed after the export
            tx.create("Patient", {"resourceType": "Patient", "birthDate": "1980-01-01"})
        assert len(live_patient_ids(engine)) == before + 1  # a fresh transaction sees it
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as shard:
            adopt_snapshot(shard, snapshot)
            seen = shard.exec_driver_sql(
                "SELECT count(*) FROM resource WHERE res_type = 'Patient' AND deleted = false"
            ).scalar_one()
        assert seen == before
        assert len(shard_ranges(coordinator, 400)) == before  # the coordinator's ranges: the same snapshot


def test_a_screening_does_not_count_a_patient_written_while_it_runs(
    pg_store: Store, depil2: StudySpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Patient committed after the coordinator exported its snapshot, inside a shard's id range, is in no
    shard's population: every shard adopted the snapshot."""
    engine = pg_store.engine
    ids = live_patient_ids(engine)
    cut = sql.shard_ranges
    found: list[sql.PatientRange] = []
    late: list[str] = []

    def cut_then_write(conn: Connection, shards: int) -> list[sql.PatientRange]:
        found.extend(cut(conn, shards))
        late.append(found[1].first + "0")  # right after the second shard's first patient: inside its range
        with pg_store.transaction() as tx:  # another connection, committed before the shards start
            tx.create("Patient", {"resourceType": "Patient", "birthDate": "1980-01-01"}, late[0])
        return found

    monkeypatch.setattr(sql, "shard_ranges", cut_then_write)
    try:
        sharded = screen(engine, depil2.eligibility, D, STUDY, parallel=2, shard_patients=30, min_shard_patients=1)
        with engine.connect() as conn:  # inside the range in the database's collation
            between = "SELECT %(id)s BETWEEN %(first)s AND %(last)s"
            bounds = {"id": late[0], "first": found[1].first, "last": found[1].last}
            assert conn.exec_driver_sql(between, bounds).scalar() is True
        assert sharded.total == len(ids) and late[0] not in {row.patient_id for row in sharded.rows}
        assert len(live_patient_ids(engine)) == len(ids) + 1  # it was written
    finally:
        with pg_store.transaction() as tx:
            tx.delete("Patient", late[0])


def test_a_snapshot_id_is_checked_before_it_reaches_sql(pg_store: Store) -> None:
    with pg_store.engine.connect() as conn, pytest.raises(ValueError, match="snapshot"):
        adopt_snapshot(conn, "00000003-0000001B-1'; DROP TABLE resource; --")


def test_the_api_screens_in_shards_on_the_configured_connections(
    pg_store: Store, depil2: StudySpec, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIALBRIDGE_SCREENING_PARALLEL", "3")
    settings = Settings(database_url=postgres_url)
    assert settings.screening_parallel == 3
    passed: list[int] = []
    run_shards = sql._screen_shards

    def spy(*args: Any, **kwargs: Any) -> Screening:
        passed.append(kwargs["parallel"])
        return run_shards(*args, **kwargs)

    monkeypatch.setattr(sql, "_screen_shards", spy)
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/studies/depil-2/eligibility", params={"as-of": D.isoformat(), "_count": 5})
    assert response.status_code == 200, response.text
    assert passed == [3]
    assert response.json()["counts"] == one_statement(pg_store.engine, depil2).counts


def test_screening_parallel_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="screening_parallel"):
        Settings(screening_parallel=0)
