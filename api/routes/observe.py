"""/api/v1/apps/{id}: logs, events and metrics, read from the cluster (api/services/pod_logs.py, cluster.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from api.deps import SettingsDep, Viewer
from api.pagination import PageDep
from api.schemas import AppMetrics, EventPublic, ProcessQuery
from api.services import cluster
from api.services.pod_logs import LogQuery, PodLogs, parse_since
from api.streams import FollowSlot
from conveyor.domain import manifests

router = APIRouter(prefix="/apps/{app_id}", tags=["observe"])


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
    process: ProcessQuery = None,
) -> Response:
    query = LogQuery(container=container, pod=pod, tail=tail, since_seconds=parse_since(since), previous=previous, process=process)
    pod_logs = await PodLogs.open(settings, caller, app_id, query)
    if not follow:
        return PlainTextResponse(await pod_logs.text())
    return StreamingResponse(pod_logs.follow(), media_type="text/plain; charset=utf-8")


@router.get(
    "/events",
    response_model=list[EventPublic],
    summary="Kubernetes events of the app's Deployment, ReplicaSets and pods, newest first (paginated)",
)
def events(app_id: str, settings: SettingsDep, caller: Viewer, page: PageDep, process: ProcessQuery = None) -> list[EventPublic]:
    everything = cluster.events(settings, caller, app_id, process)
    start = page.after(int) or 0
    window = page.window(everything, start)
    offsets = {id(item): start + i + 1 for i, item in enumerate(window)}
    return page.finish(window, lambda item: offsets[id(item)])


@router.get(
    "/metrics",
    response_model=AppMetrics,
    summary="CPU, memory, disk and network per pod and in total",
    description="Figures the cluster cannot provide are reported as unavailable, with the reason; none are invented.",
)
def metrics(app_id: str, settings: SettingsDep, caller: Viewer, process: ProcessQuery = None) -> AppMetrics:
    return cluster.metrics(settings, caller, app_id, process)
