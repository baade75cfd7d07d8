"""Conveyor's workflows on a Temporal dev server, with faked activities
(tests/workflows/fakes.py) under their real names.

What is checked is what the workflows decide: the lane's order, what a
cancel at each step of a release leaves behind (the calls made, what
`finish_deployment` records, the workflow's outcome), restores that fail,
cancelled builds, continue-as-new, live rollout progress. Each test takes
a second or two; none sleeps for ordering: each waits on recorded calls or
on the workflows' queries.

The workers use the platform's data converter (payloads encrypted) except
for the runs recorded as replay fixtures, which use the plain pydantic
converter (see `record`). Re-record them with CONVEYOR_RECORD_HISTORIES=1.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import workflows.lane
from api.outbox import signal_lane
from conveyor.domain import errors
from conveyor.domain.payloads import Operation
from conveyor.settings import Settings
from tests.support.workflow_runs import (
    PREVIOUS,
    app_operation,
    deployment,
    eventually,
    finished,
    git_build,
    new_app,
    operation,
    outcome,
    running_worker,
    start_deploy,
    step,
    upload_build,
)
from tests.workflows.fakes import Block, Fail, Fakes, digest_of
from worker import WORKFLOWS, worker_runner, workflow_runner
from workflows.deploy import DeployWorkflow
from workflows.lane import AppLaneWorkflow, lane_id

HISTORIES = Path(__file__).parent / "histories"
KEPT = f"the previous deployment {PREVIOUS} keeps serving"
# The activities of a release of an image, in order.
# The app's Schedules and Jobs go first, then its workload, then its records.
DELETED = ["load_app_target", "delete_app_schedules", "delete_app_jobs", "delete_app_resources", "remove_app"]
# begin_deployment resolves the image's digest as it begins.
RELEASED = ["begin_deployment", "apply_manifests", "wait_for_rollout", "finish_deployment"]


def markers(history: WorkflowHistory) -> list[str]:
    """The names of a history's markers, in order (a patch's `core_patch`, a local activity's `core_local_activity`)."""
    return [e.marker_recorded_event_attributes.marker_name for e in history.events if e.HasField("marker_recorded_event_attributes")]


async def record(handle: WorkflowHandle, name: str) -> None:
    """The run's history replays on the current workflows; with
    CONVEYOR_RECORD_HISTORIES=1 it becomes the replay fixture `name`."""
    history = await handle.fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=workflow_runner())
    await replayer.replay_workflow(history)
    if os.environ.get("CONVEYOR_RECORD_HISTORIES") == "1":
        await asyncio.to_thread((HISTORIES / f"{name}.json").write_text, history.to_json())


# --- the lane ----------------------------------------------------------------------


def runs_in_turn(fakes: Fakes) -> list[str]:
    """The workflow ids in the order their activities ran; an operation that
    overlapped another would show up more than once."""
    order: list[str] = []
    for _, _, workflow_id in fakes.events:
        if workflow_id.startswith("app-"):
            continue  # the lane's own steps: taking and giving back the app's turn
        if not order or order[-1] != workflow_id:
            order.append(workflow_id)
    return order


def app_with_operations(task_queue: str) -> tuple[Fakes, str, Settings, tuple[Operation, Operation, Operation, Operation]]:
    """An app with two releases planned, and its operations: a deploy, an
    update, a scale and a delete."""
    fakes = Fakes()
    app_id = new_app(fakes)
    first, second = deployment(app_id), deployment(app_id)
    fakes.plans.update({first.deployment_id: first, second.deployment_id: second})
    deploy, update = operation(first), operation(second).model_copy(update={"kind": "update"})
    scale, delete = app_operation("scale", app_id), app_operation("delete", app_id)
    return fakes, app_id, Settings(temporal_task_queue=task_queue), (deploy, update, scale, delete)


