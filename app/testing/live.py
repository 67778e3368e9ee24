"""A real `trialbridge serve` process on a loopback port, for client tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str  # the FHIR base, e.g. http://127.0.0.1:PORT/fhir
    process: subprocess.Popen[bytes]
    log_path: Path


def start_live_server(
    database_url: str,
    log_path: Path,
    *extra: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60,
) -> LiveServer:
    """Start the server and wait until /fhir/metadata answers; raises with the log tail if it dies.

    `env` adds environment variables (e.g. TRIALBRIDGE_FIXTURES_DIR); a first `--demo` start imports
    the whole demo before it answers, so give it a longer `startup_timeout`."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    ]
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})  # noqa: S603
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"trialbridge serve exited early:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return LiveServer(base, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(
        f"trialbridge serve did not answer within {startup_timeout:.0f} s:\n{log_path.read_text()[-3000:]}"
    )


def stop_live_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)
