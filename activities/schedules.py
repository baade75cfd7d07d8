"""An app's Temporal Schedules: one per cron entry of its active release.

`sync_schedules` runs when a release has become active and makes the app's
Schedules what that release's `cron` says: new entries are created, changed
ones updated (a schedule paused in the Web UI stays paused), dropped ones
deleted. `delete_app_schedules` removes them all with the app. Both are
idempotent: a second run finds the Schedules as the first left them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from conveyor.clients.db.models import App, Deployment
from conveyor.clients.db.session import read_scope
from conveyor.domain import errors, jobs
from conveyor.domain.commands import CronEntry
from conveyor.domain.jobs import CronRunInput, SyncSchedulesInput
from conveyor.domain.vocabulary import AppStatus
from conveyor.domain.workload import Workload
from conveyor.settings import Settings

# The workflow each Schedule starts (workflows/cron.py), by name: activities do not import workflows.
CRON_WORKFLOW = "CronRunWorkflow"
# A run's workflow gets this long past its Job's deadline to record the outcome.
RUN_GRACE = timedelta(minutes=10)
# A run missed by more than this (Temporal was away) is skipped, not run late.
CATCHUP_WINDOW = timedelta(minutes=15)
APP_ID = SearchAttributeKey.for_keyword("AppId")
PROJECT_ID = SearchAttributeKey.for_keyword("ProjectId")
OPERATION = SearchAttributeKey.for_keyword("Operation")


def attributes_of(request: SyncSchedulesInput) -> TypedSearchAttributes:
    """The search attributes of the app's Schedules and of each of their runs (Web UI: `AppId = 'app_…'`)."""
    return TypedSearchAttributes(
        [SearchAttributePair(APP_ID, request.app_id), SearchAttributePair(PROJECT_ID, request.project_id), SearchAttributePair(OPERATION, "cron")]
    )


def schedule_of(settings: Settings, request: SyncSchedulesInput, entry: CronEntry) -> Schedule:
    """The Temporal Schedule of one cron entry: its spec and time zone, skip
    on overlap, and a run that is a `CronRunWorkflow` bounded by the entry's deadline."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CRON_WORKFLOW,
            CronRunInput(app_id=request.app_id, project_id=request.project_id, name=entry.name),
            # Temporal adds the scheduled time: cron-<app>-<entry>-<time>.
            id=jobs.schedule_id(request.app_id, entry.name),
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(seconds=entry.deadline_seconds) + RUN_GRACE,
            typed_search_attributes=attributes_of(request),
            static_summary=f"{request.app_name}: {entry.name}",
        ),
        spec=ScheduleSpec(cron_expressions=[entry.schedule], time_zone_name=entry.timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        # Not the command: a note is stored in the clear (payloads are sealed, notes are not),
        # and a command may carry a secret. GET /apps/{id} shows it.
        state=ScheduleState(note=f"{request.app_name} cron {entry.name} at {entry.schedule!r} (release {request.deployment_id})"),
    )


class ScheduleActivities:
    def __init__(self, settings: Settings, client: Client | None):
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Client:
        assert self._client is not None, "the worker hands its Temporal client to the schedule activities"
        return self._client

    def _being_deleted(self, app_id: str) -> bool:
        with read_scope(self.settings.effective_database_url) as session:
            app = session.get(App, app_id)
            return app is None or app.status in (AppStatus.DELETING, AppStatus.DELETE_FAILED)

    def _names_ever(self, app_id: str) -> set[str]:
        """Every cron entry any release of the app has had (a Schedule may be left from any)."""
        with read_scope(self.settings.effective_database_url) as session:
            rows = session.execute(select(Deployment.workload).where(Deployment.app_id == app_id)).all()
            app = session.get(App, app_id)
            stored = [row.workload for row in rows] + ([app.workload] if app is not None else [])
        return {entry.name for workload in stored for entry in Workload.of(workload).cron_entries()}

    async def _known_ids(self, app_id: str) -> set[str]:
        names = await asyncio.to_thread(self._names_ever, app_id)
        found = {jobs.schedule_id(app_id, name) for name in names}
        # And whatever Temporal lists for the app (visibility may lag a moment behind).
        try:
            async for listed in await self.client.list_schedules(query=f"AppId = '{app_id}'"):
                found.add(listed.id)
        except RPCError as exc:
            activity.logger.info("listing the schedules of %s failed: %s", app_id, exc)
        return found

    @activity.defn(name="sync_schedules")
    async def sync_schedules(self, request: SyncSchedulesInput) -> list[str]:
        if await asyncio.to_thread(self._being_deleted, request.app_id):
            # Its delete removes the Schedules; one written now could outlive it.
            return ["the app is being deleted: no schedules written"]
        wanted = {jobs.schedule_id(request.app_id, e.name): e for e in request.entries}
        done = []
        for schedule_id, entry in wanted.items():
            schedule = schedule_of(self.settings, request, entry)
            try:
                await self.client.create_schedule(schedule_id, schedule, search_attributes=attributes_of(request))
                done.append(f"created {schedule_id}")
            except ScheduleAlreadyRunningError:
                await self.client.get_schedule_handle(schedule_id).update(_keeping_state(schedule))
                done.append(f"updated {schedule_id}")
            except RPCError as exc:
                raise _temporal_error(exc, f"creating schedule {schedule_id}") from None
        for schedule_id in sorted(await self._known_ids(request.app_id) - set(wanted)):
            if await self._delete(schedule_id):
                done.append(f"deleted {schedule_id}")
        return done

    @activity.defn(name="delete_app_schedules")
    async def delete_app_schedules(self, request: jobs.AppJobsInput) -> list[str]:
        """The app's Schedules, then its runs still on (cancelled: each deletes its Job)."""
        deleted = []
        for schedule_id in sorted(await self._known_ids(request.app_id)):
            if await self._delete(schedule_id):
                deleted.append(schedule_id)
        try:
            running = self.client.list_workflows(f"AppId = '{request.app_id}' AND Operation = 'cron' AND ExecutionStatus = 'Running'")
            async for run in running:
                await self.client.get_workflow_handle(run.id, run_id=run.run_id).cancel()
                deleted.append(run.id)
        except RPCError as exc:
            raise _temporal_error(exc, "cancelling the app's scheduled runs") from None
        return deleted

    async def _delete(self, schedule_id: str) -> bool:
        try:
            await self.client.get_schedule_handle(schedule_id).delete()
            return True
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise _temporal_error(exc, f"deleting schedule {schedule_id}") from None


def _keeping_state(schedule: Schedule) -> Callable[[ScheduleUpdateInput], ScheduleUpdate]:
    """An update to `schedule` that keeps what an operator set in the Web UI (paused, its note)."""

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        schedule.state = ScheduleState(note=schedule.state.note, paused=state.paused)
        if state.paused and state.note:
            schedule.state.note = state.note
        return ScheduleUpdate(schedule=schedule)

    return update


def _temporal_error(exc: RPCError, what: str) -> errors.ConveyorError:
    if exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.FAILED_PRECONDITION):
        return errors.SchedulesRefused(f"{what}: Temporal answered {exc.status.name}: {exc.message[:500]}")
    return errors.TemporalUnavailable(f"{what}: Temporal answered {exc.status.name}: {exc.message[:500]}")