async def test_lane_runs_operations_one_at_a_time_in_signal_order_and_ignores_duplicates(client, task_queue):
    fakes, app_id, settings, (deploy, update, scale, delete) = app_with_operations(task_queue)
    hold = Block()
    fakes.script("begin_deployment", hold)
    async with running_worker(client, task_queue, fakes):
        await signal_lane(client, settings, deploy)
        await fakes.started("begin_deployment")
        for op in (scale, update, deploy, scale, update):  # the running one and a queued one again
            await signal_lane(client, settings, op)
        lane = client.get_workflow_handle_for(AppLaneWorkflow.run, lane_id(app_id))
        assert await lane.query(AppLaneWorkflow.current) == deploy.workflow_id
        assert await lane.query(AppLaneWorkflow.queued) == [scale.workflow_id, update.workflow_id]
        hold.release()
        await fakes.wait_for(lambda: any(c.outcome == "returned" for c in fakes.named("finish_deployment", update.workflow_id)))
        await asyncio.wait_for(client.get_workflow_handle(update.workflow_id).result(), 10)
        # With nothing left to do, a delete runs and ends the lane.
        await signal_lane(client, settings, delete)
        await asyncio.wait_for(lane.result(), 10)

    assert runs_in_turn(fakes) == [deploy.workflow_id, scale.workflow_id, update.workflow_id, delete.workflow_id]
    assert fakes.names(deploy.workflow_id) == RELEASED
    assert fakes.names(scale.workflow_id) == ["load_app_target", "scale_deployment", "wait_for_rollout", "record_scale"]
    assert fakes.names(update.workflow_id) == fakes.names(deploy.workflow_id)
    assert fakes.names(delete.workflow_id) == DELETED
    assert finished(fakes, update.workflow_id) == [("active", None)]


async def delete_through_the_lane(client, settings: Settings, fakes: Fakes, delete) -> WorkflowHandle:
    """As the API does: mark the app being deleted and hand its DELETE to the
    lane; returns the lane once its run has ended."""
    fakes.deleting.add(delete.app_id)
    await signal_lane(client, settings, delete)
    lane = client.get_workflow_handle_for(AppLaneWorkflow.run, lane_id(delete.app_id))
    await asyncio.wait_for(lane.result(), 10)
    return lane


async def test_a_delete_supersedes_the_running_release_and_what_waits_and_nothing_is_restored(client, task_queue):
    fakes, app_id, settings, (deploy, update, scale, delete) = app_with_operations(task_queue)
    # The running release is stuck in its rollout (a never-ready image, a registry away).
    fakes.script("wait_for_rollout", Block())
    async with running_worker(client, task_queue, fakes):
        for op in (deploy, update, scale):
            await signal_lane(client, settings, op)
        await fakes.started("wait_for_rollout")
        await delete_through_the_lane(client, settings, fakes, delete)

    assert runs_in_turn(fakes) == [deploy.workflow_id, delete.workflow_id]
    assert fakes.named("wait_for_rollout")[0].outcome == "cancelled"
    # Cancelled with no restore: nothing re-applied, recorded as cancelled by the delete.
    assert fakes.names(deploy.workflow_id)[-2:] == ["app_being_deleted", "finish_deployment"]
    assert fakes.names(deploy.workflow_id).count("apply_manifests") == 1
    [(status, reason)] = finished(fakes, deploy.workflow_id)
    assert status == "cancelled" and "being deleted" in reason
    assert fakes.names(update.workflow_id) == [] and fakes.names(scale.workflow_id) == []
    assert fakes.names(delete.workflow_id) == DELETED


