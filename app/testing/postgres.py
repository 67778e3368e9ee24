"""Throwaway PostgreSQL (>= 15) servers for tests and benchmarks.

Usage::

    with PostgresServer() as pg:
        url = pg.create_database("trialbridge_test")  # SQLAlchemy URL (psycopg 3 driver)

Each server gets a private temporary directory (data dir, unix socket dir, server log) under
``base_dir`` (default: RAM-backed /dev/shm when usable, else the system temp dir),
listens on 127.0.0.1 only, trusts every local/loopback connection (superuser ``postgres``,
no password) and runs with durability switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``).  Never point it at data you care about.

When the effective uid is 0, ``initdb``/``pg_ctl`` run as the ``postgres`` OS user through
``runuser`` (the server refuses to run as root) and the temporary directory is chowned to
that user.  When the server binaries are missing and we are root on a machine with
``apt-get``, the Debian ``postgresql`` package is installed once (needs an apt mirror).

Developers and benchmarks can keep one running with ``python -m app.testing.postgres``:
it prints the URL on the first line of stdout and stops the server on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["PostgresServer", "PostgresServerError", "default_base_dir", "find_bindir"]

MIN_MAJOR_VERSION = 15
SERVER_USER = "postgres"  # OS user the server runs as when we are root
SUPERUSER = "postgres"  # database superuser created by initdb
HOST = "127.0.0.1"
BINDIR_ENV = "TRIALBRIDGE_PG_BINDIR"  # optional override: directory with initdb, pg_ctl, postgres

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_UNIX_SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1 on Linux
_PORT_IN_USE = re.compile(r"Address already in use|could not create any TCP/IP sockets", re.IGNORECASE)

# Settings appended to postgresql.conf.  Sized for a 2-core / 24 GiB machine running several of
# these servers plus the application; durability is traded for speed on purpose.
_SERVER_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "work_mem": "8MB",
    "maintenance_work_mem": "128MB",
    "effective_cache_size": "4GB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
    "max_parallel_workers_per_gather": "1",
    "jit": "off",
    "huge_pages": "off",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
}


class PostgresServerError(RuntimeError):
    """The throwaway server could not be set up, started or stopped."""


# --------------------------------------------------------------------------- binaries


def _major_version(bindir: Path) -> int | None:
    """Major version of ``bindir/postgres`` (``None`` if it does not run)."""
    try:
        out = subprocess.run(  # noqa: S603 - absolute path of a discovered postgres binary, no shell
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _usable(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES) and (
        (_major_version(bindir) or 0) >= MIN_MAJOR_VERSION
    )


def _candidate_bindirs() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(  # noqa: S603 - pg_config found on PATH, fixed arguments, no shell
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    # Debian/Ubuntu layout; highest version first.
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True))
    return candidates


def _discover_bindir() -> Path | None:
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override)
        if not _usable(path):
            raise PostgresServerError(
                f"{BINDIR_ENV}={override} does not contain PostgreSQL >= {MIN_MAJOR_VERSION} "
                f"server binaries ({', '.join(_REQUIRED_BINARIES)})"
            )
        return path
    return next((path for path in _candidate_bindirs() if _usable(path)), None)


def _install_with_apt() -> None:
    """Install Debian's ``postgresql`` package (root only; serialised across processes)."""
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        return
    lock_path = Path(tempfile.gettempdir()) / "trialbridge-postgres-install.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test workers: one installs, the others wait
        if _discover_bindir() is not None:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in (["update"], ["install", "-y", "postgresql"]):
            cmd = [apt_get, "-o", "DPkg::Lock::Timeout=300", *args]
            try:
                result = subprocess.run(  # noqa: S603 - intended: install the server package, fixed argv
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                    check=False,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise PostgresServerError(f"{' '.join(cmd)} timed out") from exc
            if result.returncode != 0:
                raise PostgresServerError(
                    f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
                    f"{_tail(result.stdout + result.stderr)}"
                )


@functools.cache
def find_bindir() -> Path:
    """Directory holding PostgreSQL >= 15 ``initdb``/``pg_ctl``/``postgres``; installs them if possible."""
    bindir = _discover_bindir()
    if bindir is None:
        _install_with_apt()
        bindir = _discover_bindir()
    if bindir is None:
        raise PostgresServerError(
            f"PostgreSQL >= {MIN_MAJOR_VERSION} server binaries not found (looked at `pg_config --bindir` "
            f"and /usr/lib/postgresql/*/bin). Install them (Debian: apt-get install postgresql) "
            f"or set {BINDIR_ENV}."
        )
    return bindir


# --------------------------------------------------------------------------- helpers


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_tail(path: Path | None, lines: int = 40, *, offset: int = 0) -> str:
    """Last ``lines`` lines of the log at ``path``, ignoring the first ``offset`` bytes."""
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return _tail(text, lines) or "(log is empty)"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _clean_env() -> dict[str, str]:
    """Environment for server processes: no PG* variables leaking in, English messages."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["TZ"] = "UTC"
    return env


def default_base_dir() -> str:
    """Where server directories go by default: RAM-backed /dev/shm when usable, else the temp dir.

    On this VM initdb + start takes ~0.9 s on tmpfs versus ~1.5-2 s on the ext4 root disk, and
    CREATE DATABASE ~0.05 s versus ~0.3 s.
    """
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs; every server gets its own mkdtemp() directory in it
    with contextlib.suppress(OSError):
        if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free >= 2 << 30:
            return str(shm)
    return tempfile.gettempdir()


def _default_locale() -> str:
    # C.UTF-8 keeps byte-order collation (fast, deterministic) but gives upper()/lower()/ILIKE
    # Unicode-aware character classes; fall back to plain C where that locale is missing.
    return "C.UTF-8" if Path("/usr/lib/locale/C.utf8").is_dir() else "C"


_live_servers: set[PostgresServer] = set()
_reserved_ports: set[int] = set()
_lock = threading.Lock()


def _pick_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        with _lock:
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise PostgresServerError("could not find a free TCP port on 127.0.0.1")


def _terminate_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL, the process group led by ``proc`` (started with a new session)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live_servers):
        if server._owner_pid == os.getpid():  # not in forked children
            with contextlib.suppress(Exception):
                server.stop()


# --------------------------------------------------------------------------- server


class PostgresServer:
    """A private PostgreSQL server in a temporary directory; use as a context manager."""

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._requested_port = port
        self._base_dir = base_dir
        self._startup_timeout = startup_timeout
        self._port: int | None = None
        self._tmpdir: Path | None = None
        self._owner_pid = os.getpid()
        self._bindir: Path | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None or self._tmpdir is None:
            raise PostgresServerError("server is not running")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def directory(self) -> Path | None:
        """Temporary directory (``data/``, ``socket/``, ``server.log``) while started."""
        return self._tmpdir

    @property
    def socket_dir(self) -> Path:
        return self._require_dir() / "socket"

    @property
    def log_path(self) -> Path:
        return self._require_dir() / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of database ``dbname``."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URL for ``psycopg.connect`` / psql."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by the superuser) and return its SQLAlchemy URL."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """initdb a fresh cluster, start it and wait until it accepts TCP connections."""
        if self._tmpdir is not None:
            raise PostgresServerError("server already started")
        self._owner_pid = os.getpid()
        self._bindir = find_bindir()
        self._tmpdir = Path(
            tempfile.mkdtemp(prefix="trialbridge-pg-", dir=self._base_dir or default_base_dir())
        ).resolve()
        _live_servers.add(self)
        try:
            self._prepare_dirs()
            self._initdb()
            self._start_server()
        except BaseException:
            self._cleanup_after_failed_start()
            raise

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and delete its directory; idempotent."""
        if self._tmpdir is None:
            return
        self._shut_down_and_forget()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port} dir={self._tmpdir}" if self._tmpdir else "stopped"
        return f"<PostgresServer {state}>"

    # -- internals -----------------------------------------------------------------------

    def _require_dir(self) -> Path:
        if self._tmpdir is None:
            raise PostgresServerError("server is not running")
        return self._tmpdir

    @property
    def _data_dir(self) -> Path:
        return self._require_dir() / "data"

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _command(self, program: str, *args: str) -> list[str]:
        assert self._bindir is not None
        cmd = [str(self._bindir / program), *args]
        if self._as_root():
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            cmd = [runuser, "-u", SERVER_USER, "--", *cmd]
        return cmd

    def _run(self, program: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = self._command(program, *args)
        # Own process group: on timeout or interruption (Ctrl-C, SIGTERM) the whole runuser ->
        # initdb/pg_ctl tree is terminated, not just runuser.  cwd: the server user must be able to
        # read its working directory (root's may be 0700).  A started postmaster is unaffected: pg_ctl
        # puts it in a session of its own and stop() handles it through the pid file.
        proc = subprocess.Popen(  # noqa: S603 - argv list of discovered PostgreSQL binaries, no shell
            cmd,
            cwd=self._tmpdir,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            _terminate_group(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise PostgresServerError(
                    f"{' '.join(cmd)} timed out after {timeout:.0f}s; server log tail:\n"
                    f"{_read_tail(self._tmpdir and self._tmpdir / 'server.log')}"
                ) from exc
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    def _prepare_dirs(self) -> None:
        tmpdir = self._require_dir()
        self.socket_dir.mkdir()
        socket_path = self.socket_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > _UNIX_SOCKET_PATH_MAX:
            raise PostgresServerError(
                f"unix socket path {socket_path} is longer than {_UNIX_SOCKET_PATH_MAX} bytes; use a shorter base_dir"
            )
        if not self._as_root():
            return
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresServerError(
                f"running as root but OS user {SERVER_USER!r} does not exist (postgres refuses to run "
                "as root); install the postgresql package or run as an unprivileged user"
            ) from None
        for path in (tmpdir, self.socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        check = subprocess.run(  # noqa: S603 - fixed argv: can the server user write its directory?
            [runuser, "-u", SERVER_USER, "--", "test", "-w", str(tmpdir), "-a", "-x", str(tmpdir)],
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise PostgresServerError(
                f"OS user {SERVER_USER!r} cannot use {tmpdir} (a parent directory is probably not "
                "searchable by it, e.g. under /root); pass a base_dir such as /tmp"
            )

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            "-D", str(self._data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={_default_locale()}",
            "--no-sync",
            "--no-instructions",
            timeout=180,
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresServerError(
                f"initdb failed with exit code {result.returncode}:\n{_tail(result.stdout + result.stderr)}"
            )

    def _write_settings(self, port: int) -> None:
        settings = {
            **_SERVER_SETTINGS,
            "listen_addresses": _conf_quote(HOST),
            "port": str(port),
            "unix_socket_directories": _conf_quote(str(self.socket_dir)),
        }
        lines = ["", "# --- app.testing.postgres (throwaway test server) ---"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        # Appending keeps the file's owner (postgres); later lines override earlier ones.
        with (self._data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    def _start_server(self) -> None:
        attempts = 1 if self._requested_port is not None else 5
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else _pick_port()
            self._port = port
            self._write_settings(port)
            log_offset = _file_size(self.log_path)  # report only this attempt's log lines
            result = self._run(
                "pg_ctl", "start",
                "-D", str(self._data_dir),
                "-l", str(self.log_path),
                "-w", "-t", str(max(1, int(self._startup_timeout))),
                timeout=self._startup_timeout + 30,
            )  # fmt: skip
            if result.returncode == 0:
                self._wait_until_connectable()
                return
            log_tail = _read_tail(self.log_path, offset=log_offset)
            if self._postmaster_pid() is None and _PORT_IN_USE.search(log_tail) and attempt < attempts:
                with _lock:
                    _reserved_ports.discard(port)
                continue  # lost a race for the port: try another one
            raise PostgresServerError(
                f"PostgreSQL failed to start on {HOST}:{port} (pg_ctl exit code {result.returncode}):\n"
                f"{_tail(result.stdout + result.stderr)}\n"
                f"--- server log tail ---\n{log_tail}"
            )

    def _wait_until_connectable(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or self._postmaster_pid() is None:
                    raise PostgresServerError(
                        f"PostgreSQL on {HOST}:{self._port} does not accept connections: {exc}\n"
                        f"--- server log tail ---\n{_read_tail(self.log_path)}"
                    ) from exc
                time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        """PID of *our* postmaster if it is alive (checked via its cwd = our data dir)."""
        if self._tmpdir is None:
            return None
        try:
            pid = int((self._data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        proc_cwd = Path(f"/proc/{pid}/cwd")
        if Path("/proc/self").exists():
            try:
                if Path(os.readlink(proc_cwd)) != self._data_dir:
                    return None  # stale pid file, pid reused by another process
            except OSError:
                return None
        return pid

    def _shutdown(self) -> None:
        if self._postmaster_pid() is None:
            return
        with contextlib.suppress(PostgresServerError):
            self._run("pg_ctl", "stop", "-D", str(self._data_dir), "-m", "fast", "-w", "-t", "30", timeout=60)
        pid = self._postmaster_pid()
        if pid is None:
            return
        # pg_ctl did not manage: kill our postmaster hard and wait for it to go away.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._postmaster_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _cleanup_after_failed_start(self) -> None:
        self._shut_down_and_forget()

    def _shut_down_and_forget(self) -> None:
        """Stop our postmaster (if any), delete the directory and release the port."""
        tmpdir = self._tmpdir
        try:
            self._shutdown()
        finally:
            if tmpdir is not None:
                self._remove_tree(tmpdir)
            self._tmpdir = None
            _live_servers.discard(self)
            with _lock:
                if self._port is not None:
                    _reserved_ports.discard(self._port)

    @staticmethod
    def _remove_tree(path: Path) -> None:
        for attempt in range(3):
            try:
                shutil.rmtree(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.2)  # a just-exited backend may still be unlinking files


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.testing.postgres",
        description="Run a throwaway PostgreSQL server until Ctrl-C/SIGTERM; prints its URL first.",
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument(
        "--base-dir", default=None, help="parent of the temporary directory (default: /dev/shm if usable)"
    )
    parser.add_argument("--database", default=None, help="create this database and print its URL")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            raise KeyboardInterrupt  # also interrupts a start() in progress

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    server = PostgresServer(port=args.port, base_dir=args.base_dir)
    try:
        server.start()
        url = server.create_database(args.database) if args.database else server.url()
        print(url, flush=True)
        print(
            f"PostgreSQL listening on {HOST}:{server.port} (dir {server.directory}); Ctrl-C or SIGTERM to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stopping.wait(1.0):
            if not server.is_running():
                print(f"server exited unexpectedly:\n{_read_tail(server.log_path)}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # do not interrupt the cleanup
        server.stop()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
