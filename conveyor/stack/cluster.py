"""The local Kubernetes cluster: real control plane, KWOK as the kubelets.

kwokctl (binary runtime) runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok-controller and metrics-server from the binaries built by
`conveyor.stack.binaries`, and tracks those processes itself, by a pid file per
component that it keeps until it stops the component. It trusts a pid file
blindly (it kills the pid it names), so the pid file of a component that has
exited is removed before kwokctl starts or stops anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

from conveyor.domain import jobs, markers
from conveyor.settings import Settings
from conveyor.stack import binaries, processes

CONFIG_TEMPLATE = Path(__file__).parent / "kwok" / "cluster.yaml"
# KWOK serves pod logs from files in the CRI log format the kubelet reads.
SAMPLE_LOG_LINES = ["listening on :8080", "GET / 200 0.4ms", "GET /healthz 200 0.1ms", "GET /api/items 200 3.2ms"]
PREVIOUS_LOG_LINES = ["listening on :8080", "fatal: exiting after an error"]
# What a Job's container (release command, scheduled job) writes.
JOB_LOG_LINES = ["conveyor job: starting", "conveyor job: step 1 of 2 done", "conveyor job: step 2 of 2 done", "conveyor job: finished"]


def cri_log_line(message: str, stream: str = "stdout", when: datetime | None = None) -> str:
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {message}\n"


def workdir(settings: Settings) -> Path:
    return settings.home / "kwok"


def cluster_dir(settings: Settings) -> Path:
    return workdir(settings) / "clusters" / settings.cluster_name


def logs_files(settings: Settings) -> tuple[Path, Path]:
    folder = settings.home / "pod-logs"
    return folder / "container.log", folder / "previous.log"


def job_logs_file(settings: Settings) -> Path:
    return settings.home / "pod-logs" / "job.log"


def render_config(settings: Settings) -> str:
    logs, previous = logs_files(settings)
    any_marker = markers.tag_regex([m.suffix for m in markers.ALL])
    values = {
        "NODE_CPU": settings.node_cpu,
        "NODE_MEMORY": settings.node_memory,
        "NODE_PODS": settings.node_pods,
        "POD_CREATE_DELAY_MS": settings.pod_create_delay_ms,
        "POD_READY_DELAY_MS": settings.pod_ready_delay_ms,
        "POD_READY_JITTER_MS": settings.pod_ready_jitter_ms,
        "CRASH_DELAY_MS": settings.pod_crash_delay_ms,
        "POD_DELETE_DELAY_MS": settings.pod_delete_delay_ms,
        "JOB_DELAY_MS": settings.pod_job_delay_ms,
        "JOB_SLOW_DELAY_MS": settings.pod_job_slow_delay_ms,
        "JOB_FAIL_REGEX": markers.command_regex((markers.JOB_FAIL,)).replace("\\", "\\\\"),
        "JOB_SLOW_REGEX": markers.command_regex((markers.JOB_SLOW,)).replace("\\", "\\\\"),
        "ANY_JOB_MARKER_REGEX": markers.command_regex(markers.JOB_MARKERS).replace("\\", "\\\\"),
        "JOB_CONTAINER": jobs.CONTAINER,
        "JOB_LOGS_FILE": json.dumps(str(job_logs_file(settings))),
        # The regexes sit inside a jq string literal within a YAML single-quoted
        # scalar: backslashes must be doubled for jq.
        "ANY_MARKER_REGEX": any_marker.replace("\\", "\\\\"),
        "CRASHLOOP_REGEX": markers.tag_regex([markers.CRASHLOOP.suffix]).replace("\\", "\\\\"),
        "PULLFAIL_REGEX": markers.tag_regex([markers.PULLFAIL.suffix]).replace("\\", "\\\\"),
        "NEVERREADY_REGEX": markers.tag_regex([markers.NEVERREADY.suffix]).replace("\\", "\\\\"),
        "LOGS_FILE": json.dumps(str(logs)),
        "PREVIOUS_LOGS_FILE": json.dumps(str(previous)),
        "DEFAULT_POD_CPU": "5m",
        "DEFAULT_POD_MEMORY": "24Mi",
    }
    text = CONFIG_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    if "@@" in text:
        raise RuntimeError("unrendered placeholder left in the KWOK configuration")
    options = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        # A local kustomize folder instead of the release download kwokctl
        # would otherwise fetch.
        "options": {"metricsServerManifests": [str(binaries.asset_dir("metrics-server", "manifests/base"))]},
    }
    return json.dumps(options) + "\n---\n" + text


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KWOK_WORKDIR": str(workdir(settings)),
        "KWOK_KUBECTL_BINARY": str(binaries.bin_dir() / "kubectl"),
    }


def kwokctl(settings: Settings, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(binaries.bin_dir() / "kwokctl"), "--name", settings.cluster_name, *args]
    proc = subprocess.run(cmd, env=_env(settings), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kwokctl {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc


def exists(settings: Settings) -> bool:
    return (cluster_dir(settings) / "kwok.yaml").exists()


# Contains kube-apiserver's default 10.0.0.0/24, so clusters made before keep their addresses.
SERVICE_IP_RANGE = "10.0.0.0/16"


def create_command(settings: Settings) -> list[str]:
    bin_dir = binaries.bin_dir()
    config = settings.home / "kwok-config.yaml"
    args = [
        "create",
        "cluster",
        "--runtime",
        "binary",
        "--kube-apiserver-port",
        str(settings.kube_apiserver_port),
        "--kubeconfig",
        str(settings.local_kubeconfig),
        "--config",
        str(config),
        "--etcd-binary",
        str(bin_dir / "etcd"),
        "--kube-apiserver-binary",
        str(bin_dir / "kube-apiserver"),
        "--kube-controller-manager-binary",
        str(bin_dir / "kube-controller-manager"),
        "--kube-scheduler-binary",
        str(bin_dir / "kube-scheduler"),
        "--kwok-controller-binary",
        str(bin_dir / "kwok"),
        # No node leases: a restarted kwok-controller would otherwise wait for
        # its predecessor's leases to expire before it manages any pod. Node
        # liveness comes from the node-heartbeat stage instead.
        "--node-lease-duration-seconds",
        "0",
        # One instance of each: no leader election, so a restart acts at once
        # instead of waiting for the previous instance's lock to expire.
        "--extra-args",
        "kube-controller-manager=leader-elect=false",
        "--extra-args",
        "kube-scheduler=leader-elect=false",
        # Room for every app's Service: the default range (a /24) runs out
        # after about 250 apps ("failed to allocate a serviceIP: range is full").
        "--extra-args",
        f"kube-apiserver=service-cluster-ip-range={SERVICE_IP_RANGE}",
        "--wait",
        "120s",
    ]
    if settings.metrics_server:
        args += ["--enable", "metrics-server", "--metrics-server-binary", str(bin_dir / "metrics-server")]
    return args


def write_inputs(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "kwok-config.yaml").write_text(render_config(settings))
    logs, previous = logs_files(settings)
    logs.parent.mkdir(parents=True, exist_ok=True)
    if not logs.exists():
        logs.write_text("".join(cri_log_line(line) for line in SAMPLE_LOG_LINES))
    if not previous.exists():
        previous.write_text("".join(cri_log_line(line, "stderr") for line in PREVIOUS_LOG_LINES))
    if not job_logs_file(settings).exists():
        job_logs_file(settings).write_text("".join(cri_log_line(line) for line in JOB_LOG_LINES))


def stage_names(text: str) -> set[str]:
    return {doc["metadata"]["name"] for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind") == "Stage"}


def missing_stages(settings: Settings) -> list[str]:
    """The KWOK stages this Conveyor renders that the existing cluster was not
    made with: kwokctl keeps a cluster's stages from its creation, so new
    ones need the cluster made again (`conveyor down --purge`, `conveyor up`)."""
    made = cluster_dir(settings) / "kwok.yaml"
    if not made.exists():
        return []
    return sorted(stage_names(render_config(settings)) - stage_names(made.read_text()))


def create(settings: Settings) -> None:
    write_inputs(settings)
    kwokctl(settings, *create_command(settings), timeout=600)


def start(settings: Settings) -> None:
    """Start the components that do not run (kwokctl leaves running ones be)."""
    write_inputs(settings)
    forget_exited(settings)
    kwokctl(settings, "start", "cluster", "--wait", "120s", timeout=600)


def stop(settings: Settings) -> None:
    if exists(settings):
        running = [p for p in forget_exited(settings).values() if p is not None]
        kwokctl(settings, "stop", "cluster", check=False)
        # kwokctl sends SIGKILL and does not wait for processes it did not fork:
        # wait here, so that their ports are free when this returns.
        psutil.wait_procs(running, timeout=10)


def delete(settings: Settings) -> None:
    if exists(settings):
        kwokctl(settings, "delete", "cluster", "--kubeconfig", str(settings.local_kubeconfig), check=False)


def _pid_files(settings: Settings) -> list[Path]:
    folder = cluster_dir(settings) / "pids"
    return sorted(folder.glob("*.pid")) if folder.is_dir() else []


def _component_processes(settings: Settings) -> dict[str, psutil.Process | None]:
    """Each component kwokctl started, with its process while it runs: the
    component's binary, created when its pid file was written. None: it has
    exited (and its pid may be someone else's by now)."""
    found: dict[str, psutil.Process | None] = {}
    for pidfile in _pid_files(settings):
        try:
            pid, written = int(pidfile.read_text().strip()), pidfile.stat().st_mtime
        except (OSError, ValueError):
            found[pidfile.stem] = None
            continue
        binary = cluster_dir(settings) / "bin" / pidfile.stem
        found[pidfile.stem] = processes.find(pid, argv0=str(binary), started=written)
    return found


def components(settings: Settings) -> dict[str, int | None]:
    """Each component kwokctl started (etcd, kube-apiserver, ...) and its pid,
    or None if it has exited since."""
    return {name: (p.pid if p else None) for name, p in _component_processes(settings).items()}


def running_components(settings: Settings) -> dict[str, int]:
    return {name: pid for name, pid in components(settings).items() if pid is not None}


def forget_exited(settings: Settings) -> dict[str, psutil.Process | None]:
    """Remove the pid files of components that have exited: kwokctl would
    kill whoever has that pid now on stop, and skip the component on start
    while that pid lives."""
    found = _component_processes(settings)
    for name, process in found.items():
        if process is None:
            (cluster_dir(settings) / "pids" / f"{name}.pid").unlink(missing_ok=True)
    return found


def kubectl(settings: Settings, *args: str, input: str | None = None, timeout: float = 60) -> str:
    cmd = [str(binaries.bin_dir() / "kubectl"), "--kubeconfig", str(settings.effective_kubeconfig), *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:2])} failed: {proc.stderr.strip()[-1500:]}")
    return proc.stdout


def healthy(settings: Settings) -> bool:
    return kubectl(settings, "get", "--raw", "/readyz", timeout=5).strip() == "ok"


def node_manifest(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                # KWOK serves every node's kubelet metrics on one port, told
                # apart by path; metrics-server reads the path from here.
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
            },
        },
        "spec": {},
    }


def ensure_nodes(settings: Settings) -> list[str]:
    names = [f"kwok-node-{i}" for i in range(settings.nodes)]
    docs = {"apiVersion": "v1", "kind": "List", "items": [node_manifest(n) for n in names]}
    kubectl(settings, "apply", "--server-side", "--field-manager", "conveyor", "-f", "-", input=json.dumps(docs))
    return names


def nodes_ready(settings: Settings) -> bool:
    data = json.loads(kubectl(settings, "get", "nodes", "-o", "json", timeout=10))
    ready = [
        n
        for n in data["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
    ]
    return len(ready) >= settings.nodes


def metrics_healthy(settings: Settings) -> bool:
    return "PodMetricsList" in kubectl(settings, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods", timeout=5)