async def test_a_lane_takes_the_apps_turn_before_it_runs_and_gives_it_back_once_it_has_run_all(plain_client, task_queue):
    """The lane waits while another holds the app's turn (take_turn answers
    False; the lane asks again when the holder offers it the turn), runs
    what it holds in order, and gives the turn back only when release_turn
    says nothing more is on its way; until then it waits for the operation
    that is."""
    client = plain_client
    fakes, app_id, settings, (deploy, update, scale, _delete) = app_with_operations(task_queue)

    async def not_yet(_request):
        return False

    fakes.script("take_turn", not_yet)
    fakes.script("release_turn", not_yet)
    hold = Block()
    fakes.script("begin_deployment", hold)
    async with running_worker(client, task_queue, fakes):
        await signal_lane(client, settings, deploy)
        await fakes.wait_for(lambda: [c.outcome for c in fakes.named("take_turn")] == ["returned"])
        lane = client.get_workflow_handle_for(AppLaneWorkflow.run, lane_id(app_id))
        assert fakes.named("begin_deployment") == [], "nothing runs before the lane has the turn"
        # The holder's last record offers the turn (the worker signals the lane).
        await lane.signal(AppLaneWorkflow.turn_offered)
        await fakes.started("begin_deployment")
        await signal_lane(client, settings, scale)
        hold.release()
        # Both ran; the lane was told one more is on its way: it waits for it.
        await fakes.wait_for(lambda: [c.outcome for c in fakes.named("release_turn")] == ["returned"])
        await signal_lane(client, settings, update)
        await asyncio.wait_for(lane.result(), 10)
        await record(lane, "lane-turns")

    lane_calls = [c for c in fakes.calls if c.workflow_id == lane.id]
    assert [(c.name, c.outcome) for c in lane_calls] == [
        ("take_turn", "returned"),
        ("take_turn", "returned"),
        ("release_turn", "returned"),
        ("release_turn", "returned"),
    ]
    assert not any(c.input.supersede for c in lane_calls)
    assert runs_in_turn(fakes) == [deploy.workflow_id, scale.workflow_id, update.workflow_id]
    assert finished(fakes, update.workflow_id) == [("active", None)]


async def test_a_delete_stops_the_lanes_wait_for_the_turn_and_takes_it_superseding_the_holder(client, task_queue):
    fakes, app_id, settings, (deploy, _update, _scale, delete) = app_with_operations(task_queue)
    # Another operation holds the app's turn (a release stuck in its rollout, started on its own).
    fakes.script("take_turn", Block())
    async with running_worker(client, task_queue, fakes):
        await signal_lane(client, settings, deploy)
        await fakes.started("take_turn")
        lane = await delete_through_the_lane(client, settings, fakes, delete)

    takes = [(c.outcome, c.input.supersede) for c in fakes.named("take_turn")]
    assert takes == [("cancelled", False), ("returned", True)], "the delete asks for the turn, cancelling its holder"
    assert fakes.names(deploy.workflow_id) == [], "the release that waited never started"
    assert fakes.names(delete.workflow_id) == DELETED
    assert [c.name for c in fakes.calls if c.workflow_id == lane.id][-1] == "release_turn"


async def test_a_delete_that_comes_with_the_answer_of_take_turn_still_supersedes_the_wait(client, task_queue):
    """The DELETE and take_turn's `False` reach the lane in one workflow task
    (no worker polled in between, as when they come within a millisecond):
    the delete's cancel of the waiting operation finds its activity already
    answered, and the lane must still stop waiting and run the delete."""
    fakes, app_id, settings, (deploy, _update, _scale, delete) = app_with_operations(task_queue)
    asked: list[bytes] = []

    async def answer_later(_request):
        asked.append(activity.info().task_token)
        activity.raise_complete_async()

    fakes.script("take_turn", answer_later)
    async with running_worker(client, task_queue, fakes):
        await signal_lane(client, settings, deploy)
        await fakes.wait_for(lambda: bool(asked))
    fakes.deleting.add(app_id)
    await signal_lane(client, settings, delete)
    await client.get_async_activity_handle(task_token=asked[0]).complete(False)
    async with running_worker(client, task_queue, fakes):
        lane = client.get_workflow_handle_for(AppLaneWorkflow.run, lane_id(app_id))
        await asyncio.wait_for(lane.result(), 30)

    history = await lane.fetch_history()
    tasks = [e for e in history.events if e.HasField("workflow_task_completed_event_attributes")]
    signals = [e.event_id for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    [answered] = [e.event_id for e in history.events if e.HasField("activity_task_completed_event_attributes")][:1]
    assert not [t for t in tasks if signals[-1] < t.event_id < answered], "the DELETE and the answer came in one workflow task"
    assert [c.input.supersede for c in fakes.named("take_turn")] == [False, True]
    assert fakes.names(deploy.workflow_id) == [], "the release that waited never started"
    assert fakes.names(delete.workflow_id) == DELETED


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "unsandboxed"])
async def test_a_cancel_by_an_operator_still_restores(client, task_queue, sandbox):
    """On either runner a worker may run (CONVEYOR_WORKFLOW_SANDBOX)."""
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("wait_for_rollout", Block())
    runner = worker_runner(Settings(workflow_sandbox=sandbox))
    assert isinstance(runner, SandboxedWorkflowRunner) == sandbox
    async with running_worker(client, task_queue, fakes, runner):
        handle = await start_deploy(client, task_queue, fakes, plan)
        await fakes.started("wait_for_rollout")
        await handle.cancel()
        assert await outcome(handle) == "cancelled"
    assert fakes.names(handle.id).count("apply_manifests") == 2, "the previous release was applied again"
    [(status, reason)] = finished(fakes, handle.id)
    assert status == "cancelled" and f"the previous deployment {PREVIOUS} keeps serving" in reason


