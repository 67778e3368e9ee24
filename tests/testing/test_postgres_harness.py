"""Tests for app.testing.postgres (throwaway PostgreSQL servers)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.testing import postgres as harness
from app.testing.postgres import PostgresServer, PostgresServerError


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # an exited but not yet reaped process counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _postmaster_pid(server: PostgresServer) -> int:
    assert server.directory is not None
    return int((server.directory / "data" / "postmaster.pid").read_text().split("\n", 1)[0])


def _assert_gone(port: int, directory: Path, pid: int) -> None:
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pid)
    assert not _port_open(port)
    assert not directory.exists()


def _psycopg_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, so the `postgres` OS user (used when
    # running as root) could not reach a server directory below it.
    path = Path(tempfile.mkdtemp(prefix="harness-test-", dir=harness.default_base_dir()))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


def test_start_stop_twice_in_a_row(base_dir: Path) -> None:
    pg = PostgresServer(base_dir=str(base_dir))
    for _ in range(2):
        pg.start()
        port, directory, pid = pg.port, pg.directory, _postmaster_pid(pg)
        assert directory is not None and directory.parent == base_dir.resolve()
        assert pg.is_running() and _port_open(port)
        assert pg.url() == f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pg.stop()
        _assert_gone(port, directory, pid)
        assert not pg.is_running()
        pg.stop()  # idempotent
    assert list(base_dir.iterdir()) == []


def test_two_databases_are_isolated(server: PostgresServer) -> None:
    url_a = server.create_database("harness_a")
    url_b = server.create_database("harness_b")
    assert url_a == f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/harness_a"
    assert url_b == server.url("harness_b")

    with psycopg.connect(_psycopg_dsn(url_a), autocommit=True) as conn:
        version = conn.execute("SELECT version()").fetchone()
        assert version is not None and version[0].startswith("PostgreSQL ")
        assert int(version[0].split()[1].split(".")[0]) >= 15
        conn.execute("CREATE TABLE only_in_a (id int PRIMARY KEY)")
        conn.execute("INSERT INTO only_in_a VALUES (1)")
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)

    with psycopg.connect(_psycopg_dsn(url_b)) as conn:
        assert conn.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)

    # The returned URL is usable by SQLAlchemy with the psycopg 3 driver.
    engine = sa.create_engine(url_a, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM only_in_a")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "harness_a"
    finally:
        engine.dispose()


def test_second_concurrent_server_gets_another_port(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the first port pick collide with the running server: start() must retry on a fresh port.
    picks = iter([server.port])
    real_pick = harness._pick_port
    monkeypatch.setattr(harness, "_pick_port", lambda: next(picks, None) or real_pick())
    with PostgresServer() as second:
        assert second.port != server.port
        assert second.directory != server.directory
        for pg in (server, second):
            with psycopg.connect(pg.dsn()) as conn:
                row = conn.execute("SELECT inet_server_port()").fetchone()
                assert row == (pg.port,)
    assert server.is_running()


def test_start_failure_reports_log_tail_and_cleans_up(server: PostgresServer, base_dir: Path) -> None:
    pg = PostgresServer(port=server.port, base_dir=str(base_dir))  # explicit port already taken
    with pytest.raises(PostgresServerError, match="Address already in use") as excinfo:
        pg.start()
    assert "server log tail" in str(excinfo.value)
    assert pg.directory is None and not pg.is_running()
    assert list(base_dir.iterdir()) == []
    assert server.is_running()


def test_binaries_are_discovered_without_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt() -> None:
        raise AssertionError("apt-get must not run when the server binaries are present")

    monkeypatch.setattr(harness, "_install_with_apt", no_apt)
    harness.find_bindir.cache_clear()
    try:
        bindir = harness.find_bindir()
    finally:
        harness.find_bindir.cache_clear()
    assert all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))
    assert bindir != Path("/usr/local/bin")


def test_missing_binaries_trigger_install_then_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(harness, "_discover_bindir", lambda: None)
    monkeypatch.setattr(harness, "_install_with_apt", lambda: calls.append("install"))
    harness.find_bindir.cache_clear()
    try:
        with pytest.raises(PostgresServerError, match="server binaries not found"):
            harness.find_bindir()
    finally:
        harness.find_bindir.cache_clear()
    assert calls == ["install"]
