"""Measure the local platform and print the figures.

    uv run python scripts/benchmark.py [--cold-build] [--skip-load] [--runs 7] [--crowds 50,200]

Platform figures:
- warm `conveyor up` (every part stopped, binaries cached) until all answer;
- the stack's resident memory, per part and in total;
- with --cold-build: building every binary into an empty cache and Go module
  cache (takes minutes, needs the Go module proxy).

Control plane under load (against the alternative a user has, kubectl, on the
same cluster):
- single deploy: `POST /apps` (3 replicas) until `active`, against
  `kubectl apply -f` + `kubectl rollout status` of the same Deployment;
  interleaved runs, medians and their ratio;
- a release of an app with a web and a worker process (3 replicas each):
  `POST /apps` until `active`, against `kubectl apply -f` of the same two
  Deployments + `kubectl rollout status` of each; medians and their ratio;
- how late an SSE follower learns that a deployment ended: the `end`
  event's arrival against the close time of the deployment's workflow;
- the layer cache: an upload app's first build of a Dockerfile with a slow
  `RUN` step (5 s), then a second build of the same source, then a third
  with the worker's own copy of the layers removed (as on another worker:
  the layers come from the registry's cache), each from upload to `active`;
- N concurrent deploys of distinct apps (1 replica each, so that the
  simulated nodes hold every pod) against N concurrent kubectl runs: wall
  time until all are active, ratio, 5xx count, CPU seconds per deploy of
  each part, peak RSS of the API and the worker; then the largest run once
  more with probes timing `/healthz` and `GET /apps?limit=50` (p99) while
  it runs (the probes' requests are kept out of the first run's CPU);
- 10,000 apps (rows written straight into the database, in a project of
  their own): p99 of `GET /apps?limit=50` and of the whole list.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
from kubernetes import config
from temporalio.service import RPCError, RPCStatusCode

from conveyor.builds.cache import BuildCache
from conveyor.clients.db import tokens
from conveyor.clients.db.models import ApiToken, App, Project
from conveyor.clients.db.queries import create_project
from conveyor.clients.db.session import session_scope
from conveyor.clients.temporal_client import connect
from conveyor.domain.ids import new_id, utcnow
from conveyor.settings import Settings, get_settings
from conveyor.stack import binaries
from conveyor.stack.platform import Platform, format_bytes
from conveyor.stack.processes import cpu_seconds, rss_bytes

# The demo image in the platform's registry (CONVEYOR_REGISTRY; set in main()).
IMAGE = "127.0.0.1:5000/demo/web:v1"
KUBECTL_TRIES = 3
CORES = len(os.sched_getaffinity(0))
ROWS: list[tuple[str, str]] = []


def row(label: str, figure: str) -> None:
    ROWS.append((label, figure))
    print(f"{label:<62} {figure}", flush=True)


def timed(label: str, fn) -> float:
    started = time.monotonic()
    fn()
    elapsed = time.monotonic() - started
    row(label, f"{elapsed:.2f} s")
    return elapsed


BURST_SECONDS = 10


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def ratio(ours: float, theirs: float) -> str:
    """A ratio with what it is against: the kubectl baseline on this machine, and its cores."""
    return f"{ours / theirs:.2f}x (kubectl {theirs:.2f} s, {CORES} cores)"


# Which part of the stack a process is, for CPU per deploy: orchestration or the Kubernetes work.
ORCHESTRATION = {"Temporal dev server": "Temporal", "Conveyor worker": "worker", "Conveyor API": "API"}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- kubectl, the baseline ------------------------------------------------------------------


def deployment_yaml(namespace: str, name: str, replicas: int, worker: bool = False) -> str:
    """The Deployment Conveyor would apply for the app, as a user would write
    it (`worker`: and a worker process's Deployment beside it)."""
    namespace_yaml = f"""apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
"""
    worker_yaml = f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}-worker, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}-worker}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: {name}-worker}}}}
    spec:
      containers:
      - name: worker
        image: {IMAGE}
        command: [python, worker.py]
"""
    return namespace_yaml + _web_yaml(namespace, name, replicas) + (worker_yaml if worker else "")


def _web_yaml(namespace: str, name: str, replicas: int) -> str:
    return f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: web
        image: {IMAGE}
        ports: [{{containerPort: 8080}}]
        env: [{{name: PORT, value: "8080"}}]
"""


