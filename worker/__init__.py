"""The Temporal worker: every Conveyor workflow and activity."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import CodeType, ModuleType
from typing import Any, ClassVar

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.builder import BuilderActivities
from activities.digests import RegistryActivities
from activities.jobs import JobActivities
from activities.records import RecordActivities, TurnOffer
from activities.schedules import ScheduleActivities
from activities.turns import TurnActivities
from activities.workloads import KubeActivities, ProgressReporter, load_api_classes
from conveyor.clients import outbound, telemetry
from conveyor.clients.db import sealed
from conveyor.clients.db.session import SchemaOutdated, check_schema, configure_pool
from conveyor.clients.payload_codec import load_keyring
from conveyor.clients.temporal_client import connect
from conveyor.domain.payloads import RolloutProgress
from conveyor.heap import freeze_startup_heap
from conveyor.settings import Settings
from worker.failures import FailureInterceptor
from workflows.cron import CronRunWorkflow
from workflows.delete import DeleteAppWorkflow
from workflows.deploy import DeployWorkflow
from workflows.lane import AppLaneWorkflow, lane_id
from workflows.scale import ScaleWorkflow

WORKFLOWS = [AppLaneWorkflow, DeployWorkflow, ScaleWorkflow, DeleteAppWorkflow, CronRunWorkflow]


def progress_reporter(client: Client, loop: asyncio.AbstractEventLoop) -> ProgressReporter:
    """Lets the rollout wait (a sync activity on the thread pool) signal its
    workflow through the worker's client, on the worker's event loop."""

    # One workflow's signals go one after another, in the order reported:
    # sent side by side, a slow "1/3" could land after "2/3". (Used on the loop only.)
    locks: dict[str, asyncio.Lock] = {}
    queued: dict[str, int] = {}

    async def send_in_order(workflow_id: str, progress: RolloutProgress) -> None:
        lock = locks.setdefault(workflow_id, asyncio.Lock())
        queued[workflow_id] = queued.get(workflow_id, 0) + 1
        try:
            async with lock:
                await client.get_workflow_handle(workflow_id).signal(DeployWorkflow.rollout_progress, progress)
        finally:
            queued[workflow_id] -= 1
            if not queued[workflow_id]:
                del queued[workflow_id], locks[workflow_id]

    def report(workflow_id: str, progress: RolloutProgress) -> None:
        # Sent, not awaited: a slow Temporal must not hold up the rollout wait
        # (its heartbeats); a lost progress signal only delays the display.
        future = asyncio.run_coroutine_threadsafe(send_in_order(workflow_id, progress), loop)
        future.add_done_callback(_log_signal_failure)

    return report


def _log_signal_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logging.getLogger(__name__).info("a signal to a workflow was not delivered: %s", future.exception())


def turn_offer(client: Client, loop: asyncio.AbstractEventLoop) -> TurnOffer:
    """Lets a record of an operation's outcome (a sync activity) tell the
    app's lane that the app's turn is its own, on the worker's event loop.
    Sent, not awaited; the lane asks for the turn again on its own after a
    while, so a lost signal only delays it."""

    def offer(app_id: str) -> None:
        signal = client.get_workflow_handle(lane_id(app_id)).signal(AppLaneWorkflow.turn_offered)
        asyncio.run_coroutine_threadsafe(signal, loop).add_done_callback(_log_signal_failure)

    return offer


def activities(
    settings: Settings, report_progress: ProgressReporter | None = None, client: Client | None = None, offer_turn: TurnOffer | None = None
) -> list[Callable[..., Any]]:
    kube, records, registry = KubeActivities(settings, report_progress), RecordActivities(settings, offer_turn), RegistryActivities(settings)
    builder = BuilderActivities(settings)
    job_runs = JobActivities(settings, kube)
    # The Schedules are written through the worker's own Temporal client.
    schedules = ScheduleActivities(settings, client)
    # The lane asks Temporal whether the holder of the app's turn still runs.
    app_turns = TurnActivities(settings, client)
    return [
        builder.resolve_git_commit,
        builder.find_built_image,
        builder.build_image,
        builder.record_build,
        registry.resolve_image_digest,
        kube.apply_manifests,
        kube.wait_for_rollout,
        kube.scale_deployment,
        kube.delete_app_resources,
        records.begin_deployment,
        records.record_image_digest,
        records.finish_deployment,
        records.load_app_target,
        records.app_being_deleted,
        records.record_scale,
        records.remove_app,
        records.record_delete_failed,
        job_runs.run_job,
        job_runs.load_cron_job,
        job_runs.delete_app_jobs,
        schedules.sync_schedules,
        schedules.delete_app_schedules,
        app_turns.take_turn,
        app_turns.release_turn,
    ]


def warm_up(settings: Settings) -> None:
    """What the first deploys after a start would otherwise load: the
    kubernetes client's API classes, and a registry client (httpx imports
    httpcore with its first transport; the registry's TLS context is made)."""
    load_api_classes()
    outbound.registry_client(settings).close()
    keep_workflow_code()


