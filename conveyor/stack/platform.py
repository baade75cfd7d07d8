"""`conveyor up / status / down`: the local platform as one unit.

Parts: the Kubernetes cluster (kwokctl tracks its processes), the registry and
Temporal (tracked here by pid file), then the seed images. A part that already
runs is reused; a port held by anything else is a clear error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conveyor.settings import Settings
from conveyor.stack import binaries, cluster, registry, temporal
from conveyor.stack.processes import ProcessTable, ensure_port_free, rss_bytes, wait_until

Progress = Callable[[str], None]


@dataclass
class ServiceSpec:
    """A long-running process that Conveyor starts and tracks itself."""

    name: str
    title: str
    command: Callable[[Settings], list[str]]
    healthy: Callable[[Settings], bool]
    host_port: Callable[[Settings], tuple[str, int] | None]
    port_setting: str
    url: Callable[[Settings], str]
    start_timeout: float = 60.0
    env: Callable[[Settings], dict[str, str]] = field(default=lambda s: {})


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        name="registry",
        title="OCI registry",
        command=registry.server_command,
        healthy=registry.healthy,
        host_port=lambda s: _host_port(s.registry),
        port_setting="CONVEYOR_REGISTRY",
        url=registry.url,
    ),
    ServiceSpec(
        name="temporal",
        title="Temporal dev server",
        command=temporal.server_command,
        healthy=temporal.frontend_healthy,
        host_port=lambda s: _host_port(s.temporal_address),
        port_setting="CONVEYOR_TEMPORAL_ADDRESS",
        url=lambda s: s.temporal_address,
        start_timeout=90.0,
    ),
    ServiceSpec(
        name="temporal-ui",
        title="Temporal Web UI",
        command=temporal.ui_command,
        healthy=temporal.healthy,
        host_port=lambda s: (s.temporal_address.rsplit(":", 1)[0], s.temporal_ui_port),
        port_setting="CONVEYOR_TEMPORAL_UI_PORT",
        url=temporal.ui_url,
        start_timeout=90.0,
    ),
]


class StartupError(RuntimeError):
    pass


def _api_command(s: Settings) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", s.api_host, "--port", str(s.api_port)]


def _api_healthy(s: Settings) -> bool:
    return httpx.get(f"{s.api_url}/healthz", timeout=2.0).status_code == 200


def _worker_healthy(s: Settings) -> bool:
    """A worker polls the task queue (seen through the Temporal UI's HTTP API)."""
    url = f"{temporal.ui_url(s)}/api/v1/namespaces/{s.temporal_namespace}/task-queues/{s.temporal_task_queue}"
    response = httpx.get(url, params={"taskQueueType": "TASK_QUEUE_TYPE_WORKFLOW"}, timeout=2.0)
    return response.status_code == 200 and bool(response.json().get("pollers"))


APP_SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        name="worker",
        title="Conveyor worker",
        command=lambda s: [sys.executable, "-m", "worker"],
        healthy=_worker_healthy,
        host_port=lambda s: None,
        port_setting="",
        url=lambda s: f"task queue {s.temporal_task_queue}",
        start_timeout=60.0,
    ),
    ServiceSpec(
        name="api",
        title="Conveyor API",
        command=_api_command,
        healthy=_api_healthy,
        host_port=lambda s: (s.api_host, s.api_port),
        port_setting="CONVEYOR_API_PORT",
        url=lambda s: s.api_url,
    ),
]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Platform:
    def __init__(self, settings: Settings, progress: Progress = print):
        self.settings = settings
        self.progress = progress
        self.table = ProcessTable(settings.home / "run", settings.home / "logs")
        self.started: list[str] = []

    @property
    def local_cluster(self) -> bool:
        return self.settings.kubeconfig is None

    # -- up ---------------------------------------------------------------
    def _step(self, what: str, fn: Callable[[], str | None]) -> None:
        started = time.monotonic()
        self.progress(f"• {what} ...")
        outcome = fn()
        self.progress(f"  {what}: {outcome or 'ready'} ({time.monotonic() - started:.1f}s)")

    def up(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        if self.local_cluster:
            self._step("Kubernetes binaries", self._ensure_binaries)
            self._step("Kubernetes cluster (kwokctl, KWOK nodes)", self._ensure_cluster)
        self._step("Temporal Web UI binary", self._ensure_ui_binary)
        self._step("payload encryption key", self._ensure_payload_keys)
        for spec in SERVICES:
            self._step(spec.title, lambda spec=spec: self._ensure_service(spec))
        self._step("seed images", self._ensure_images)
        self._step("database", self._ensure_database)
        for spec in APP_SERVICES:
            self._step(spec.title, lambda spec=spec: self._ensure_service(spec))

    def _ensure_database(self) -> str:
        from conveyor.clients.db.session import migrate

        migrate(self.settings.effective_database_url)
        created = bootstrap_admin_token(self.settings)
        where = self.settings.admin_token_file
        return f"migrated; admin token {'written to' if created else 'in'} {where}"

    def _ensure_payload_keys(self) -> str:
        from conveyor.clients.payload_codec import ensure_key_file

        if self.settings.payload_keys is not None:
            return "from CONVEYOR_PAYLOAD_KEYS"
        path = self.settings.effective_payload_key_file
        return f"{'created' if ensure_key_file(path) else 'in'} {path}"

    def _ensure_binaries(self) -> str:
        todo = binaries.missing()
        if not todo:
            return f"cached in {binaries.bin_dir()}"
        binaries.ensure_binaries(lambda m: self.progress("  " + m))
        return f"built {len(todo)} into {binaries.bin_dir()}"

    def _ensure_ui_binary(self) -> str:
        ui = [binaries.temporal_ui()]
        if binaries.missing(ui):
            binaries.ensure_binaries(lambda m: self.progress("  " + m), ui)
            return f"built {ui[0].path}"
        return f"cached in {ui[0].path}"

    def _ensure_cluster(self) -> str:
        s = self.settings
        outcome = "reused"
        if not cluster.exists(s):
            ensure_port_free("kube-apiserver", "127.0.0.1", s.kube_apiserver_port, "CONVEYOR_KUBE_APISERVER_PORT")
            cluster.create(s)
            self.started.append("cluster")
            outcome = "created"
        elif not _quietly(cluster.healthy, s):
            outcome = self._start_cluster()
        if not wait_until(lambda: cluster.healthy(s), 120):
            raise StartupError(f"the kube-apiserver did not become ready; logs in {cluster.cluster_dir(s) / 'logs'}")
        if missing := cluster.missing_stages(s):
            self.progress(
                f"  warning: the cluster was made without the KWOK stages {', '.join(missing)}; "
                "`conveyor down --purge` then `conveyor up` makes it again with them"
            )
        cluster.ensure_nodes(s)
        if not wait_until(lambda: cluster.nodes_ready(s), 60):
            raise StartupError("the KWOK nodes did not become Ready")
        if s.metrics_server and not self._metrics_available():
            raise StartupError(
                f"metrics.k8s.io did not become available; see {cluster.cluster_dir(s) / 'logs' / 'metrics-server.log'}"
            )
        return f"{outcome}, {s.nodes} nodes Ready"

    def _start_cluster(self) -> str:
        """Start a cluster that does not answer. One that runs in part (etcd
        killed, say, while the kube-apiserver still holds its port) is
        stopped first; one whose every process runs may still be starting,
        and gets a minute before it is started again."""
        s = self.settings
        parts = cluster.components(s)
        exited = sorted(name for name, pid in parts.items() if pid is None)
        if len(exited) < len(parts):
            if not exited and wait_until(lambda: cluster.healthy(s), 60, interval=1):
                return "reused"
            why = f"{', '.join(exited)} exited" if exited else "it did not become ready"
            self.progress(f"  the cluster runs in part ({why}); starting it again")
            cluster.stop(s)
        ensure_port_free("kube-apiserver", "127.0.0.1", s.kube_apiserver_port, "CONVEYOR_KUBE_APISERVER_PORT")
        cluster.start(s)
        self.started.append("cluster")
        return "started"

    def _metrics_available(self) -> bool:
        """metrics-server exits when it starts before the kube-apiserver
        answers, and kwokctl starts components only with the whole cluster:
        when it has exited, the cluster is started once more."""
        s = self.settings

        def exited() -> bool:
            return "metrics-server" not in cluster.running_components(s)

        for attempt in range(2):
            wait_until(lambda: exited() or _quietly(cluster.metrics_healthy, s), 90, interval=1)
            if not exited():
                return _quietly(cluster.metrics_healthy, s)
            if attempt == 0:
                self.progress("  metrics-server exited before the kube-apiserver answered; starting the cluster again")
                cluster.stop(s)
                cluster.start(s)
        return False

    def _ensure_service(self, spec: ServiceSpec) -> str:
        s = self.settings
        tracked = self.table.get(spec.name)
        command = spec.command(s)
        if tracked and tracked.cmd[1:] != command[1:]:
            # Started with other arguments (an older Conveyor: e.g. the dev
            # server with its own Web UI on the UI's port): start it anew.
            self.table.stop(spec.name)
            tracked = None
        if tracked and _quietly(spec.healthy, s):
            return f"reused (pid {tracked.pid})"
        if tracked:
            # Ours but not answering: give it its start time before giving up on it.
            if wait_until(lambda: spec.healthy(s), spec.start_timeout):
                return f"reused (pid {tracked.pid})"
            self.table.stop(spec.name)
        address = spec.host_port(s)
        if address is not None:
            ensure_port_free(spec.title, address[0], address[1], spec.port_setting)
        tracked = self.table.start(
            spec.name, command, env={**spec.env(s), "CONVEYOR_HOME": str(s.home)}, cwd=PROJECT_ROOT
        )
        self.started.append(spec.name)

        def answering() -> bool:
            if not tracked.running():
                raise StartupError(
                    f"{spec.title} exited during start; last lines of {self.table.log_path(spec.name)}:\n"
                    + (self.table.exited_early(spec.name) or "")
                )
            return _quietly(spec.healthy, s)

        deadline = time.monotonic() + spec.start_timeout
        while time.monotonic() < deadline:
            if answering():
                return f"started (pid {tracked.pid})"
            time.sleep(0.25)
        raise StartupError(f"{spec.title} did not answer within {spec.start_timeout:.0f}s; see {self.table.log_path(spec.name)}")

    def _ensure_images(self) -> str:
        registry.ensure_seed_images(self.settings, lambda m: self.progress("  " + m))
        return f"{registry.base_image(self.settings)} and demo images present"

    # -- down -------------------------------------------------------------
    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop the named parts (all by default); return those stopped."""
        stopped: list[str] = []
        for spec in reversed(SERVICES + APP_SERVICES):
            if (names is None or spec.name in names) and self.table.stop(spec.name):
                stopped.append(spec.name)
        if self.local_cluster and (names is None or "cluster" in names) and cluster.components(self.settings):
            cluster.stop(self.settings)
            stopped.append("cluster")
        return stopped

    def purge(self) -> None:
        """Stop everything and delete the cluster and all local state."""
        self.stop()
        if self.local_cluster:
            cluster.delete(self.settings)

    # -- status -----------------------------------------------------------
    def status(self) -> dict:
        s = self.settings
        parts: list[dict] = []
        if self.local_cluster:
            running = cluster.running_components(s)
            parts.append(
                {
                    "name": "cluster",
                    "title": "Kubernetes (kwokctl)",
                    "running": bool(running) and _quietly(cluster.healthy, s),
                    "url": f"https://127.0.0.1:{s.kube_apiserver_port}",
                    "kubeconfig": str(s.local_kubeconfig),
                    "processes": {name: {"pid": pid, "rss_bytes": rss_bytes(pid)} for name, pid in running.items()},
                    "rss_bytes": sum(rss_bytes(pid) for pid in running.values()),
                }
            )
        for spec in SERVICES + APP_SERVICES:
            tracked = self.table.get(spec.name)
            parts.append(
                {
                    "name": spec.name,
                    "title": spec.title,
                    "running": tracked is not None and _quietly(spec.healthy, s),
                    "url": spec.url(s),
                    "pid": tracked.pid if tracked else None,
                    "rss_bytes": rss_bytes(tracked.pid) if tracked else 0,
                }
            )
        return {
            "home": str(s.home),
            "parts": parts,
            "temporal_ui": temporal.ui_url(s),
            "rss_bytes": sum(p["rss_bytes"] for p in parts),
            "all_running": all(p["running"] for p in parts),
        }

    def urls(self) -> list[tuple[str, str]]:
        s = self.settings
        out = []
        if self.local_cluster:
            out.append(("Kubernetes API", f"https://127.0.0.1:{s.kube_apiserver_port} (kubeconfig: {s.local_kubeconfig})"))
        else:
            out.append(("Kubernetes API", f"kubeconfig: {s.kubeconfig}"))
        out += [
            ("Temporal frontend", s.temporal_address),
            ("Temporal Web UI", temporal.ui_url(s)),
            ("Registry", registry.url(s)),
            ("Conveyor API", f"{s.api_url}/api/v1 (docs: {s.api_url}/docs)"),
            ("Admin token", f"{s.admin_token_file}"),
        ]
        return out


def _quietly(check: Callable[[Settings], bool], settings: Settings) -> bool:
    try:
        return bool(check(settings))
    except Exception:  # noqa: BLE001 - an unreachable part is simply not healthy
        return False


def format_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def bootstrap_admin_token(settings: Settings) -> bool:
    """Write an admin token for the default project unless a valid one is there."""
    from conveyor.clients.db import tokens
    from conveyor.clients.db.queries import ensure_default_project
    from conveyor.clients.db.session import session_scope

    path = settings.admin_token_file
    with session_scope(settings.effective_database_url) as session:
        ensure_default_project(session, settings)
        if path.exists() and tokens.find_token(session, path.read_text().strip()) is not None:
            return False
        token = tokens.create_token(session, "proj_default", "admin", "admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return True