class Kubectl:
    def __init__(self, settings: Settings, workdir: Path):
        self.binary = str(binaries.bin_dir() / "kubectl")
        self.kubeconfig = str(settings.effective_kubeconfig)
        self.workdir = workdir
        self.namespaces: list[str] = []

    def _manifest(self, replicas: int, worker: bool = False) -> tuple[str, str, Path]:
        namespace, name = f"bench-{uuid.uuid4().hex[:8]}", "web"
        path = self.workdir / f"{namespace}.yaml"
        path.write_text(deployment_yaml(namespace, name, replicas, worker))
        self.namespaces.append(namespace)
        return namespace, name, path

    def _commands(self, namespace: str, name: str, path: Path, worker: bool = False) -> list[list[str]]:
        base = [self.binary, "--kubeconfig", self.kubeconfig]
        names = [name, f"{name}-worker"] if worker else [name]
        return [
            [*base, "apply", "-f", str(path)],
            *([*base, "rollout", "status", f"deployment/{n}", "-n", namespace, "--timeout=600s"] for n in names),
        ]

    def deploy(self, replicas: int, worker: bool = False) -> float:
        namespace, name, path = self._manifest(replicas, worker)
        started = time.monotonic()
        for cmd in self._commands(namespace, name, path, worker):
            subprocess.run(cmd, check=True, capture_output=True)
        return time.monotonic() - started

    async def deploy_many(self, count: int, replicas: int) -> tuple[float, int]:
        """(wall time until every rollout is done, kubectl commands retried).
        A kubectl command that fails (a TLS handshake timeout on a loaded
        machine) is run again, up to KUBECTL_TRIES times, and counted."""
        jobs = [self._manifest(replicas) for _ in range(count)]
        retried = 0

        async def one(namespace: str, name: str, path: Path) -> None:
            nonlocal retried
            for cmd in self._commands(namespace, name, path):
                for attempt in range(KUBECTL_TRIES):
                    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                    _out, err = await proc.communicate()
                    if proc.returncode == 0:
                        break
                    if attempt == KUBECTL_TRIES - 1:
                        raise RuntimeError(f"kubectl {cmd[3]} failed {KUBECTL_TRIES} times: {err.decode()[-300:]}")
                    retried += 1

        started = time.monotonic()
        # Every run ends (and its kubectl processes are waited for) before a
        # failure is raised: nothing is left for a closed event loop to clean up.
        failures = [r for r in await asyncio.gather(*(one(*job) for job in jobs), return_exceptions=True) if isinstance(r, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {count} kubectl runs failed; the first: {failures[0]}")
        return time.monotonic() - started, retried

    def clean(self) -> None:
        if self.namespaces:
            base = [self.binary, "--kubeconfig", self.kubeconfig]
            subprocess.run([*base, "delete", "namespace", "--wait=true", *self.namespaces], capture_output=True, check=False)
            self.namespaces = []


# -- Conveyor -------------------------------------------------------------------------------


class Conveyor:
    def __init__(self, settings: Settings, token: str):
        self.base = settings.api_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=f"{self.base}/api/v1", headers=self.headers, timeout=60)
        self.apps: list[str] = []

    def deploy(self, replicas: int, worker: bool = False) -> float:
        started = time.monotonic()
        body = {"name": f"bench-{uuid.uuid4().hex[:8]}", "image_url": IMAGE, "port": 8080, "replicas": replicas}
        if worker:
            body["processes"] = {"worker": {"command": ["python", "worker.py"], "replicas": replicas}}
        response = self.http.post("/apps", json=body)
        response.raise_for_status()
        app_id = response.json()["id"]
        self.apps.append(app_id)
        while True:
            status = self.http.get(f"/apps/{app_id}").json()["status"]
            if status == "running":
                return time.monotonic() - started
            if status in ("failed", "stopped"):
                raise RuntimeError(f"app {app_id} ended {status}")
            time.sleep(0.02)

    async def deploy_many(self, count: int, replicas: int, probes: dict[str, list[float]] | None = None) -> tuple[float, int]:
        """(wall time until every app runs, 5xx answers seen). With `probes`,
        `/healthz` and `GET /apps?limit=50` are timed meanwhile by probe
        processes of their own, so that this client's own load does not count
        as the API's; their answers land in `probes`."""
        if probes is None:
            return await self._crowd(count, replicas)
        with tempfile.TemporaryDirectory(prefix="conveyor-probe-") as tmp:
            outputs = {path: Path(tmp) / f"{i}.json" for i, path in enumerate(("/healthz", "/api/v1/apps?limit=50"))}
            probers = [
                await asyncio.create_subprocess_exec(sys.executable, __file__, "--probe", self.base + path, self.headers["Authorization"], str(out))
                for path, out in outputs.items()
            ]
            try:
                # The crowd starts once every probe has had its first answer:
                # a probe starting late (this module's imports take seconds on
                # a busy machine) would miss the burst of POSTs.
                await probes_ready(list(outputs.values()))
                started = time.monotonic()
                wall, errors = await self._crowd(count, replicas)
            finally:
                for proc in probers:
                    proc.terminate()
                    await proc.wait()
            for path, out in outputs.items():
                figures = json.loads(out.read_text()) if out.exists() else {"latencies": [], "at": [], "errors": 0}
                probes[path.split("?")[0]] = figures["latencies"]
                # The first seconds, while the crowd's POSTs arrive, apart.
                burst = [lat for lat, at in zip(figures["latencies"], figures["at"], strict=True) if at < started + BURST_SECONDS]
                probes[path.split("?")[0] + " burst"] = burst
                probes[path.split("?")[0] + " after"] = figures["latencies"][len(burst):]
                errors += figures["errors"]
        return wall, errors

    async def _crowd(self, count: int, replicas: int) -> tuple[float, int]:
        """`count` apps created at once, followed (one list every 250 ms, as
        a dashboard would) until every one runs."""
        errors = 0
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, timeout=300) as http:

            async def one(i: int) -> str:
                nonlocal errors
                response = await http.post(
                    "/api/v1/apps",
                    json={"name": f"crowd-{uuid.uuid4().hex[:8]}", "image_url": IMAGE, "port": 8080, "replicas": replicas},
                )
                errors += response.status_code >= 500
                response.raise_for_status()
                return response.json()["id"]

            started = time.monotonic()
            ids = await asyncio.gather(*(one(i) for i in range(count)))
            self.apps += ids
            waiting = set(ids)
            while waiting:
                await asyncio.sleep(0.25)
                response = await http.get("/api/v1/apps")
                errors += response.status_code >= 500
                statuses = {a["id"]: a["status"] for a in response.json()} if response.status_code == 200 else {}
                broken = [i for i in waiting if statuses.get(i) in ("failed", "stopped")]
                if broken:
                    raise RuntimeError(f"{len(broken)} apps failed to deploy")
                waiting = {i for i in waiting if statuses.get(i) != "running"}
            return time.monotonic() - started, errors

    def history_events(self, settings: Settings, app_ids: list[str]) -> tuple[float, int]:
        """Median events in the history of an app's deploy workflow
        (`deploy-dep_…`), and how many of the apps had a lane (`app-…`: an
        operation that overlapped another), read after the run."""

        async def lengths() -> tuple[list[int], int]:
            client = await connect(settings)
            deploys, lanes = [], 0
            for app_id in app_ids:
                dep_id = self.http.get(f"/apps/{app_id}/deployments").json()[-1]["id"]
                deploys.append(len((await client.get_workflow_handle(f"deploy-{dep_id}").fetch_history()).events))
                try:
                    await client.get_workflow_handle(f"app-{app_id}").describe()
                    lanes += 1
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
            return deploys, lanes

        deploys, lanes = asyncio.run(lengths())
        return statistics.median(deploys), lanes

    def clean(self) -> None:
        for app_id in self.apps:
            self.http.delete(f"/apps/{app_id}")
        deadline = time.monotonic() + 300
        while self.apps and time.monotonic() < deadline:
            left = {a["id"] for a in self.http.get("/apps").json()}
            self.apps = [a for a in self.apps if a in left]
            time.sleep(1)


