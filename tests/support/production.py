"""Running an API and a worker of their own next to the session's stack.

Both poll a task queue of their own, so every deploy through that API is done
by that worker (never the stack's), on the stack's database, Temporal and
cluster. The image smoke test starts them from the Conveyor image; the RBAC
test starts them with a ServiceAccount's kubeconfig.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml

from conveyor.settings import Settings
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
API_COMMAND = ["uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1"]
WORKER_COMMAND = ["python", "-m", "worker"]
MIGRATE_COMMAND = ["conveyor", "db", "upgrade"]


def inline_kubeconfig(path: Path) -> dict:
    """The kubeconfig at `path` with every file it points to inlined as *-data,
    so it can be copied where those files are not (a container)."""
    config = yaml.safe_load(path.read_text())
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in config.get(section, []):
            body = entry[key]
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in body:
                    body[f"{field}-data"] = base64.b64encode(Path(body.pop(field)).read_bytes()).decode()
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload_keys(settings: Settings) -> str:
    if settings.payload_keys is not None:
        return settings.payload_keys.get_secret_value()
    return ",".join(line.strip() for line in settings.effective_payload_key_file.read_text().splitlines() if line.strip())


def conveyor_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The CONVEYOR_* variables of an API or worker next to the stack (secrets through env, as in deploy/)."""
    return {
        "CONVEYOR_DATABASE_URL": settings.effective_database_url,
        "CONVEYOR_PAYLOAD_KEYS": payload_keys(settings),
        "CONVEYOR_TEMPORAL_ADDRESS": settings.temporal_address,
        "CONVEYOR_REGISTRY": settings.registry,
        "CONVEYOR_KUBECONFIG": str(settings.effective_kubeconfig),
        "CONVEYOR_TEMPORAL_TASK_QUEUE": f"queue-{uuid.uuid4().hex[:8]}",
        **overrides,
    }


def host_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A command of this checkout's environment (python, uvicorn, conveyor from .venv)."""
    bin_dir = Path(sys.executable).parent
    full = [str(bin_dir / command[0]), *command[1:]]
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with log.open("wb") as out:
        return subprocess.Popen(full, cwd=ROOT, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def api_and_worker(
    settings: Settings,
    env: dict[str, str],
    logs: Path,
    start: Callable[[list[str], dict[str, str], Path], subprocess.Popen] = host_process,
) -> Iterator[str]:
    """Start a worker and an API on env's task queue; yield the API's base URL."""
    port = free_port()
    api_env = {**env, "CONVEYOR_API_PORT": str(port), "CONVEYOR_API_HOST": "127.0.0.1"}
    worker = start(WORKER_COMMAND, env, logs / "worker.log")
    api = start([*API_COMMAND, "--port", str(port)], api_env, logs / "api.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            for name, proc in (("worker", worker), ("api", api)):
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited {proc.returncode}: {(logs / f'{name}.log').read_text()[-3000:]}")
            try:
                return httpx.get(f"{base_url}/healthz", timeout=2).json() == {"status": "ok"}
            except httpx.HTTPError:
                return False

        eventually(healthy, 120, what="the API's /healthz")
        yield base_url
    finally:
        for proc in (api, worker):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in (api, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