async def test_lane_continues_as_new_and_carries_its_queue_over(client, task_queue, monkeypatch):
    # Continue as new after every operation (production: past 5000 events).
    # The lane module is passed through the sandbox here, for this test only,
    # so that the patched threshold is the one the workflow reads.
    monkeypatch.setattr(workflows.lane, "MAX_HISTORY", 1)
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "conveyor", "activities", "pydantic", "pydantic_core")
    )
    fakes = Fakes()
    app_id = new_app(fakes)
    settings = Settings(temporal_task_queue=task_queue)
    plans = [deployment(app_id) for _ in range(4)]
    fakes.plans.update({p.deployment_id: p for p in plans})
    ops = [operation(p) for p in plans]
    delete = app_operation("delete", app_id)
    hold = Block()
    fakes.script("begin_deployment", hold)
    async with running_worker(client, task_queue, fakes, runner):
        await signal_lane(client, settings, ops[0])
        await fakes.started("begin_deployment")
        first_run = (await client.get_workflow_handle(lane_id(app_id)).describe()).run_id
        for op in ops[1:]:
            await signal_lane(client, settings, op)
        hold.release()
        # Signalled while the lane hands its queue from run to run.
        await fakes.started("begin_deployment", 2)
        await signal_lane(client, settings, ops[1])  # a duplicate of the running one
        # A delete (which supersedes what waits and runs) once every release has ended.
        await fakes.wait_for(lambda: any(c.outcome == "returned" for c in fakes.named("finish_deployment", ops[-1].workflow_id)))
        await asyncio.wait_for(client.get_workflow_handle(ops[-1].workflow_id).result(), 10)
        await signal_lane(client, settings, delete)
        await asyncio.wait_for(client.get_workflow_handle(lane_id(app_id)).result(), 10)

        runs, run_id = 0, first_run
        while run_id:
            runs += 1
            history = await client.get_workflow_handle(lane_id(app_id), run_id=run_id).fetch_history()
            last = history.events[-1]
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id or None

    assert runs >= 4, "the lane should have continued as new after each operation"
    assert runs_in_turn(fakes) == [op.workflow_id for op in ops] + [delete.workflow_id]
    assert [c.input.deployment_id for c in fakes.named("begin_deployment")] == [p.deployment_id for p in plans]
    assert [c.workflow_id for c in fakes.named("finish_deployment")] == [op.workflow_id for op in ops]


# --- a release, cancelled at each step ------------------------------------------------

# A cancelled release first asks whether its app is being deleted (then it restores nothing).
ASKED = "app_being_deleted"
RESTORED = ["apply_manifests", "wait_for_rollout"]
CANCELLED = ("cancelled", f"cancelled by an operator; {KEPT}")