class _WorkflowCode(importlib.machinery.SourceFileLoader):
    """A workflow module's code, compiled (or read from its bytecode) once
    per process; the sandbox runs it afresh in each workflow run."""

    compiled: ClassVar[dict[str, CodeType]] = {}

    def get_code(self, fullname: str) -> CodeType | None:
        code = self.compiled.get(self.path)
        if code is None:
            code = super().get_code(fullname)
            if code is not None:
                self.compiled[self.path] = code
        return code


class WorkflowCodeFinder(importlib.abc.MetaPathFinder):
    """The sandbox imports the workflow modules afresh for every workflow
    run. Where Python may not write bytecode (PYTHONDONTWRITEBYTECODE, a
    read-only tree) it compiled them from source each time, some 7 ms of
    CPU per release; with bytecode it still read and checked the files.
    This finder hands it the code of the first import instead."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "workflows" and not fullname.startswith("workflows."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_WorkflowCode(fullname, spec.origin), submodule_search_locations=spec.submodule_search_locations
        )


def keep_workflow_code() -> None:
    if not any(isinstance(finder, WorkflowCodeFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, WorkflowCodeFinder())


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with the payload models and the activity classes (which
    workflows name by reference) passed through: re-importing them, and
    building the pydantic models again, for every workflow run cost about
    150 ms of CPU per run. The workflow modules themselves stay sandboxed, so
    the sandbox still catches a clock, random or I/O call in workflow code.
    The workflow tests and every replay of a recorded history run in it."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("conveyor", "activities", "pydantic", "pydantic_core")
    )


def worker_runner(settings: Settings) -> WorkflowRunner:
    """The running worker's: the sandbox when CONVEYOR_WORKFLOW_SANDBOX is on
    (the tests' platform runs it). Off, workflow code runs as it is: the
    same code, without the sandbox's fresh import of the workflow modules
    for each run and its patched builtins in every activation (about 8 ms of
    the worker's CPU per release, some 8% of it)."""
    return workflow_runner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner()


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    """Called on the worker's event loop. The client's tracing interceptor,
    when it has one (`telemetry.worker_tracer`), is the worker's too: the SDK
    puts a client's worker interceptors first in the worker's chain."""
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=activities(
            settings, progress_reporter(client, asyncio.get_running_loop()), client, turn_offer(client, asyncio.get_running_loop())
        ),
        activity_executor=executor,
        workflow_runner=worker_runner(settings),
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_seconds),
        # Inside the client's tracing interceptor, so a span records the failure Temporal sees.
        interceptors=[FailureInterceptor()],
    )


async def run(settings: Settings) -> None:
    configure_pool(settings.db_pool_size, settings.db_max_overflow)
    try:
        await asyncio.to_thread(check_schema, settings.effective_database_url)
    except SchemaOutdated as exc:
        raise SystemExit(f"conveyor worker: {exc}") from None
    # Env values and registry passwords are sealed at rest with the payload keyring.
    sealed.use_keyring(await asyncio.to_thread(load_keyring, settings))
    await asyncio.to_thread(warm_up, settings)
    tracer = telemetry.worker_tracer(settings)
    client = await connect(settings, telemetry.temporal_interceptors(tracer))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=settings.max_concurrent_activities) as executor:
        async with build_worker(client, settings, executor):
            logging.info("worker polling task queue %s", settings.temporal_task_queue)
            freeze_startup_heap()
            await stop.wait()

