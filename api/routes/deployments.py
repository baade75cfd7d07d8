"""/api/v1/apps/{id}/deployments: history, one deployment with its progress, revert."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select
from temporalio.service import RPCError

from api.deps import Deployer, SessionDep, SettingsDep, TemporalConnectorDep, TemporalDep, Viewer, read_off_loop
from api.pagination import PageDep
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from api.services import deployments as services
from api.services.apps import load_app
from api.streams import ProgressHubDep, StreamSlot, progress_events
from api.unit_of_work import MutationDep
from conveyor.clients.db.models import Deployment
from conveyor.domain.vocabulary import NOT_STARTED, TERMINAL

log = logging.getLogger(__name__)

router = APIRouter(prefix="/apps/{app_id}/deployments", tags=["deployments"])


@router.get("", response_model=list[DeploymentPublic], summary="Deployment history, newest first (paginated)")
def list_deployments(
    app_id: str,
    session: SessionDep,
    caller: Viewer,
    page: PageDep,
) -> list[DeploymentPublic]:
    app = load_app(session, caller, app_id)
    query = select(Deployment).where(Deployment.app_id == app.id)
    if (after := page.after(int)) is not None:
        query = query.where(Deployment.number < after)
    deps = session.scalars(page.take(query.order_by(Deployment.number.desc()))).all()
    return [deployment_public(dep) for dep in page.finish(deps, lambda dep: dep.number)]


@router.get("/{deployment_id}", response_model=DeploymentPublic, summary="One deployment with its progress")
async def get_deployment(
    app_id: str, deployment_id: str, settings: SettingsDep, caller: Viewer, temporal: TemporalDep, hub: ProgressHubDep
) -> DeploymentPublic:
    dep = await read_off_loop(settings, services.load_both, caller, app_id, deployment_id)
    # As a progress stream sees it: while it waits or retries, `reason` says on what.
    now = await hub.snapshot(temporal, dep)
    shown = deployment_public(dep, now.steps)
    if now.status is not None and now.status not in TERMINAL:
        shown.reason = now.reason
    return shown


async def _streamed_deployment(
    app_id: str, deployment_id: str, settings: SettingsDep, caller: Viewer
) -> Deployment:
    # A dependency, so that a 404 is answered before the stream starts.
    return await read_off_loop(settings, services.load_both, caller, app_id, deployment_id)


@router.get(
    "/{deployment_id}/progress",
    summary="Live progress as Server-Sent Events",
    description=(
        "`event: step` for each step as it starts, changes or finishes (resolve, build, apply, rollout with "
        "`n/N ready` as pods become ready, finalize, restore), in order; then `event: end` with the final status "
        "and reason (status `deleted` when the deployment or its app was deleted meanwhile). A `: ping` comment "
        "keeps an idle stream open. A stream open longer than the deployment's retry deadline ends with "
        "`event: close`; reconnect to keep following."
    ),
    response_class=EventSourceResponse,
    dependencies=[StreamSlot],
)
async def progress_stream(
    dep: Annotated[Deployment, Depends(_streamed_deployment)],
    settings: SettingsDep,
    temporal: TemporalDep,
    hub: ProgressHubDep,
    ping: Annotated[
        float | None,
        Query(ge=1, le=60, description="Seconds of quiet before a `: ping` (default CONVEYOR_PROGRESS_PING_SECONDS), for proxies with short idle timeouts"),
    ] = None,
) -> AsyncIterable[ServerSentEvent]:
    # The hub polls the row (in short read sessions) and the workflow, once
    # for every follower of this deployment in this process.
    async for event in progress_events(dep, settings, temporal, hub, ping):
        yield event


@router.post(
    "/{deployment_id}/revert",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Roll back to a previous deployment",
    description=(
        "A new deployment with the target's image digest, env and port; the replica count stays. "
        "The app's env and port become the target's."
    ),
)
async def revert(app_id: str, deployment_id: str, m: MutationDep, caller: Deployer) -> Any:
    return await m.run(caller, services.revert, m.settings, app_id, deployment_id)


@router.post(
    "/{deployment_id}/cancel",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Cancel a queued or running deployment",
    description=(
        "A queued deployment is cancelled at once. A running one is cancelled through its workflow, which puts the "
        "previous release back and then marks it cancelled (the same as cancelling the workflow in the Temporal Web UI)."
    ),
)
async def cancel(app_id: str, deployment_id: str, m: MutationDep, caller: Deployer, connector: TemporalConnectorDep) -> Any:
    for _ in range(3):
        dep = await read_off_loop(m.settings, services.load_both, caller, app_id, deployment_id)
        running = dep.status not in TERMINAL and dep.status not in NOT_STARTED
        if running:
            # Tell the workflow before writing anything: if Temporal refuses,
            # nothing changed. A queued one needs no Temporal to be cancelled.
            temporal = await connector.get()
            try:
                await temporal.get_workflow_handle(dep.workflow_id).cancel()
            except Exception as exc:  # noqa: BLE001
                # Temporal's own text (addresses, internals) goes to the log, not to the caller.
                log.warning("cancelling %s: Temporal refused: %s", dep.workflow_id, exc)
                why = exc.status.name if isinstance(exc, RPCError) else type(exc).__name__
                raise HTTPException(503, f"could not reach the deployment's workflow ({why}); nothing was changed, try again") from None
        try:
            return await m.run(caller, services.cancel, app_id, deployment_id, running)
        except services.StartedMeanwhile:
            continue
    raise HTTPException(409, f"deployment {deployment_id} kept changing state; try again")


@router.post(
    "/{deployment_id}/retry",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Retry a failed or cancelled deployment",
    description="A new deployment with the same snapshot (image, env, port) as the failed or cancelled one.",
)
async def retry(app_id: str, deployment_id: str, m: MutationDep, caller: Deployer) -> Any:
    return await m.run(caller, services.retry, m.settings, app_id, deployment_id)