@pytest.mark.parametrize(
    "blocked, calls, finishes, result",
    [
        pytest.param(
            "resolve_image_digest",
            ["begin_deployment", "resolve_image_digest", ASKED, "finish_deployment"],
            [CANCELLED],
            "cancelled",
            id="resolve",
        ),
        pytest.param(
            "apply_manifests",
            ["begin_deployment", "apply_manifests", ASKED, *RESTORED, "finish_deployment"],
            [CANCELLED],
            "cancelled",
            id="apply",
        ),
        pytest.param(
            "wait_for_rollout",
            ["begin_deployment", "apply_manifests", "wait_for_rollout", ASKED, *RESTORED, "finish_deployment"],
            [CANCELLED],
            "cancelled",
            id="rollout",
        ),
        pytest.param(
            "finish_deployment",
            ["begin_deployment", "apply_manifests", "wait_for_rollout", "finish_deployment", "finish_deployment"],
            # Too late to cancel: the release is out, and recorded so.
            [("active", None), ("active", None)],
            "active",
            id="finalize",
        ),
    ],
)
async def test_cancel_at_each_step_of_a_release(client, plain_client, task_queue, blocked, calls, finishes, result):
    # The cancel during the rollout wait is recorded as a replay fixture (in plaintext).
    recorded = blocked == "wait_for_rollout"
    if recorded:
        client = plain_client
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script(blocked, Block())
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        held = await fakes.started(blocked)
        await handle.cancel()
        assert await outcome(handle) == result
        await fakes.wait_for(lambda: held.outcome is not None)
        progress = await handle.query(DeployWorkflow.progress)
        if recorded:
            await record(handle, "deploy-cancelled-begins-locally")

    assert held.outcome == "cancelled", "the running activity is cancelled too"
    assert fakes.names() == calls
    assert finished(fakes, handle.id) == finishes
    applied = [c.input for c in fakes.named("apply_manifests")]
    if len(applied) == 2:
        assert applied[0].spec.deployment_id == plan.deployment_id
        assert applied[1].spec == plan.previous, "the restore applies the previous release"
        assert applied[1].on_behalf_of == plan.deployment_id
        assert fakes.named("wait_for_rollout")[-1].input.deployment_id is None
        assert step(progress, "restore") == ("done", f"back on {PREVIOUS}")
    if result == "cancelled":
        step_name = {"resolve_image_digest": "resolve", "apply_manifests": "apply", "wait_for_rollout": "rollout"}[blocked]
        assert step(progress, step_name) == ("failed", "cancelled")
    else:
        assert step(progress, "rollout")[0] == "done"
        assert step(progress, "finalize") == ("done", "active (too late to cancel)")


