"""/api/v1/apps/{id}/jobs: runs of the app's Jobs (release commands, scheduled
jobs), their logs, a cron entry run now; and a deployment's release log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from api.deps import Deployer, SessionDep, SettingsDep, TemporalConnectorDep, Viewer, read_off_loop
from api.pagination import PageDep
from api.schemas import JobRunPublic, TriggeredRun
from api.services import jobs as services

router = APIRouter(tags=["jobs"])


@router.get("/apps/{app_id}/jobs", response_model=list[JobRunPublic], summary="Runs of the app's Jobs, newest first (paginated)")
def list_runs(
    app_id: str,
    session: SessionDep,
    caller: Viewer,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=63, description="Only the runs of this cron entry (or `release`)")] = None,
    kind: Annotated[Literal["release", "cron"] | None, Query(description="Only release commands or scheduled jobs")] = None,
) -> list[JobRunPublic]:
    return services.list_runs(session, caller, app_id, page, name, kind)


@router.get("/apps/{app_id}/jobs/{run_id}/log", response_class=PlainTextResponse, summary="The output of one run (the end of its log)")
def run_log(app_id: str, run_id: str, session: SessionDep, caller: Viewer) -> str:
    return services.run_log(session, caller, app_id, run_id)


@router.post(
    "/apps/{app_id}/jobs/{name}/trigger",
    status_code=202,
    response_model=TriggeredRun,
    summary="Run a cron entry now",
    description="Through the entry's Temporal Schedule, as its Trigger button in the Web UI; `409` while a run of it is on (runs never overlap).",
)
async def trigger(app_id: str, name: str, settings: SettingsDep, caller: Deployer, temporal: TemporalConnectorDep) -> TriggeredRun:
    # The app first: another project's app is a 404 whether Temporal answers or not.
    schedule_id = await read_off_loop(settings, services.trigger_target, caller, app_id, name)
    await services.trigger(await temporal.get(), schedule_id)
    return TriggeredRun(name=name, schedule_id=schedule_id)


@router.get(
    "/apps/{app_id}/deployments/{deployment_id}/release-log",
    response_class=PlainTextResponse,
    summary="The output of the deployment's release command",
)
def release_log(app_id: str, deployment_id: str, session: SessionDep, caller: Viewer) -> str:
    return services.release_log(session, caller, app_id, deployment_id)