@contextmanager
def peak_rss(pids: dict[str, int]):
    """Samples the resident memory of each process every 200 ms; yields the peaks."""
    peaks = dict.fromkeys(pids, 0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], rss_bytes(pid))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


PROBE_START_SECONDS = 120


async def probes_ready(outputs: list[Path]) -> None:
    deadline = time.monotonic() + PROBE_START_SECONDS
    while not all(ready_marker(out).exists() for out in outputs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the latency probes did not answer within {PROBE_START_SECONDS} s")
        await asyncio.sleep(0.05)


def ready_marker(out: Path) -> Path:
    return out.with_suffix(".ready")


def probe(url: str, authorization: str, out: str) -> None:
    """Time GET `url` every 100 ms until SIGTERM, then write the latencies to
    `out`; `<out>.ready` says that the first answer came."""
    latencies: list[float] = []
    at: list[float] = []
    errors = 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with httpx.Client(headers={"Authorization": authorization}, timeout=60) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = http.get(url)
                errors += response.status_code >= 500
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.monotonic() - started)
            at.append(started)
            if len(latencies) == 1:
                ready_marker(Path(out)).touch()
            stop.wait(0.1)
    Path(out).write_text(json.dumps({"latencies": latencies, "at": at, "errors": errors}))


def single_deploys(conveyor: Conveyor, kubectl: Kubectl, runs: int) -> None:
    # One untimed round of each warms the caches (discovery, connections).
    conveyor.deploy(3)
    kubectl.deploy(3)
    ours, theirs = [], []
    for _ in range(runs):
        theirs.append(kubectl.deploy(3))
        ours.append(conveyor.deploy(3))
    a, b = statistics.median(ours), statistics.median(theirs)
    row(f"single deploy, 3 replicas: kubectl apply + rollout status (median of {runs})", f"{b:.2f} s")
    row(f"single deploy, 3 replicas: POST /apps -> active (median of {runs})", f"{a:.2f} s")
    row("single deploy: Conveyor / kubectl", ratio(a, b))