async def test_cancel_during_restore_still_records_the_outcome(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("wait_for_rollout", Fail(errors.RolloutFailed("pod web-1 is crash-looping")))
    fakes.script("apply_manifests", None, Block())  # the restore's apply hangs
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        held = await fakes.started("apply_manifests", 2)
        await handle.cancel()
        result = await outcome(handle)
        await fakes.wait_for(lambda: held.outcome is not None)
        progress = await handle.query(DeployWorkflow.progress)

    assert result == "failed"
    assert held.outcome == "cancelled"
    assert fakes.names() == [*RELEASED[:-1], "apply_manifests", "finish_deployment"]
    assert finished(fakes, handle.id) == [
        (
            "failed",
            "pod web-1 is crash-looping; restoring the previous deployment was cancelled by an operator,"
            " so this deployment may still be in the cluster",
        )
    ]
    assert step(progress, "rollout") == ("failed", "pod web-1 is crash-looping")
    assert step(progress, "restore") == ("failed", "cancelled")


async def test_a_failing_restore_records_both_reasons(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("wait_for_rollout", Fail(errors.RolloutFailed("pod web-1 is crash-looping")))
    fakes.script("apply_manifests", None, Fail(errors.KubernetesRefused("admission webhook denied the Deployment")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "failed"
        progress = await handle.query(DeployWorkflow.progress)

    assert fakes.names() == [*RELEASED[:-1], "apply_manifests", "finish_deployment"]
    assert fakes.named("apply_manifests")[1].input.spec == plan.previous
    assert finished(fakes, handle.id) == [
        (
            "failed",
            "pod web-1 is crash-looping; restoring the previous deployment also failed: admission webhook denied the Deployment",
        )
    ]
    assert step(progress, "restore") == ("failed", "admission webhook denied the Deployment")


async def test_a_transient_failure_is_retried_and_the_release_completes(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes), previous=False)
    fakes.script("apply_manifests", Fail(errors.KubernetesUnreachable("connection refused")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"

    assert [c.outcome for c in fakes.named("apply_manifests")] == ["failed", "returned"]
    digest = digest_of(plan.image)
    assert [(c.input.status, c.input.image_ref, c.input.image_digest) for c in fakes.named("finish_deployment")] == [
        ("active", f"{plan.image}@{digest}", digest)
    ]


async def test_an_image_release_takes_its_digest_from_begin_and_begins_in_its_first_workflow_task(plain_client, task_queue):
    """begin_deployment resolves the tag as it begins (a local activity: a
    marker in the history, no activity task), finish_deployment records the
    digest, and the progress shows the resolve step done."""
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    async with running_worker(plain_client, task_queue, fakes):
        handle = await start_deploy(plain_client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
        progress = await handle.query(DeployWorkflow.progress)
        history = await handle.fetch_history()
        await record(handle, "deploy-image-begins-locally")

    assert fakes.names() == RELEASED
    assert fakes.named("begin_deployment")[0].input.resolve_image
    digest = digest_of(plan.image)
    reference = f"{plan.image}@{digest}"
    assert [(c.input.status, c.input.image_ref, c.input.image_digest) for c in fakes.named("finish_deployment")] == [("active", reference, digest)]
    assert fakes.named("apply_manifests")[0].input.spec.image_ref == reference
    assert step(progress, "resolve") == ("done", reference)
    assert [s["name"] for s in progress] == ["resolve", "apply", "rollout", "finalize"]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert scheduled == ["apply_manifests", "wait_for_rollout", "finish_deployment"]
    # The operation says the release begins locally: no patch marker, and
    # so no TemporalChangeVersion upsert (the visibility write it costs).
    assert markers(history) == ["core_local_activity"]
    assert not [e for e in history.events if e.HasField("upsert_workflow_search_attributes_event_attributes")]
    assert len(history.events) == 24


async def test_a_release_queued_before_begins_locally_decides_by_the_patch(client, task_queue):
    """An operation from before `begins_locally` (an outbox row, a lane's
    queue: the field is absent, so False) still begins locally, through the
    `local-begin` patch: its marker is in the history beside the local
    activity's, and the release completes as any other."""
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.plans[plan.deployment_id] = plan
    op = operation(plan).model_copy(update={"begins_locally": False})
    async with running_worker(client, task_queue, fakes):
        handle = await client.start_workflow(DeployWorkflow.run, op, id=op.workflow_id, task_queue=task_queue)
        assert await outcome(handle) == "active"
        history = await handle.fetch_history()

    assert fakes.names() == RELEASED
    assert markers(history) == ["core_patch", "core_local_activity"]


async def test_a_registry_that_does_not_answer_at_begin_is_retried_in_a_step_of_its_own(client, task_queue):
    """No digest from begin_deployment (the registry was away): the
    resolve_image_digest step runs, retries the transient failure as before,
    and the digest it finds is the one recorded."""
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("resolve_image_digest", Fail(errors.RegistryUnreachable("registry registry.test cannot be reached")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
        progress = await handle.query(DeployWorkflow.progress)

    assert fakes.names() == ["begin_deployment", "resolve_image_digest", "resolve_image_digest", *RELEASED[1:]]
    assert [c.outcome for c in fakes.named("resolve_image_digest")] == ["failed", "returned"]
    digest = digest_of(plan.image)
    assert [(c.input.image_ref, c.input.image_digest) for c in fakes.named("finish_deployment")] == [(f"{plan.image}@{digest}", digest)]
    assert step(progress, "resolve") == ("done", f"{plan.image}@{digest}")


async def test_a_failed_rollout_without_an_earlier_release_scales_to_zero(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes), previous=False)
    fakes.script("wait_for_rollout", Fail(errors.RolloutFailed("the rollout did not finish within 30s")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "failed"

    assert fakes.names()[-2:] == ["scale_deployment", "finish_deployment"]
    assert fakes.named("scale_deployment")[0].input.replicas == 0
    assert finished(fakes, handle.id) == [
        (
            "failed",
            "the rollout did not finish within 30s; there is no earlier deployment to restore, so the app was scaled to 0",
        )
    ]


# --- builds ---------------------------------------------------------------------------


async def test_a_git_release_builds_its_image_and_deploys_it(plain_client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes), build=git_build())
    async with running_worker(plain_client, task_queue, fakes):
        handle = await start_deploy(plain_client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
        await record(handle, "deploy-build-begins-locally")

    assert fakes.names() == [
        "begin_deployment",
        "resolve_git_commit",
        "record_build",
        "find_built_image",
        "build_image",
        "record_build",
        "apply_manifests",
        "wait_for_rollout",
        "finish_deployment",
    ]
    assert fakes.named("resolve_git_commit")[0].input.branch == "main"
    commit = fakes.named("build_image")[0].input.plan.commit
    assert commit and len(commit) == 40, "the build is of the branch head, resolved first"
    records = [c.input for c in fakes.named("record_build")]
    assert [(r.status, r.commit) for r in records] == [("building", commit), ("succeeded", commit)]
    assert fakes.named("apply_manifests")[0].input.spec.image_ref == records[1].image.reference
    assert finished(fakes, handle.id) == [("active", None)]


@pytest.mark.parametrize("build", [git_build, upload_build], ids=["git", "upload"])
async def test_a_cancelled_build_is_recorded_and_nothing_is_applied(client, task_queue, build):
    fakes = Fakes()
    plan = deployment(new_app(fakes), build=build())
    fakes.script("build_image", Block())
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        held = await fakes.started("build_image")
        await handle.cancel()
        assert await outcome(handle) == "cancelled"
        await fakes.wait_for(lambda: held.outcome is not None)
        progress = await handle.query(DeployWorkflow.progress)

    assert held.outcome == "cancelled", "the build itself is stopped"
    assert not fakes.named("apply_manifests") and not fakes.named("scale_deployment")
    records = [(c.input.status, c.input.reason) for c in fakes.named("record_build")]
    assert records[0] == ("building", None)
    assert records[-1] == ("failed", "cancelled")
    assert finished(fakes, handle.id) == [CANCELLED]
    assert step(progress, "build") == ("failed", "cancelled")


# --- live progress -----------------------------------------------------------------------


async def test_rollout_progress_signals_update_the_progress_query(client, task_queue):
    fakes = Fakes(client, desired_replicas=3)
    plan = deployment(new_app(fakes))
    one_ready, two_ready = asyncio.Event(), asyncio.Event()

    async def rolling_out(request):
        await fakes.signal_progress(1, 3)
        await one_ready.wait()
        await fakes.signal_progress(2, 3)
        await two_ready.wait()
        return fakes.rollout_result()

    fakes.script("wait_for_rollout", rolling_out)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)

        async def rollout_step():
            return step(await handle.query(DeployWorkflow.progress), "rollout") if fakes.named("wait_for_rollout") else None

        await eventually(rollout_step, ("running", "1/3 ready"))
        one_ready.set()
        await eventually(rollout_step, ("running", "2/3 ready"))
        two_ready.set()
        assert await outcome(handle) == "active"
        assert step(await handle.query(DeployWorkflow.progress), "rollout") == ("done", "3/3 ready")
