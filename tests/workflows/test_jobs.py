"""The release phase and scheduled runs in the workflows, with faked
activities: where the release command runs in a release, that a failed one
applies nothing, that the Schedules follow a release once it is active, and
what a scheduled run does with a missing entry or a failed Job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowFailureError

from conveyor.domain import errors
from conveyor.domain.commands import CronEntry
from conveyor.domain.jobs import CronRunInput, JobKind, JobSpec, RunJobInput
from tests.support.workflow_runs import PREVIOUS, app_operation, deployment, finished, new_app, outcome, running_worker, start_deploy, step
from tests.workflows.fakes import Block, Fail, Fakes
from tests.workflows.test_workflows import record
from workflows.cron import CronRunWorkflow
from workflows.delete import DeleteAppWorkflow
from workflows.deploy import DeployWorkflow

NIGHTLY = CronEntry(name="nightly", schedule="0 3 * * *", command=["python", "nightly.py"])


async def test_the_release_command_runs_after_the_image_is_known_and_before_anything_is_applied(plain_client, task_queue):
    client = plain_client
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    plan.spec.release_command = "python manage.py migrate"
    hold = Block()
    fakes.script("run_job", hold)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        call = await fakes.started("run_job")
        assert step(await handle.query(DeployWorkflow.progress), "release") == ("running", "/bin/sh -c python manage.py migrate")
        hold.release()
        assert await outcome(handle) == "active"
        progress = await handle.query(DeployWorkflow.progress)
        await record(handle, "deploy-release-command")
    assert fakes.names(handle.id) == ["begin_deployment", "run_job", "apply_manifests", "wait_for_rollout", "finish_deployment"]
    job: JobSpec = call.input.job
    assert job.kind == JobKind.RELEASE and job.argv == ["/bin/sh", "-c", "python manage.py migrate"]
    # The image the release resolved, its env, one Job name per deployment.
    assert job.image_ref == fakes.named("apply_manifests")[0].input.spec.image_ref and job.env == plan.spec.env
    assert job.job_name.endswith(plan.deployment_id.removeprefix("dep_")) and job.deadline_seconds == plan.release_timeout_seconds
    assert [s["name"] for s in progress] == ["resolve", "release", "apply", "rollout", "finalize"]


async def test_a_failed_release_command_fails_the_release_and_applies_nothing(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    plan.spec.release_command = ["migrate"]
    fakes.script("run_job", Fail(errors.JobFailed("the release command failed (exit code 1); its last lines:\nno such table")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "failed"
        progress = await handle.query(DeployWorkflow.progress)
    assert "apply_manifests" not in fakes.names(handle.id) and "scale_deployment" not in fakes.names(handle.id)
    [(status, reason)] = finished(fakes, handle.id)
    assert status == "failed" and reason.startswith("the release command failed (exit code 1)") and "no such table" in reason
    assert reason.endswith(f"the previous deployment {PREVIOUS} keeps serving")
    assert step(progress, "release")[0] == "failed"


async def test_a_cancel_during_the_release_command_cancels_the_release_and_restores_nothing(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    plan.spec.release_command = "migrate"
    fakes.script("run_job", Block())
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        await fakes.started("run_job")
        await handle.cancel()
        assert await outcome(handle) == "cancelled"
        progress = await handle.query(DeployWorkflow.progress)
    assert fakes.named("run_job")[0].outcome == "cancelled"
    assert "apply_manifests" not in fakes.names(handle.id)
    [(status, reason)] = finished(fakes, handle.id)
    assert status == "cancelled" and reason.endswith(f"the previous deployment {PREVIOUS} keeps serving")
    assert step(progress, "release") == ("failed", "cancelled")


async def test_a_restart_rolls_the_release_again_without_its_release_command(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes)).model_copy(update={"operation": "restart"})
    plan.spec.release_command = "migrate"
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
    assert "run_job" not in fakes.names(handle.id)


async def test_a_release_without_a_release_command_runs_no_job(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
    assert "run_job" not in fakes.names(handle.id) and "sync_schedules" not in fakes.names(handle.id)


async def test_the_schedules_follow_a_release_once_it_is_active_and_are_removed_with_its_cron(plain_client, task_queue):
    client = plain_client
    fakes = Fakes()
    app_id = new_app(fakes)
    with_cron = deployment(app_id)
    with_cron.spec.cron = [NIGHTLY]
    without = deployment(app_id)
    assert without.previous is not None
    without.previous.cron = [NIGHTLY]
    failing = deployment(app_id)
    failing.spec.cron = [NIGHTLY]
    fakes.script("wait_for_rollout", Fail(errors.RolloutFailed("pod web-1 is crash-looping")))
    async with running_worker(client, task_queue, fakes):
        # A release that fails changes no Schedule.
        assert await outcome(await start_deploy(client, task_queue, fakes, failing)) == "failed"
        first = await start_deploy(client, task_queue, fakes, with_cron)
        assert await outcome(first) == "active"
        progress = await first.query(DeployWorkflow.progress)
        second = await start_deploy(client, task_queue, fakes, without)
        assert await outcome(second) == "active"
        await record(first, "deploy-schedules")
    # Once rolled out, before it is recorded active: an active release has its Schedules.
    assert fakes.names(first.id)[-3:] == ["wait_for_rollout", "sync_schedules", "finish_deployment"]
    [synced, emptied] = [c.input for c in fakes.named("sync_schedules")]
    assert synced.entries == [NIGHTLY] and synced.deployment_id == with_cron.deployment_id
    assert emptied.entries == [] and emptied.app_id == app_id
    assert step(progress, "schedules") == ("done", f"created cron-{app_id}-nightly")


async def test_a_schedule_that_cannot_be_written_leaves_the_release_active(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    plan.spec.cron = [NIGHTLY]
    fakes.script("sync_schedules", Fail(errors.SchedulesRefused("Temporal answered INVALID_ARGUMENT")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"
        progress = await handle.query(DeployWorkflow.progress)
    assert step(progress, "schedules") == ("failed", "Temporal answered INVALID_ARGUMENT")
    assert [status for status, _ in finished(fakes, handle.id)] == ["active"]


async def test_a_cancel_while_the_schedules_are_written_is_too_late_the_release_is_out(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    plan.spec.cron = [NIGHTLY]
    hold = Block()
    fakes.script("sync_schedules", hold)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        await fakes.started("sync_schedules")
        await handle.cancel()
        assert await outcome(handle) == "active"
    assert "apply_manifests" in fakes.names(handle.id) and len(fakes.named("apply_manifests", handle.id)) == 1
    assert [status for status, _ in finished(fakes, handle.id)] == ["active"]


def cron_run(app_id: str) -> RunJobInput:
    plan = deployment(app_id)
    job = JobSpec(
        kind=JobKind.CRON, app_id=app_id, project_id=plan.project_id, slug="web", namespace="conveyor-default",
        job_name="web-nightly-0123456789", name="nightly", image_ref="registry.test/web:2@sha256:" + "2" * 64,
        argv=NIGHTLY.argv, deadline_seconds=60, deployment_id=plan.deployment_id, trigger="schedule",
    )
    return RunJobInput(release=plan.spec, job=job, deadline_at=datetime.now(UTC) + timedelta(minutes=2))


async def start_run(client, task_queue: str, app_id: str):
    request = CronRunInput(app_id=app_id, project_id="proj_default", name="nightly")
    return await client.start_workflow(CronRunWorkflow.run, request, id=f"cron-{app_id}-nightly-{uuid.uuid4().hex[:6]}", task_queue=task_queue)


async def test_a_scheduled_run_runs_the_job_of_the_active_release(plain_client, task_queue):
    client = plain_client
    fakes = Fakes()
    app_id = new_app(fakes)
    fakes.cron_jobs[(app_id, "nightly")] = cron_run(app_id)
    async with running_worker(client, task_queue, fakes):
        handle = await start_run(client, task_queue, app_id)
        assert (await handle.result()).startswith("succeeded: run_")
        await record(handle, "cron-run")
    assert fakes.names(handle.id) == ["load_cron_job", "run_job"]
    assert fakes.named("run_job")[0].input == fakes.cron_jobs[(app_id, "nightly")]


async def test_a_run_without_its_entry_is_skipped_and_a_failed_job_fails_the_run(client, task_queue):
    fakes = Fakes()
    app_id = new_app(fakes)
    async with running_worker(client, task_queue, fakes):
        skipped = await start_run(client, task_queue, app_id)
        assert (await skipped.result()).startswith("skipped: no cron entry nightly")
        fakes.cron_jobs[(app_id, "nightly")] = cron_run(app_id)
        fakes.script("run_job", Fail(errors.JobFailed("the scheduled job nightly failed (exit code 1)")))
        failed = await start_run(client, task_queue, app_id)
        with pytest.raises(WorkflowFailureError) as caught:
            await failed.result()
    assert "exit code 1" in str(caught.value.cause)
    assert fakes.names(skipped.id) == ["load_cron_job"]


async def test_a_delete_removes_the_schedules_then_the_jobs_then_the_workload(plain_client, task_queue):
    fakes = Fakes()
    app_id = new_app(fakes)
    op = app_operation("delete", app_id)
    async with running_worker(plain_client, task_queue, fakes):
        handle = await plain_client.start_workflow(DeleteAppWorkflow.run, op, id=op.workflow_id, task_queue=task_queue)
        assert await handle.result() == "deleted"
        await record(handle, "delete-schedules-and-jobs")
    assert fakes.names(handle.id) == ["load_app_target", "delete_app_schedules", "delete_app_jobs", "delete_app_resources", "remove_app"]
    [jobs_input] = [c.input for c in fakes.named("delete_app_jobs")]
    assert (jobs_input.app_id, jobs_input.namespace) == (app_id, "proj-wf")