def cached_build(conveyor: Conveyor, settings: Settings) -> None:
    """The same source built twice: the second build takes the first's layers."""
    import io
    import tarfile

    dockerfile = f"FROM {settings.registry}/demo/web:v1\nRUN sleep 5 && echo slow > /slow.txt\nRUN echo done > /done.txt\n".encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    app = conveyor.http.post("/apps", json={"name": f"bench-{uuid.uuid4().hex[:8]}", "source_type": "upload", "port": 8080}).json()
    conveyor.apps.append(app["id"])
    times = []
    for run in range(3):
        if run == 2:
            # As on a worker host that did not build the app last: only the registry's cache.
            shutil.rmtree(BuildCache(settings).place(app["project_id"], app["id"]), ignore_errors=True)
        started = time.monotonic()
        dep = conveyor.http.post(f"/apps/{app['id']}/build", files={"file": ("src.tar.gz", data.getvalue(), "application/gzip")}).json()
        while (status := conveyor.http.get(f"/apps/{app['id']}/deployments/{dep['id']}").json()["status"]) not in ("active", "failed", "cancelled"):
            time.sleep(0.2)
        if status != "active":
            raise RuntimeError(f"the cached-build benchmark's build ended {status}")
        times.append(time.monotonic() - started)
        log = conveyor.http.get(f"/apps/{app['id']}/build-log", params={"build_id": dep["build_id"]}).text
        expected = [None, "layers of this app's last build are here", "come from the registry"][run]
        if expected is not None and expected not in log:
            raise RuntimeError(f"build {run + 1} of the cached-build benchmark did not use the cache it measures ({expected!r} not in its log)")
    row("build of a Dockerfile with a 5 s RUN step, first (upload -> active)", f"{times[0]:.1f} s")
    row("the same source built again (its layers cached on the worker)", f"{times[1]:.1f} s")
    row("the same source on a worker without them (the registry's layer cache)", f"{times[2]:.1f} s")


