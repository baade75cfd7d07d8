"""/api/v1/apps/{id}/deployments: history, one deployment with its progress, revert."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select, update
from temporalio.client import Client

from api.deps import Deployer, SessionDep, SettingsDep, TemporalDep, Viewer, read_off_loop
from api.operations import MutationDep
from api.pagination import PageDep
from api.routes.apps import load_app, mutable, source_release
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from conveyor.db.models import Deployment
from conveyor.db.records import add_audit
from conveyor.ids import utcnow
from conveyor.vocabulary import NOT_STARTED, ONCE_RAN, TERMINAL, DeploymentStatus
from workflows.deploy import DeployWorkflow

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


def _load(session, app, deployment_id: str) -> Deployment:
    dep = session.get(Deployment, deployment_id)
    if dep is None or dep.app_id != app.id:
        raise HTTPException(404, f"deployment {deployment_id} not found for app {app.id}")
    return dep


async def workflow_progress(temporal: Client, dep: Deployment) -> list[dict]:
    """The steps as the deployment's workflow reports them (empty before it starts)."""
    try:
        return await temporal.get_workflow_handle(dep.workflow_id).query(DeployWorkflow.progress)
    except Exception:  # noqa: BLE001 - not started yet (queued) or no worker to answer
        return []


def _load_both(session, caller, app_id: str, deployment_id: str) -> Deployment:
    return _load(session, load_app(session, caller, app_id), deployment_id)


@router.get("/{deployment_id}", response_model=DeploymentPublic, summary="One deployment with its progress")
async def get_deployment(
    app_id: str, deployment_id: str, settings: SettingsDep, temporal: TemporalDep, caller: Viewer
) -> DeploymentPublic:
    dep = await read_off_loop(settings, _load_both, caller, app_id, deployment_id)
    return deployment_public(dep, await workflow_progress(temporal, dep))


async def _streamed_deployment(
    app_id: str, deployment_id: str, settings: SettingsDep, caller: Viewer
) -> Deployment:
    # A dependency, so that a 404 is answered before the stream starts.
    return await read_off_loop(settings, _load_both, caller, app_id, deployment_id)


def _status_now(session, deployment_id: str) -> tuple[str, str | None] | None:
    row = session.get(Deployment, deployment_id)
    return (row.status, row.reason) if row is not None else None


POLL_SECONDS = 0.5


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
)
async def progress_stream(
    dep: Annotated[Deployment, Depends(_streamed_deployment)], settings: SettingsDep, temporal: TemporalDep
) -> AsyncIterable[ServerSentEvent]:
    # Each poll reads the row in its own short session (read_off_loop): no
    # session or transaction is held while the stream waits.
    loop = asyncio.get_running_loop()
    sent: dict[str, tuple] = {}
    last_sent = opened = loop.time()
    while True:
        now = await read_off_loop(settings, _status_now, dep.id)
        if now is None:
            yield ServerSentEvent(event="end", data={"id": dep.id, "status": "deleted", "reason": "the deployment or its app was deleted"})
            return
        status, reason = now
        for step in await workflow_progress(temporal, dep):
            seen = (step["state"], step.get("detail"))
            if sent.get(step["name"]) != seen:
                sent[step["name"]] = seen
                last_sent = loop.time()
                yield ServerSentEvent(event="step", data=step)
        if status in TERMINAL:
            yield ServerSentEvent(event="end", data={"id": dep.id, "status": status, "reason": reason})
            return
        if loop.time() - opened > settings.deploy_deadline_seconds:
            yield ServerSentEvent(event="close", data={"id": dep.id, "status": status, "reason": "reconnect to keep following"})
            return
        if loop.time() - last_sent >= settings.progress_ping_seconds:
            # FastAPI pings an idle stream too, every 15 s; this interval is a setting.
            last_sent = loop.time()
            yield ServerSentEvent(comment="ping")
        await asyncio.sleep(POLL_SECONDS)


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
async def revert(
    app_id: str,
    deployment_id: str,
    m: MutationDep,
    caller: Deployer,
):
    def handle():
        app = load_app(m.session, caller, app_id)
        mutable(app)
        target = _load(m.session, app, deployment_id)
        if target.status not in ONCE_RAN or not target.image_ref:
            raise HTTPException(409, f"deployment {target.id} is {target.status}: only a deployment that once ran can be restored")
        app.env, app.port = dict(target.env), target.port
        return m.release(
            app,
            "rollback",
            image=target.image,
            image_ref=target.image_ref,
            image_digest=target.image_digest,
            source_commit=target.source_commit,
            env=target.env,
            port=target.port,
            rollback_of=target.id,
        )

    return await m.once(caller, handle)


