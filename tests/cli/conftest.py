"""Fixtures of the CLI tests: the `conveyor` command run by Click's CliRunner
against the real API app in this process (`api.main.create_app` over a SQLite
file), reached through FastAPI's TestClient handed to the CLI as its HTTP
client factory. The API has a Temporal dev server of its own (no worker: a
deployment stays queued until a test ends it as the worker would, with
tests.support.in_process.finish) and, for uploads, a registry of its own.
Kubernetes is unreachable. Nothing here can reach the shared local platform."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from conveyor.clients.db.session import migrate
from conveyor.settings import Settings, get_settings
from conveyor.stack import registry as local_registry
from conveyor.stack import temporal as local_temporal
from tests.support import in_process
from tests.support.cli import Cli, InProcessTransport, Served


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f}s")


@pytest.fixture(scope="session")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="session")
def services(cli_home: Path) -> Iterator[Settings]:
    """A Temporal dev server and an OCI registry of this session, on free ports."""
    home = cli_home / "services"
    home.mkdir()
    settings = Settings(home=home, temporal_address=f"127.0.0.1:{_free_port()}", temporal_ui_port=_free_port(), registry=f"127.0.0.1:{_free_port()}")
    processes = []
    try:
        for what, command, port in (
            ("the Temporal dev server", local_temporal.server_command(settings), settings.temporal_port),
            ("the registry", local_registry.server_command(settings), settings.registry_port),
        ):
            log = open(home / f"{port}.log", "wb")  # noqa: SIM115 - closed with the process
            processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
            _wait_for_port(port, processes[-1][0], what)
        deadline = time.monotonic() + 30
        while httpx.get(f"http://{settings.registry}/v2/", timeout=2).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield settings
    finally:
        for process, log in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


@pytest.fixture(scope="session")
def served(cli_home: Path, services: Settings) -> Iterator[Served]:
    """The real API app, its lifespan running, over a migrated SQLite file."""
    home = cli_home / "api"
    settings = in_process.settings_for(home).model_copy(
        update={
            "temporal_address": services.temporal_address,
            "registry": services.registry,
            "upload_max_bytes": 8 * 1024 * 1024,
            # A progress stream ends with `event: close` after this long (the
            # retry deadline of a deployment); the follower must reconnect.
            "deploy_deadline_seconds": 2,
        }
    )
    migrate(settings.effective_database_url)
    app = create_app(settings)
    # A 500 is an answer the CLI must handle, not an exception in the test.
    with TestClient(app, base_url=in_process.BASE_URL, raise_server_exceptions=False) as client:
        yield Served(settings, app, InProcessTransport(client))


@pytest.fixture
def project(served: Served) -> in_process.Project:
    return in_process.new_project(served.settings, served.app)


@pytest.fixture
def cli(served: Served, project: in_process.Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """The command with an admin token of a new project; its config file, home and
    environment of its own (no CONVEYOR_* variable of the machine leaks in)."""
    for name in ("CONVEYOR_API_URL", "CONVEYOR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "config" / "conveyor.json"))
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield Cli(served, project, tmp_path / "config" / "conveyor.json")
    get_settings.cache_clear()