def sse_end_latency(conveyor: Conveyor, settings: Settings, runs: int) -> None:
    """How late a follower of a deployment's SSE stream learns that it ended:
    the `end` event's arrival against the close time Temporal recorded for
    the deployment's workflow (one machine, one clock)."""
    from conveyor.clients.temporal_client import connect

    async def close_time(workflow_id: str) -> float:
        # The stream may end before the workflow closes (the outcome's row
        # carries the last steps): wait for the close to be recorded.
        client = await connect(settings)
        for _ in range(200):
            described = await client.get_workflow_handle(workflow_id).describe()
            if described.close_time is not None:
                return described.close_time.timestamp()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"workflow {workflow_id} did not close")

    lags = []
    for _ in range(runs):
        app = conveyor.http.post("/apps", json={"name": f"bench-{uuid.uuid4().hex[:8]}", "image_url": IMAGE, "port": 8080, "replicas": 1})
        app.raise_for_status()
        conveyor.apps.append(app.json()["id"])
        [dep] = conveyor.http.get(f"/apps/{app.json()['id']}/deployments").json()
        received = None
        with conveyor.http.stream("GET", f"/apps/{app.json()['id']}/deployments/{dep['id']}/progress", timeout=120) as stream:
            for line in stream.iter_lines():
                if line == "event: end":
                    received = time.time()
                    break
        if received is None:
            raise RuntimeError(f"the progress stream of {dep['id']} closed without `end`")
        lags.append(received - asyncio.run(close_time(dep["workflow_id"])))
    row(f"SSE `end` after the deployment's workflow closed (median of {runs}; negative: before it)", f"{statistics.median(lags) * 1000:.0f} ms")


def process_releases(conveyor: Conveyor, kubectl: Kubectl, runs: int) -> None:
    ours, theirs = [], []
    for _ in range(runs):
        theirs.append(kubectl.deploy(3, worker=True))
        ours.append(conveyor.deploy(3, worker=True))
    a, b = statistics.median(ours), statistics.median(theirs)
    row(f"web + worker release, 3 replicas each: kubectl apply + 2 rollout status (median of {runs})", f"{b:.2f} s")
    row(f"web + worker release, 3 replicas each: POST /apps -> active (median of {runs})", f"{a:.2f} s")
    row("web + worker release: Conveyor / kubectl", ratio(a, b))


