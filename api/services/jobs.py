"""What the jobs routes do: the runs of an app's Jobs (release commands and
scheduled jobs) read from the database, and a cron entry run now through its
Temporal Schedule."""

from __future__ import annotations

from datetime import datetime

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Caller
from api.pagination import Page
from api.schemas import JobRunPublic
from api.services.apps import load_app, mutable
from api.services.deployments import load_deployment
from conveyor.clients.db.models import JobRun
from conveyor.clients.db.queries import active_deployment
from conveyor.domain import jobs
from conveyor.domain.ids import iso
from conveyor.domain.workload import Workload


def run_public(run: JobRun) -> JobRunPublic:
    return JobRunPublic(
        id=run.id,
        app_id=run.app_id,
        kind=run.kind,
        name=run.name,
        status=run.status,
        deployment_id=run.deployment_id,
        image_ref=run.image_ref,
        command=list((run.command or {}).get("argv") or []),
        exit_code=run.exit_code,
        reason=run.reason,
        job_name=run.job_name,
        workflow_id=run.workflow_id,
        created_at=iso(run.created_at) or "",
        started_at=iso(run.started_at),
        finished_at=iso(run.finished_at),
    )


def _cursor_of(run: JobRun) -> str:
    return f"{run.created_at.isoformat()}|{run.id}"


def list_runs(session: Session, caller: Caller, app_id: str, page: Page, name: str | None, kind: str | None) -> list[JobRunPublic]:
    """The app's runs, newest first."""
    app = load_app(session, caller, app_id)
    query = select(JobRun).where(JobRun.app_id == app.id)
    if name is not None:
        query = query.where(JobRun.name == name)
    if kind is not None:
        query = query.where(JobRun.kind == kind)
    if (after := page.after(str)) is not None:
        stamp, _, run_id = after.partition("|")
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor this list gave out", "type": "value_error"}]) from None
        query = query.where((JobRun.created_at < when) | ((JobRun.created_at == when) & (JobRun.id < run_id)))
    runs = session.scalars(page.take(query.order_by(JobRun.created_at.desc(), JobRun.id.desc()))).all()
    return [run_public(run) for run in page.finish(runs, _cursor_of)]


def run_log(session: Session, caller: Caller, app_id: str, run_id: str) -> str:
    app = load_app(session, caller, app_id)
    run = session.get(JobRun, run_id)
    if run is None or run.app_id != app.id:
        raise HTTPException(404, "job run not found for this app")
    return _log_text(run)


def release_log(session: Session, caller: Caller, app_id: str, deployment_id: str) -> str:
    """The output of the deployment's release command (empty while it runs)."""
    dep = load_deployment(session, load_app(session, caller, app_id), deployment_id)
    run = session.scalars(select(JobRun).where(JobRun.deployment_id == dep.id, JobRun.kind == jobs.JobKind.RELEASE.value)).first()
    if run is None:
        if Workload.of(dep.workload).release_command is None:
            raise HTTPException(404, "this deployment has no release command")
        raise HTTPException(404, "the release command of this deployment has not run yet")
    return _log_text(run)


def _log_text(run: JobRun) -> str:
    text = run.output or ""
    return text + "\n" if text and not text.endswith("\n") else text


def trigger_target(session: Session, caller: Caller, app_id: str, name: str) -> str:
    """The Schedule of the active release's cron entry `name` (404 when it has none)."""
    app = load_app(session, caller, app_id)
    mutable(app)
    active = active_deployment(session, app.id)
    entries = Workload.of(active.workload).cron_entries() if active is not None else []
    if not any(entry.name == name for entry in entries):
        raise HTTPException(404, "the app's active release has no cron entry of that name")
    return jobs.schedule_id(app.id, name)


async def trigger(client: Client, schedule_id: str) -> None:
    """Run the Schedule's action now, as its Trigger button does in the Web
    UI; refused (409) while a run of it is still on (the overlap policy is skip)."""
    handle = client.get_schedule_handle(schedule_id)
    try:
        described = await handle.describe()
        if described.info.running_actions:
            running = described.info.running_actions[0]
            which = f" ({running.workflow_id})" if isinstance(running, ScheduleActionExecutionStartWorkflow) else ""
            raise HTTPException(409, f"a run of this entry is still running{which}; runs never overlap")
        await handle.trigger()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(409, "the entry's schedule is not there: the release that carries it could not write it (see its `schedules` step)") from None
        raise HTTPException(503, f"Temporal could not trigger the schedule now: {exc.status.name}") from None
