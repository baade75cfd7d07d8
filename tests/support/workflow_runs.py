"""What the workflow tests share: a worker that runs Conveyor's real workflows
against the faked activities (tests/workflows/fakes.py), the plans
`begin_deployment` hands a workflow, starting one, and waiting on what it reports."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker, WorkflowRunner

from conveyor.domain.payloads import AppTarget, BuildPlan, DeploymentPlan, Operation, ReleaseSpec
from tests.workflows.fakes import Fakes
from worker import WORKFLOWS, workflow_runner
from workflows.deploy import DeployWorkflow

PROJECT = "proj_wf"
PREVIOUS = "dep_previous"


# --- what begin_deployment hands the workflow ---------------------------------------


def release(app_id: str, deployment_id: str, image_ref: str = "") -> ReleaseSpec:
    return ReleaseSpec(
        app_id=app_id,
        project_id=PROJECT,
        deployment_id=deployment_id,
        name="web",
        slug="web",
        namespace="proj-wf",
        image_ref=image_ref,
        port=8000,
        replicas=2,
        env={"GREETING": "hello"},
        progress_deadline_seconds=30,
    )


def deployment(
    app_id: str, *, previous: bool = True, build: BuildPlan | None = None, image: str = "registry.test/web:2"
) -> DeploymentPlan:
    dep_id = f"dep_{uuid.uuid4().hex[:10]}"
    return DeploymentPlan(
        deployment_id=dep_id,
        app_id=app_id,
        project_id=PROJECT,
        operation="deploy",
        status="deploying",
        image=None if build else image,
        image_ref=None,
        spec=release(app_id, dep_id),
        previous=release(app_id, PREVIOUS, "registry.test/web:1@sha256:" + "1" * 64) if previous else None,
        build=build,
        deadline=datetime.now(UTC) + timedelta(minutes=10),
    )


def operation(plan: DeploymentPlan) -> Operation:
    return Operation(
        kind=plan.operation,
        app_id=plan.app_id,
        project_id=PROJECT,
        workflow_id=f"{plan.operation}-{plan.deployment_id}",
        deployment_id=plan.deployment_id,
        summary=f"{plan.operation} web",
        user="ada",
        # As the API queues a release.
        begins_locally=True,
    )


def app_operation(kind: str, app_id: str) -> Operation:
    """A scale or delete, as the API hands it to the lane."""
    return Operation(kind=kind, app_id=app_id, project_id=PROJECT, workflow_id=f"{kind}-{uuid.uuid4().hex[:8]}", summary=kind)


def git_build() -> BuildPlan:
    return BuildPlan(build_id=f"bld_{uuid.uuid4().hex[:10]}", source_type="git", repo_url="https://git.test/web.git", branch="main")


def upload_build() -> BuildPlan:
    return BuildPlan(
        build_id=f"bld_{uuid.uuid4().hex[:10]}",
        source_type="upload",
        source_ref="registry.test/conveyor-sources/web@sha256:" + "5" * 64,
    )


def new_app(fakes: Fakes) -> str:
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    fakes.targets[app_id] = AppTarget(
        app_id=app_id, project_id=PROJECT, name="web", slug="web", namespace="proj-wf", progress_deadline_seconds=30, replicas=3
    )
    return app_id


# --- running and observing -------------------------------------------------------


@asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, fakes: Fakes, runner: WorkflowRunner | None = None
) -> AsyncIterator[Worker]:
    """The real worker's workflows and sandbox, with `fakes` as the activities.
    Heartbeats go out at once (not throttled to 80% of the heartbeat timeout,
    as in production), so a cancel reaches a blocked fake in milliseconds."""
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=fakes.activities(),
        workflow_runner=runner or workflow_runner(),
        max_heartbeat_throttle_interval=timedelta(milliseconds=50),
        default_heartbeat_throttle_interval=timedelta(milliseconds=50),
    )
    async with worker:
        yield worker


async def start_deploy(client: Client, task_queue: str, fakes: Fakes, plan: DeploymentPlan) -> WorkflowHandle:
    fakes.plans[plan.deployment_id] = plan
    op = operation(plan)
    return await client.start_workflow(DeployWorkflow.run, op, id=op.workflow_id, task_queue=task_queue)


async def outcome(handle: WorkflowHandle) -> str:
    """The workflow's result, or "cancelled" when it ended cancelled."""
    try:
        return await asyncio.wait_for(handle.result(), 10)
    except WorkflowFailureError as err:
        if isinstance(err.cause, CancelledError):
            return "cancelled"
        raise


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 5.0) -> None:
    """Wait until `probe()` returns `expected` (for queries, which have nothing to wait on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {got!r}, expected {expected!r}"
        await asyncio.sleep(0.05)


def step(progress: list[dict], name: str) -> tuple[str, str]:
    found = [s for s in progress if s["name"] == name]
    assert found, f"no step {name} in {progress}"
    return found[0]["state"], found[0]["detail"]


def finished(fakes: Fakes, workflow_id: str) -> list[tuple[str, str | None]]:
    return [(c.input.status, c.input.reason) for c in fakes.named("finish_deployment", workflow_id)]