def worker_mode(pid: int) -> str:
    """How the measured worker runs: its sandbox and tracing settings, from its environment."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return "unknown"
    env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    return " / ".join(env.get(name, "unset") or "unset" for name in ("CONVEYOR_WORKFLOW_SANDBOX", "CONVEYOR_OTLP_ENDPOINT"))


def crowds(settings: Settings, platform: Platform, conveyor: Conveyor, kubectl: Kubectl, sizes: list[int]) -> None:
    status = platform.status()["parts"]
    pids = {p["name"]: p["pid"] for p in status if p["name"] in ("api", "worker") and p.get("pid")}
    if "worker" in pids:
        row("the worker's CONVEYOR_WORKFLOW_SANDBOX / CONVEYOR_OTLP_ENDPOINT", worker_mode(pids["worker"]))
    # Every process of the stack by its title; the cluster's by component.
    parts = [{"title": p["title"], "pid": p["pid"]} for p in status if p.get("pid")] + [
        {"title": f"Kubernetes {name}", "pid": proc["pid"]} for p in status for name, proc in p.get("processes", {}).items()
    ]
    for size in sizes:
        theirs, retried = asyncio.run(kubectl.deploy_many(size, 1))
        kubectl.clean()
        # Wall time and CPU from a run with only the crowd on the API (as the
        # kubectl run has only kubectl on the cluster): the latency probes'
        # own requests are no deploy's work. They get a run of their own.
        cpu_before = {p["title"]: cpu_seconds(p["pid"]) for p in parts}
        with peak_rss(pids) as peaks:
            ours, errors = asyncio.run(conveyor.deploy_many(size, 1))
        cpu_used = {p["title"]: cpu_seconds(p["pid"]) - cpu_before[p["title"]] for p in parts}
        deploy_events, lane_events = conveyor.history_events(settings, list(conveyor.apps))
        conveyor.clean()
        probes: dict[str, list[float]] = {}
        if size == max(sizes):
            with peak_rss(pids) as probed_peaks:
                probed_wall, probed_errors = asyncio.run(conveyor.deploy_many(size, 1, probes))
            conveyor.clean()
            errors += probed_errors
            peaks = {name: max(peak, probed_peaks[name]) for name, peak in peaks.items()}
        row(f"{size} concurrent deploys: kubectl wall time", f"{theirs:.1f} s ({retried} kubectl commands retried)")
        row(f"{size} concurrent deploys: Conveyor wall time (all active)", f"{ours:.1f} s")
        row(f"{size} concurrent deploys: Conveyor / kubectl", ratio(ours, theirs))
        row(f"{size} concurrent deploys: 5xx answers" + (" (both runs, probes too)" if size == max(sizes) else ""), str(errors))
        row(
            f"{size} concurrent deploys: events per deploy workflow (median) / apps that needed a lane",
            f"{deploy_events:g} / {lane_events} of {size}",
        )
        # CPU seconds per deploy: each orchestration part, the Kubernetes parts together, and their ratio.
        orchestration = {name: sum(used for title, used in cpu_used.items() if title == full) for full, name in ORCHESTRATION.items()}
        kubernetes = sum(used for title, used in cpu_used.items() if title.startswith("Kubernetes"))
        for name, used in orchestration.items():
            row(f"{size} concurrent deploys: CPU per deploy, {name}", f"{used / size:.3f} s")
        row(f"{size} concurrent deploys: CPU per deploy, Kubernetes control plane and KWOK", f"{kubernetes / size:.3f} s")
        row(
            f"{size} concurrent deploys: orchestration CPU / Kubernetes CPU",
            f"{sum(orchestration.values()) / kubernetes:.2f}" if kubernetes else "n/a (no Kubernetes CPU measured)",
        )
        if size == max(sizes):
            row(f"{size} concurrent deploys, again with the latency probes: Conveyor wall time", f"{probed_wall:.1f} s")
            row(f"{size} concurrent deploys: /healthz p99 during the run", ms(p99(probes.get("/healthz", []))))
            row(f"{size} concurrent deploys: GET /apps?limit=50 p99 during the run", ms(p99(probes.get("/api/v1/apps", []))))
            for path, label in (("/healthz", "/healthz"), ("/api/v1/apps", "GET /apps?limit=50")):
                row(f"{size} concurrent deploys: {label} answers timed", str(len(probes.get(path, []))))
                row(
                    f"{size} concurrent deploys: {label} p99 in the first {BURST_SECONDS} s / after",
                    f"{ms(p99(probes.get(path + ' burst', [])))} / {ms(p99(probes.get(path + ' after', [])))}",
                )
            for name, peak in sorted(peaks.items()):
                row(f"{size} concurrent deploys: peak RSS of the {name}", format_bytes(peak))
            # Where the machine's time went: CPU seconds of each part during
            # the run, against what the cores could give in its wall time.
            row(f"{size} concurrent deploys: CPU busy (all parts, {CORES} cores)", f"{sum(cpu_used.values()) / (ours * CORES):.0%}")
            for title, used in sorted(cpu_used.items(), key=lambda item: -item[1]):
                row(f"{size} concurrent deploys: CPU of the {title}", f"{used:.1f} s ({used / ours:.0%} of a core)")


BENCH_PROJECT = "bench"


@contextmanager
def bench_token(settings: Settings):
    """An admin token of the project `proj_bench`, made for this run: the
    deploys run there, so that the apps other work left in the default
    project neither slow the crowd's status polls nor count in the API's CPU."""
    url = settings.effective_database_url
    with session_scope(url) as session:
        if session.get(Project, f"proj_{BENCH_PROJECT}") is None:
            create_project(session, settings, BENCH_PROJECT)
        token = tokens.create_token(session, f"proj_{BENCH_PROJECT}", "admin", f"benchmark-{uuid.uuid4().hex[:6]}")
    try:
        yield token
    finally:
        with session_scope(url) as session:
            session.query(ApiToken).filter(ApiToken.token_hash == tokens.hash_token(token)).delete()


def big_list(settings: Settings, count: int = 10_000) -> None:
    project_id = f"proj_bench{uuid.uuid4().hex[:6]}"
    url = settings.effective_database_url
    with session_scope(url) as session:
        session.add(Project(id=project_id, name=project_id, namespace=settings.project_namespace(project_id)))
        session.flush()
        token = tokens.create_token(session, project_id, "viewer", "bench")
        now = utcnow()
        session.add_all(
            App(
                id=new_id("app"), project_id=project_id, name=f"app-{i:05d}", slug=f"app-{i:05d}", source_type="image",
                image_url=IMAGE, port=8080, replicas=1, env={}, progress_deadline_seconds=600, status="running",
                created_at=now, updated_at=now,
            )
            for i in range(count)
        )
    try:
        http = httpx.Client(base_url=f"{settings.api_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=120)
        for label, params, rounds in (("GET /apps?limit=50", {"limit": 50}, 200), ("GET /apps (whole list)", {}, 20)):
            latencies = []
            for _ in range(rounds):
                started = time.monotonic()
                response = http.get("/apps", params=params)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200 and len(response.json()) == params.get("limit", count)
            row(f"{count:,} apps: {label} p99 ({rounds} requests)", ms(p99(latencies)))
    finally:
        with session_scope(url) as session:
            session.query(App).filter(App.project_id == project_id).delete()
            session.query(ApiToken).filter(ApiToken.project_id == project_id).delete()
            session.query(Project).filter(Project.id == project_id).delete()


def cold_build() -> None:
    with tempfile.TemporaryDirectory(prefix="conveyor-cold-") as tmp:
        env = {
            **os.environ,
            "CONVEYOR_CACHE_DIR": f"{tmp}/cache",
            "GOMODCACHE": f"{tmp}/gomod",
            "GOCACHE": f"{tmp}/gocache",
        }
        timed(
            "cold build of every binary (empty caches)",
            lambda: subprocess.run([sys.executable, "-m", "conveyor.cli.main", "build-binaries"], env=env, check=True),
        )
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-build", action="store_true")
    parser.add_argument("--skip-platform", action="store_true", help="do not restart the platform to time `conveyor up`")
    parser.add_argument("--skip-load", action="store_true", help="only the platform figures")
    parser.add_argument("--only-releases", action="store_true", help="only the single-deploy, web + worker, SSE end and layer-cache rows")
    parser.add_argument("--only-crowds", action="store_true", help="only the concurrent deploys (their wall time, CPU per deploy and probes)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--crowds", default="50,200", help="sizes of the concurrent runs")
    parser.add_argument("--probe", nargs=3, metavar=("URL", "AUTHORIZATION", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(*args.probe)
        return
    settings = get_settings()
    global IMAGE
    IMAGE = f"{settings.registry}/demo/web:v1"
    if args.cold_build:
        cold_build()
    platform = Platform(settings, progress=lambda message: None)
    platform.up()
    if not args.skip_platform:
        platform.stop()
        timed("warm `conveyor up` (all parts stopped, binaries cached)", platform.up)
    if not args.skip_load:
        config.load_kube_config(config_file=str(settings.effective_kubeconfig))
        with bench_token(settings) as token, tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
            conveyor = Conveyor(settings, token)
            kubectl = Kubectl(settings, Path(tmp))
            try:
                if args.only_crowds:
                    crowds(settings, platform, conveyor, kubectl, [int(n) for n in args.crowds.split(",") if n])
                    return print_rows()
                single_deploys(conveyor, kubectl, args.runs)
                process_releases(conveyor, kubectl, args.runs)
                sse_end_latency(conveyor, settings, args.runs)
                cached_build(conveyor, settings)
                conveyor.clean()
                kubectl.clean()
                if args.only_releases:
                    return print_rows()
                crowds(settings, platform, conveyor, kubectl, [int(n) for n in args.crowds.split(",") if n])
            finally:
                conveyor.clean()
                kubectl.clean()
        big_list(settings)
    time.sleep(2)
    status = platform.status()
    for part in status["parts"]:
        row(f"memory (RSS) {part['title']}", format_bytes(part["rss_bytes"]))
    row("memory (RSS) whole stack", format_bytes(status["rss_bytes"]))
    print_rows()


def print_rows() -> None:
    print("\n| what | figure |\n| --- | --- |")
    for label, figure in ROWS:
        print(f"| {label} | {figure} |")


if __name__ == "__main__":
    main()
