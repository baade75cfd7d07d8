"""/api/v1/apps/{id}: logs, events and metrics, read straight from Kubernetes."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from pydantic import BaseModel, Field

from api.deps import SettingsDep, Viewer, read_off_loop
from api.pagination import PageDep
from api.routes.apps import AppTargetDep, app_and_namespace, pod_objects
from api.streams import FollowSlot
from conveyor.clients.kubernetes import api_client
from conveyor.domain import manifests
from conveyor.domain.ids import iso

router = APIRouter(prefix="/apps/{app_id}", tags=["observe"])

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str | None) -> int | None:
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "must be a duration such as 90, 30s, 5m, 2h or 1d", "type": "value_error"}])
    return int(match.group(1)) * _UNITS[match.group(2)]


def _log_targets(settings, namespace: str, app, pod: str | None) -> list[str]:
    names = [p["metadata"]["name"] for p in pod_objects(settings, namespace, app) if p.get("spec", {}).get("nodeName")]
    if pod is not None:
        if pod not in names:
            raise HTTPException(404, "pod is not one of this app's pods")
        return [pod]
    return names


@router.get(
    "/logs",
    response_class=PlainTextResponse,
    summary="Application logs",
    description=(
        "Lines of the app's pods, each prefixed with `[pod]`. `follow=true` streams new lines from every pod "
        "(pods that appear later too) until the client disconnects."
    ),
)
async def logs(
    app_id: str,
    settings: SettingsDep,
    caller: Viewer,
    tail: Annotated[int | None, Query(ge=0, le=100_000, description="Last N lines of each pod")] = None,
    since: Annotated[str | None, Query(description="Only lines newer than this: 90, 30s, 5m, 2h, 1d")] = None,
    pod: Annotated[str | None, Query(description="Only this pod")] = None,
    container: Annotated[str, Query(description="Container name")] = manifests.CONTAINER,
    previous: Annotated[bool, Query(description="The previous (crashed) container's logs")] = False,
    follow: FollowSlot = False,
):
    since_seconds = parse_since(since)
    app, namespace = await read_off_loop(settings, app_and_namespace, caller, app_id)
    targets = await run_in_threadpool(_log_targets, settings, namespace, app, pod)
    core = k8s.CoreV1Api(api_client(settings))
    options = {"container": container, "tail_lines": tail, "since_seconds": since_seconds, "previous": previous}
    options = {k: v for k, v in options.items() if v not in (None, False)}
    if not follow:

        def read_all() -> str:
            out = []
            for name in targets:
                try:
                    text = core.read_namespaced_pod_log(name, namespace, **options)
                except ApiException as exc:
                    if exc.status in (400, 404):
                        continue  # not started yet, or gone meanwhile
                    raise HTTPException(502, f"Kubernetes answered {exc.status} for the logs of {name}") from exc
                out += [f"[{name}] {line}" for line in text.splitlines()]
            return "\n".join(out) + ("\n" if out else "")

        return PlainTextResponse(await run_in_threadpool(read_all))
    return StreamingResponse(
        _follow(settings, app, core, namespace, targets if pod else None, options, pod),
        media_type="text/plain; charset=utf-8",
    )


async def _follow(settings, app, core, namespace, fixed, options, only_pod) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
    stop = threading.Event()
    streams: dict[str, object] = {}

    def pump(name: str) -> None:
        try:
            response = core.read_namespaced_pod_log(name, namespace, follow=True, _preload_content=False, **options)
        except ApiException:
            streams.pop(name, None)
            return
        streams[name] = response
        try:
            for raw in response:
                if stop.is_set():
                    break
                for line in raw.decode(errors="replace").splitlines():
                    loop.call_soon_threadsafe(queue.put_nowait, f"[{name}] {line}\n")
        except Exception:  # noqa: BLE001 - the stream ends when the pod goes or we interrupt it
            pass
        finally:
            response.close()

    def attach(names: list[str]) -> None:
        for name in names:
            if name not in streams:
                streams[name] = None
                threading.Thread(target=pump, args=(name,), daemon=True).start()

    async def discover() -> None:
        while not stop.is_set():
            names = fixed or await run_in_threadpool(_log_targets, settings, namespace, app, only_pod)
            attach(names)
            await asyncio.sleep(2.0)

    watcher = asyncio.create_task(discover())
    try:
        while True:
            yield (await queue.get()).encode()
    finally:
        stop.set()
        watcher.cancel()
        for response in list(streams.values()):
            if response is not None:
                _interrupt(response)


def _interrupt(response) -> None:
    """Wake a reader blocked on a quiet stream without taking its locks: shut the socket down."""
    try:
        response.connection.sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - already closed
        pass


class EventPublic(BaseModel):
    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    object: str = Field(description="Kind/name of the object the event is about")
    count: int
    first_seen: str | None
    last_seen: str | None


def app_events(settings, namespace: str, app) -> list[EventPublic]:
    slug = re.escape(app.slug)
    mine = {
        "Deployment": re.compile(rf"^{slug}$"),
        "ReplicaSet": re.compile(rf"^{slug}-[a-z0-9]{{6,12}}$"),
        "Pod": re.compile(rf"^{slug}-[a-z0-9]{{6,12}}-[a-z0-9]{{5}}$"),
    }
    items = k8s.CoreV1Api(api_client(settings)).list_namespaced_event(namespace).items
    chosen = []
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
                event.metadata.name,
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


@router.get(
    "/events",
    response_model=list[EventPublic],
    summary="Kubernetes events of the app's Deployment, ReplicaSets and pods, newest first (paginated)",
)
def events(target: AppTargetDep, settings: SettingsDep, page: PageDep) -> list[EventPublic]:
    app, namespace = target
    everything = app_events(settings, namespace, app)
    start = page.after(int) or 0
    window = page.window(everything, start)
    offsets = {id(item): start + i + 1 for i, item in enumerate(window)}
    return page.finish(window, lambda item: offsets[id(item)])


class Measure(BaseModel):
    available: bool
    unit: str
    total: float | None = None
    reason: str | None = Field(default=None, description="Why the figure is not available")


class PodMetrics(BaseModel):
    name: str
    cpu_millicores: float | None
    memory_bytes: int | None
    disk_bytes: int | None
    network_rx_bytes: int | None
    network_tx_bytes: int | None


class AppMetrics(BaseModel):
    timestamp: str | None
    window_seconds: float | None
    cpu: Measure
    memory: Measure
    disk: Measure
    network_rx: Measure
    network_tx: Measure
    pods: list[PodMetrics]


def _usage(settings, namespace: str, slug: str) -> tuple[dict[str, dict], str | None, float | None, str | None]:
    objects = k8s.CustomObjectsApi(api_client(settings))
    try:
        items = objects.list_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", namespace, "pods", label_selector=f"{manifests.LABEL_APP}={slug}"
        )["items"]
    except ApiException as exc:
        return {}, None, None, f"metrics.k8s.io answered {exc.status} {exc.reason} (is metrics-server running?)"
    usage = {}
    stamp, window = None, None
    for item in items:
        cpu = sum(float(parse_quantity(c["usage"]["cpu"])) for c in item["containers"]) * 1000
        memory = sum(int(parse_quantity(c["usage"]["memory"])) for c in item["containers"])
        usage[item["metadata"]["name"]] = {"cpu": round(cpu, 3), "memory": memory}
        stamp = item.get("timestamp") or stamp
        window = float(str(item.get("window", "0s")).rstrip("s") or 0) or window
    return usage, stamp, window, None


def _stats(settings, nodes: set[str]) -> tuple[dict[str, dict], str | None]:
    """Disk and network come from the kubelet's stats/summary, where a kubelet serves it."""
    stats: dict[str, dict] = {}
    core = k8s.CoreV1Api(api_client(settings))
    for node in sorted(nodes):
        try:
            summary = core.connect_get_node_proxy_with_path(node, "stats/summary")
        except ApiException as exc:
            return {}, (
                f"the kubelet of node {node} does not serve stats/summary (HTTP {exc.status}); "
                "metrics.k8s.io carries only CPU and memory"
            )
        for pod in json.loads(summary).get("pods", []):
            storage = (pod.get("ephemeral-storage") or {}).get("usedBytes")
            network = pod.get("network") or {}
            stats[pod["podRef"]["name"]] = {"disk": storage, "rx": network.get("rxBytes"), "tx": network.get("txBytes")}
    return stats, None


