"""What the cluster says about an app: its rollout status, its pods, their
events and their metrics, read from Kubernetes (`metrics.k8s.io` and the
kubelets' `stats/summary` for metrics). The logs are api/services/pod_logs.py.

Each read finds the caller's app in a read session closed before Kubernetes
is called (`target`): no database connection is held while the cluster answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from fastapi import HTTPException
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from sqlalchemy.orm import Session

from api.deps import Caller
from api.schemas import AppMetrics, AppStatusPublic, AutoscalerStatus, EventPublic, Measure, PodDetail, PodMetrics, PodStatus
from api.services.apps import load_app
from conveyor.clients.db.models import Project
from conveyor.clients.db.queries import active_deployment, in_flight, release_spec
from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import api_client
from conveyor.domain import manifests
from conveyor.domain.ids import iso, utcnow
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.workload import WEB, Workload
from conveyor.settings import Settings

Pod = dict[str, Any]  # a pod as the Kubernetes API serialises it


@dataclass(frozen=True)
class AppTarget:
    """Where one process of an app lives in the cluster: its Deployment
    (web: the app's slug; another process: `<slug>-<process>`)."""

    deployment: str
    namespace: str
    # The process asks for autoscaling: its HorizontalPodAutoscaler is read too.
    autoscaled: bool = False
    # What the active release renders, when nothing is on its way to replace
    # it: the live Deployment is compared with it (drift).
    release: ReleaseSpec | None = None
    process: str = WEB


def locate(session: Session, caller: Caller, app_id: str, settings: Settings | None = None, process: str | None = None) -> AppTarget:
    """The caller's app (404 otherwise), its project's namespace and the
    process asked for (web unless named; 404 for one the app does not have);
    with `settings`, also what its active release renders (status compares it
    for drift)."""
    app = load_app(session, caller, app_id)
    project = session.get(Project, app.project_id)
    assert project is not None, "an app belongs to a project"
    current = active_deployment(session, app.id)
    workload = Workload.of(app.workload)
    process = process or WEB
    if process != WEB and process not in (workload.processes or {}) and process not in ((current.procfile or {}) if current else {}):
        raise HTTPException(404, "the app has no process of that name")
    settled = current is not None and not in_flight(session, app.id)
    return AppTarget(
        manifests.deployment_name(app.slug, process),
        project.namespace,
        autoscaled=workload.autoscaling_of(process) is not None,
        release=release_spec(app, project, current, settings, app.replicas) if settled and current is not None and settings is not None else None,
        process=process,
    )


def target(settings: Settings, caller: Caller, app_id: str, with_release: bool = False, process: str | None = None) -> AppTarget:
    """`locate`, in a read session of its own, closed when it returns
    (`with_release`: also what the active release renders, for drift)."""
    with read_scope(settings.effective_database_url) as session:
        return locate(session, caller, app_id, settings if with_release else None, process)


def pod_objects(settings: Settings, app: AppTarget) -> list[Pod]:
    """The app's pods, by name."""
    kube = api_client(settings)
    pods = k8s.CoreV1Api(kube).list_namespaced_pod(app.namespace, label_selector=f"{manifests.LABEL_APP}={app.deployment}").items
    serialised: list[Pod] = [kube.sanitize_for_serialization(p) for p in pods]  # type: ignore[no-untyped-call]
    return sorted(serialised, key=lambda p: str(p["metadata"]["name"]))


def _ready(pod: Pod) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


def status(settings: Settings, caller: Caller, app_id: str, process: str | None = None) -> AppStatusPublic:
    """Desired and ready replicas of the process's Deployment (0 and 0 before
    it exists), and its pods that are not being deleted."""
    app = target(settings, caller, app_id, with_release=True, process=process)
    drifted: list[str] = []
    try:
        kube = api_client(settings)
        obj = k8s.AppsV1Api(kube).read_namespaced_deployment(app.deployment, app.namespace)
        desired = obj.spec.replicas or 0
        ready = (obj.status.ready_replicas if obj.status is not None else None) or 0
        if app.release is not None and manifests.process_view(app.release, app.process) is not None:
            drifted = manifests.drift(app.release, kube.sanitize_for_serialization(obj), app.process)  # type: ignore[no-untyped-call]
    except ApiException as exc:
        if exc.status != 404:
            raise HTTPException(502, f"Kubernetes answered {exc.status} {exc.reason}") from exc
        desired, ready = 0, 0
    pods = [
        PodStatus(name=p["metadata"]["name"], phase=p.get("status", {}).get("phase", "Unknown"), ready=_ready(p))
        for p in pod_objects(settings, app)
        if not p["metadata"].get("deletionTimestamp")
    ]
    return AppStatusPublic(
        desired_replicas=desired,
        ready_replicas=ready,
        pods=pods,
        autoscaler=autoscaler_status(settings, app),
        drift=bool(drifted),
        drift_fields=drifted,
    )


def autoscaler_status(settings: Settings, app: AppTarget) -> AutoscalerStatus | None:
    """The app's HorizontalPodAutoscaler, None when it has none."""
    if not app.autoscaled:
        return None
    try:
        scaler = k8s.AutoscalingV2Api(api_client(settings)).read_namespaced_horizontal_pod_autoscaler(app.deployment, app.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise HTTPException(502, f"Kubernetes answered {exc.status} {exc.reason}") from exc
    state = scaler.status or k8s.V2HorizontalPodAutoscalerStatus(desired_replicas=0)
    spec = scaler.spec
    assert spec is not None, "an autoscaler always has a spec"
    cpu = next(
        (m.resource.current.average_utilization for m in (state.current_metrics or []) if m.type == "Resource" and m.resource is not None and m.resource.name == "cpu"),
        None,
    )
    return AutoscalerStatus(
        min_replicas=spec.min_replicas or 1,
        max_replicas=spec.max_replicas,
        current_replicas=state.current_replicas or 0,
        desired_replicas=state.desired_replicas or 0,
        current_cpu_percent=cpu,
    )


def _pod_detail(pod: Pod) -> PodDetail:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    container = statuses[0] if statuses else {}
    waiting = (container.get("state") or {}).get("waiting") or {}
    ready = _ready(pod)
    image = container.get("image") or pod["spec"]["containers"][0]["image"]
    image_id = container.get("imageID") or image
    created = pod["metadata"].get("creationTimestamp")
    return PodDetail(
        name=pod["metadata"]["name"],
        phase=pod.get("status", {}).get("phase", "Unknown"),
        ready=ready,
        restarts=sum(c.get("restartCount", 0) for c in statuses),
        node=pod.get("spec", {}).get("nodeName"),
        image=image,
        image_digest=image_id.split("@", 1)[1] if "@" in image_id else None,
        created_at=iso(created),
        age_seconds=int((utcnow() - datetime.fromisoformat(created)).total_seconds()) if created else None,
        reason=None if ready else (waiting.get("reason") or "not ready"),
    )


def pods(settings: Settings, caller: Caller, app_id: str, process: str | None = None) -> list[PodDetail]:
    """The process's pods: phase, readiness, restarts, node, image and why one is not ready."""
    return [_pod_detail(pod) for pod in pod_objects(settings, target(settings, caller, app_id, process=process))]


def _objects_of(slug: str) -> dict[str, re.Pattern[str]]:
    """The names the app's Deployment, its ReplicaSets and their pods have, by kind."""
    slug = re.escape(slug)
    return {
        "Deployment": re.compile(rf"^{slug}$"),
        "ReplicaSet": re.compile(rf"^{slug}-[a-z0-9]{{6,12}}$"),
        "Pod": re.compile(rf"^{slug}-[a-z0-9]{{6,12}}-[a-z0-9]{{5}}$"),
    }


def events(settings: Settings, caller: Caller, app_id: str, process: str | None = None) -> list[EventPublic]:
    """The Kubernetes events of the process's Deployment, ReplicaSets and pods, newest first."""
    app = target(settings, caller, app_id, process=process)
    mine = _objects_of(app.deployment)
    items = k8s.CoreV1Api(api_client(settings)).list_namespaced_event(app.namespace).items
    chosen: list[tuple[datetime, str, EventPublic]] = []
    for event in items:
        obj = event.involved_object
        pattern = mine.get(obj.kind or "")
        if pattern is None or not pattern.match(obj.name or ""):
            continue
        last = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
        first = event.first_timestamp or event.event_time or event.metadata.creation_timestamp
        chosen.append(
            (
                last or datetime.min.replace(tzinfo=UTC),
                event.metadata.name or "",
                EventPublic(
                    type=event.type or "Normal",
                    reason=event.reason or "",
                    message=event.message or "",
                    object=f"{obj.kind}/{obj.name}",
                    count=event.count or (event.series.count if event.series else 1) or 1,
                    first_seen=iso(first),
                    last_seen=iso(last),
                ),
            )
        )
    chosen.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [item[2] for item in chosen]


@dataclass(frozen=True)
class _Usage:
    """CPU and memory per pod from metrics.k8s.io, or why there are none."""

    by_pod: dict[str, tuple[float, int]]
    timestamp: str | None = None
    window_seconds: float | None = None
    error: str | None = None


def _quantity(value: str) -> Decimal:
    """A Kubernetes quantity (250m, 64Mi) as a number."""
    quantity: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    return quantity


def _usage(settings: Settings, app: AppTarget) -> _Usage:
    objects = k8s.CustomObjectsApi(api_client(settings))
    try:
        listed = objects.list_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", app.namespace, "pods", label_selector=f"{manifests.LABEL_APP}={app.deployment}"
        )
        items: list[dict[str, Any]] = cast(dict[str, Any], listed)["items"]
    except ApiException as exc:
        return _Usage({}, error=f"metrics.k8s.io answered {exc.status} {exc.reason} (is metrics-server running?)")
    by_pod: dict[str, tuple[float, int]] = {}
    stamp, window = None, None
    for item in items:
        cpu = sum(float(_quantity(c["usage"]["cpu"])) for c in item["containers"]) * 1000
        memory = sum(int(_quantity(c["usage"]["memory"])) for c in item["containers"])
        by_pod[item["metadata"]["name"]] = (round(cpu, 3), memory)
        stamp = item.get("timestamp") or stamp
        window = float(str(item.get("window", "0s")).rstrip("s") or 0) or window
    return _Usage(by_pod, stamp, window)


@dataclass(frozen=True)
class _Stats:
    """Disk and network bytes per pod (disk, received, sent), or why there are none."""

    by_pod: dict[str, tuple[int | None, int | None, int | None]]
    error: str | None = None


def _stats(settings: Settings, nodes: set[str]) -> _Stats:
    """Disk and network come from the kubelet's stats/summary, where a kubelet serves it."""
    if not nodes:
        return _Stats({}, "the app has no running pods")
    by_pod: dict[str, tuple[int | None, int | None, int | None]] = {}
    core = k8s.CoreV1Api(api_client(settings))
    for node in sorted(nodes):
        try:
            summary = core.connect_get_node_proxy_with_path(node, "stats/summary")
        except ApiException as exc:
            return _Stats(
                {},
                f"the kubelet of node {node} does not serve stats/summary (HTTP {exc.status}); "
                "metrics.k8s.io carries only CPU and memory",
            )
        for pod in json.loads(summary).get("pods", []):
            storage = (pod.get("ephemeral-storage") or {}).get("usedBytes")
            network = pod.get("network") or {}
            by_pod[pod["podRef"]["name"]] = (storage, network.get("rxBytes"), network.get("txBytes"))
    return _Stats(by_pod)


def _measure(unit: str, values: Sequence[float | None], error: str | None) -> Measure:
    """The total of the figures, or why there is none."""
    known = [v for v in values if v is not None]
    if error is not None:
        return Measure(available=False, unit=unit, reason=error)
    if not known:
        return Measure(available=False, unit=unit, reason="no figures reported yet for the app's pods")
    return Measure(available=True, unit=unit, total=sum(known))


def metrics(settings: Settings, caller: Caller, app_id: str, process: str | None = None) -> AppMetrics:
    """CPU, memory, disk and network per pod of the process and in total; a
    figure the cluster cannot provide is unavailable, with the reason, never invented."""
    app = target(settings, caller, app_id, process=process)
    pods = pod_objects(settings, app)
    usage = _usage(settings, app)
    stats = _stats(settings, {p["spec"]["nodeName"] for p in pods if p.get("spec", {}).get("nodeName")})
    rows = []
    for pod in pods:
        name = pod["metadata"]["name"]
        cpu, memory = usage.by_pod.get(name, (None, None))
        disk, rx, tx = stats.by_pod.get(name, (None, None, None))
        rows.append(
            PodMetrics(name=name, cpu_millicores=cpu, memory_bytes=memory, disk_bytes=disk, network_rx_bytes=rx, network_tx_bytes=tx)
        )
    return AppMetrics(
        timestamp=usage.timestamp,
        window_seconds=usage.window_seconds,
        cpu=_measure("millicores", [r.cpu_millicores for r in rows], usage.error),
        memory=_measure("bytes", [r.memory_bytes for r in rows], usage.error),
        disk=_measure("bytes", [r.disk_bytes for r in rows], stats.error),
        network_rx=_measure("bytes (since container start)", [r.network_rx_bytes for r in rows], stats.error),
        network_tx=_measure("bytes (since container start)", [r.network_tx_bytes for r in rows], stats.error),
        pods=rows,
    )
