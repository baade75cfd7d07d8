"""`conveyor up / status` as a person runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conveyor.settings import Settings
from conveyor.stack import temporal


def conveyor(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def settings_env(settings: Settings) -> dict[str, str]:
    return {"CONVEYOR_HOME": str(settings.home)}


def test_status_json_reports_every_part_running(platform, settings):
    result = conveyor("status", "--json", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    parts = {p["name"]: p for p in status["parts"]}
    assert set(parts) >= {"registry", "temporal", "temporal-ui"}
    assert all(p["running"] for p in parts.values())
    assert status["rss_bytes"] > 0
    if platform.local_cluster:
        assert {"etcd", "kube-apiserver", "kwok-controller"} <= set(parts["cluster"]["processes"])


def test_up_again_reuses_every_running_part(platform, settings):
    result = conveyor("up", "--detach", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert "started" not in result.stdout.replace("running in the background", "")
    assert result.stdout.count("reused") >= 2
    assert "Temporal Web UI" in result.stdout and temporal.ui_url(settings) in result.stdout


def test_port_taken_by_another_process_is_a_clear_error(platform, settings, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            "CONVEYOR_HOME": str(tmp_path / "home"),
            # An existing cluster: this run only has to start the registry.
            "CONVEYOR_KUBECONFIG": str(settings.effective_kubeconfig),
            "CONVEYOR_REGISTRY": f"127.0.0.1:{port}",
        }
        result = conveyor("up", "--detach", env=env, timeout=60)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr
    assert "CONVEYOR_REGISTRY" in result.stderr
    assert not (tmp_path / "home" / "run" / "registry.json").exists()