@router.get(
    "/metrics",
    response_model=AppMetrics,
    summary="CPU, memory, disk and network per pod and in total",
    description="Figures the cluster cannot provide are reported as unavailable, with the reason; none are invented.",
)
def metrics(target: AppTargetDep, settings: SettingsDep) -> AppMetrics:
    app, namespace = target
    pods = pod_objects(settings, namespace, app)
    usage, stamp, window, usage_error = _usage(settings, namespace, app.slug)
    nodes = {p["spec"]["nodeName"] for p in pods if p.get("spec", {}).get("nodeName")}
    stats, stats_error = _stats(settings, nodes) if nodes else ({}, "the app has no running pods")

    rows = []
    for pod in pods:
        name = pod["metadata"]["name"]
        u, st = usage.get(name, {}), stats.get(name, {})
        rows.append(
            PodMetrics(
                name=name,
                cpu_millicores=u.get("cpu"),
                memory_bytes=u.get("memory"),
                disk_bytes=st.get("disk"),
                network_rx_bytes=st.get("rx"),
                network_tx_bytes=st.get("tx"),
            )
        )

    def measure(unit: str, values: list, error: str | None) -> Measure:
        known = [v for v in values if v is not None]
        if error is not None:
            return Measure(available=False, unit=unit, reason=error)
        if not known:
            return Measure(available=False, unit=unit, reason="no figures reported yet for the app's pods")
        return Measure(available=True, unit=unit, total=sum(known))

    return AppMetrics(
        timestamp=stamp,
        window_seconds=window,
        cpu=measure("millicores", [r.cpu_millicores for r in rows], usage_error),
        memory=measure("bytes", [r.memory_bytes for r in rows], usage_error),
        disk=measure("bytes", [r.disk_bytes for r in rows], stats_error),
        network_rx=measure("bytes (since container start)", [r.network_rx_bytes for r in rows], stats_error),
        network_tx=measure("bytes (since container start)", [r.network_tx_bytes for r in rows], stats_error),
        pods=rows,
    )
