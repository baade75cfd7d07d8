"""The Temporal worker: every Conveyor workflow and activity."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from opentelemetry.sdk.trace import TracerProvider
from temporalio.client import Client
from temporalio.worker import Worker

from activities.builder import BuilderActivities
from activities.kube import KubeActivities
from activities.records import RecordActivities
from activities.registry import RegistryActivities
from conveyor import telemetry
from conveyor.db.session import configure_pool, migrate
from conveyor.settings import Settings, get_settings
from conveyor.temporal_client import connect
from workflows.delete import DeleteAppWorkflow
from workflows.deploy import DeployWorkflow
from workflows.lane import AppLaneWorkflow
from workflows.scale import ScaleWorkflow

WORKFLOWS = [AppLaneWorkflow, DeployWorkflow, ScaleWorkflow, DeleteAppWorkflow]


def activities(settings: Settings) -> list:
    kube, records, registry = KubeActivities(settings), RecordActivities(settings), RegistryActivities(settings)
    builder = BuilderActivities(settings)
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
        records.record_scale,
        records.remove_app,
    ]


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor, tracer: TracerProvider) -> Worker:
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=activities(settings),
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_seconds),
        interceptors=[telemetry.temporal_interceptor(tracer)],
    )


async def run(settings: Settings) -> None:
    configure_pool(settings.db_pool_size, settings.db_max_overflow)
    await asyncio.to_thread(migrate, settings.effective_database_url)
    tracer = telemetry.tracer_provider("conveyor-worker", settings)
    client = await connect(settings, [telemetry.temporal_interceptor(tracer)])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=settings.max_concurrent_activities) as executor:
        async with build_worker(client, settings, executor, tracer):
            logging.info("worker polling task queue %s", settings.temporal_task_queue)
            await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(get_settings()))