class _StartedMeanwhile(Exception):
    """The deployment left the queue between the look and the claim."""


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
async def cancel(app_id: str, deployment_id: str, m: MutationDep, caller: Deployer, temporal: TemporalDep):
    def handle(workflow_told: bool):
        app = load_app(m.session, caller, app_id)
        dep = _load(m.session, app, deployment_id)
        if dep.status in TERMINAL:
            raise HTTPException(409, f"deployment {dep.id} is already {dep.status}")
        # Not started yet: cancel it here; its workflow will find it cancelled and do nothing.
        claimed = m.session.execute(
            update(Deployment)
            .where(Deployment.id == dep.id, Deployment.status.in_(NOT_STARTED))
            .values(status="cancelled", reason=f"cancelled by {caller.name} before it started", finished_at=utcnow())
        ).rowcount
        if claimed:
            add_audit(m.session, app, f"{dep.operation}_cancelled", caller.name, f"Cancelled deployment v{dep.number} before it started", dep.id)
        elif not workflow_told:
            raise _StartedMeanwhile()
        else:
            add_audit(m.session, app, "cancel_requested", caller.name, f"Requested cancellation of deployment v{dep.number}", dep.id)
        m.session.flush()
        m.session.refresh(dep)
        return 202, deployment_public(dep).model_dump()

    for _ in range(3):
        dep = await read_off_loop(m.settings, _load_both, caller, app_id, deployment_id)
        running = dep.status not in TERMINAL and dep.status not in NOT_STARTED
        if running:
            # Tell the workflow before writing anything: if Temporal refuses, nothing changed.
            try:
                await temporal.get_workflow_handle(dep.workflow_id).cancel()
            except Exception as exc:  # noqa: BLE001
                raise HTTPException(503, f"could not reach the deployment's workflow, nothing was changed: {exc}") from exc
        try:
            return await m.once(caller, functools.partial(handle, running))
        except _StartedMeanwhile:
            continue
    raise HTTPException(409, f"deployment {deployment_id} kept changing state; try again")


@router.post(
    "/{deployment_id}/retry",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Retry a failed or cancelled deployment",
    description="A new deployment with the same snapshot (image, env, port) as the failed or cancelled one.",
)
async def retry(app_id: str, deployment_id: str, m: MutationDep, caller: Deployer):
    def handle():
        app = load_app(m.session, caller, app_id)
        mutable(app)
        dep = _load(m.session, app, deployment_id)
        if dep.status not in (DeploymentStatus.FAILED, DeploymentStatus.CANCELLED):
            raise HTTPException(409, f"deployment {dep.id} is {dep.status}: only a failed or cancelled one can be retried")
        if dep.image_ref or app.source_type == "image":
            snapshot = {
                "image": dep.image,
                "image_ref": dep.image_ref,
                "image_digest": dep.image_digest,
                "source_commit": dep.source_commit,
            }
        else:
            # It never got an image: build its source again.
            snapshot = source_release(m.session, m.settings, app) or {"image": None}
        return m.release(app, dep.operation, env=dep.env, port=dep.port, rollback_of=dep.rollback_of, retry_of=dep.id, **snapshot)

    return await m.once(caller, handle)
