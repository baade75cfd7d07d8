"""The release command and scheduled jobs end to end: API → Temporal →
worker → Kubernetes (KWOK ends a Job's pod by a word in its command:
conveyor/domain/markers.py). Asserted on the Jobs and Secrets in the
cluster, the Schedules in Temporal and what the API shows."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kubernetes import client as k8s
from sqlalchemy import select
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.jobs import JobActivities
from activities.workloads import KubeActivities
from conveyor.clients.db.models import App, Deployment, JobRun, Project
from conveyor.clients.db.queries import release_spec
from conveyor.clients.db.session import read_scope
from conveyor.clients.temporal_client import connect
from conveyor.domain import jobs, manifests
from conveyor.domain.commands import as_argv
from conveyor.domain.ids import utcnow
from conveyor.domain.jobs import JobKind, JobSpec, RunJobInput
from conveyor.stack import cluster
from conveyor.stack.platform import Platform
from conveyor.stack.processes import ProcessTable
from tests.support.waiting import eventually

NIGHTLY = {"name": "nightly", "schedule": "0 3 * * *", "command": ["python", "nightly.py"], "timezone": "Europe/Berlin"}


def namespace_of(settings, project_id: str = "proj_default") -> str:
    with read_scope(settings.effective_database_url) as session:
        return session.get_one(Project, project_id).namespace


def release_job(kube_api, settings, app: dict, dep_id: str) -> k8s.V1Job:
    return k8s.BatchV1Api(kube_api).read_namespaced_job(jobs.release_job_name(app["slug"], dep_id), namespace_of(settings))


def job_pods(kube_api, settings, job_name: str) -> list:
    return k8s.CoreV1Api(kube_api).list_namespaced_pod(namespace_of(settings), label_selector=f"batch.kubernetes.io/job-name={job_name}").items


def runs_of(settings, deployment_id: str) -> list[JobRun]:
    with read_scope(settings.effective_database_url) as session:
        return list(session.scalars(select(JobRun).where(JobRun.deployment_id == deployment_id, JobRun.kind == "release")))


def decoded(secret: k8s.V1Secret) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


# --- the release phase -------------------------------------------------------------


def test_the_release_command_runs_once_as_a_job_of_the_release_image_with_its_env_before_the_deployment(api, kube_api, settings):
    app = api.create_app(env={"DB_PASSWORD": "pw-1", "MODE": "first"}, release_command="python manage.py migrate")
    [first] = api.deployments(app["id"])
    active = api.wait_active(app["id"], first["id"])
    namespace = namespace_of(settings)
    job = release_job(kube_api, settings, app, first["id"])
    [container] = job.spec.template.spec.containers
    assert container.image == active["image_ref"] and container.command == ["/bin/sh", "-c", "python manage.py migrate"]
    assert container.env is None and container.env_from[0].secret_ref.name == jobs.env_secret_name(job.metadata.name)
    assert job.status.succeeded == 1 and job.spec.backoff_limit == 0
    secret = k8s.CoreV1Api(kube_api).read_namespaced_secret(jobs.env_secret_name(job.metadata.name), namespace)
    assert decoded(secret) == {"DB_PASSWORD": "pw-1", "MODE": "first"}
    assert [(o.kind, o.uid) for o in secret.metadata.owner_references] == [("Job", job.metadata.uid)]
    # It ended before the app's Deployment was first written.
    deployment = k8s.AppsV1Api(kube_api).read_namespaced_deployment(app["slug"], namespace)
    assert job.status.completion_time <= deployment.metadata.creation_timestamp
    steps = [s["name"] for s in active["progress"]]
    assert steps.index("resolve") < steps.index("release") < steps.index("apply")
    assert [s for s in active["progress"] if s["name"] == "release"][0]["state"] == "done"
    log = api.call("GET", f"/apps/{app['id']}/deployments/{first['id']}/release-log", 200).text
    assert log.splitlines() == cluster.JOB_LOG_LINES
    [run] = api.call("GET", f"/apps/{app['id']}/jobs", 200).json()
    assert (run["kind"], run["status"], run["deployment_id"], run["exit_code"]) == ("release", "succeeded", first["id"], 0)
    # The pod is none of the app's: the app's pods and status do not count it.
    assert len(api.call("GET", f"/apps/{app['id']}/pods", 200).json()) == 1


def test_a_failed_release_command_fails_the_deployment_with_its_last_lines_and_nothing_else_changes(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    namespace = namespace_of(settings)
    apps_api, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    before = apps_api.read_namespaced_deployment(app["slug"], namespace)
    env_before = decoded(core.read_namespaced_secret(manifests.env_secret_name(app["slug"]), namespace))
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"GREETING": "changed"}, "release_command": ["migrate", "kwok-job-fail"]})
    dep = api.deployments(app["id"])[0]
    failed = api.wait_finished(app["id"], dep["id"])
    assert failed["status"] == "failed", failed
    assert failed["reason"].startswith("the release command failed (exit code 1")
    assert cluster.JOB_LOG_LINES[-1] in failed["reason"] and f"the previous deployment {first['id']} keeps serving" in failed["reason"]
    assert [s["state"] for s in failed["progress"] if s["name"] == "release"] == ["failed"]
    assert "apply" not in [s["name"] for s in failed["progress"]]
    # Nothing of the release reached the app: its Deployment and env Secret are as they were, and it serves.
    after = apps_api.read_namespaced_deployment(app["slug"], namespace)
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == first["id"]
    assert decoded(core.read_namespaced_secret(manifests.env_secret_name(app["slug"]), namespace)) == env_before == {"GREETING": "hello"}
    assert api.wait_ready(app["id"], 2)
    job = release_job(kube_api, settings, app, dep["id"])
    assert job.status.failed == 1 and job.status.succeeded is None
    log = api.call("GET", f"/apps/{app['id']}/deployments/{dep['id']}/release-log", 200).text
    assert log.splitlines() == cluster.JOB_LOG_LINES
    [run] = api.call("GET", f"/apps/{app['id']}/jobs", 200, params={"kind": "release"}).json()
    assert run["status"] == "failed" and run["exit_code"] == 1 and run["reason"] in failed["reason"]
    # The job's own Secret held the new env; the app's never did.
    assert decoded(core.read_namespaced_secret(jobs.env_secret_name(job.metadata.name), namespace)) == {"GREETING": "changed"}


def test_the_release_command_does_not_run_twice_under_a_kill_of_the_worker_while_its_job_runs(api, kube_api, settings, platform):
    app = api.create_app(release_command="./migrate kwok-job-slow")
    [dep] = api.deployments(app["id"])
    job_name = jobs.release_job_name(app["slug"], dep["id"])
    # The Job runs (its pod is Running: KWOK ends it after CONVEYOR_POD_JOB_SLOW_DELAY_MS).
    eventually(lambda: any(p.status.phase == "Running" for p in job_pods(kube_api, settings, job_name)), 30, what="the release command's pod to run")
    uid = release_job(kube_api, settings, app, dep["id"]).metadata.uid
    worker = ProcessTable(settings.home / "run", settings.home / "logs").get("worker")
    assert worker is not None
    os.killpg(worker.pid, signal.SIGKILL)
    Platform(settings).up()
    active = api.wait_active(app["id"], dep["id"], timeout=120)
    job = release_job(kube_api, settings, app, dep["id"])
    assert job.metadata.uid == uid and job.status.succeeded == 1
    assert len(job_pods(kube_api, settings, job_name)) == 1
    [run] = runs_of(settings, dep["id"])
    assert run.status == "succeeded"
    assert [s["state"] for s in active["progress"] if s["name"] == "release"] == ["done"]
    # A second attempt on the new worker finished it: the same Job, waited for.
    assert release_attempts(settings, dep["workflow_id"]) >= 2


def release_attempts(settings, workflow_id: str) -> int:
    """The attempt of the release command's activity that completed."""

    async def read() -> int:
        client = await connect(settings)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        scheduled = {e.event_id for e in history.events if e.HasField("activity_task_scheduled_event_attributes") and e.activity_task_scheduled_event_attributes.activity_type.name == "run_job"}
        return max(
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.HasField("activity_task_started_event_attributes") and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
        )

    return asyncio.run(read())


def test_a_repeated_run_after_success_runs_nothing_again(api, kube_api, settings, platform):
    """An activity retried after it succeeded (a lost reply), or a Temporal
    reset of the release to before its release command: the recorded
    outcome stands, the Job is not created again."""
    app = api.create_app(release_command="./migrate", image_url=f"{api.registry}/demo/web:v1-neverready", progress_deadline_seconds=300)
    [dep] = api.deployments(app["id"])
    eventually(
        lambda: any(s["name"] == "rollout" for s in api.deployment(app["id"], dep["id"])["progress"] or []),
        60,
        what="the release to pass its release command",
    )
    job_name = jobs.release_job_name(app["slug"], dep["id"])
    uid = release_job(kube_api, settings, app, dep["id"]).metadata.uid
    [recorded] = runs_of(settings, dep["id"])

    # The activity again, as a retry runs it, on the real cluster and database.
    with read_scope(settings.effective_database_url) as session:
        row = session.get_one(Deployment, dep["id"])
        spec = release_spec(session.get_one(App, app["id"]), session.get_one(Project, "proj_default"), row, settings, 1)
    job = JobSpec(
        kind=JobKind.RELEASE, app_id=app["id"], project_id="proj_default", slug=app["slug"], namespace=spec.namespace,
        job_name=job_name, name="release", image_ref=spec.image_ref, argv=as_argv("./migrate"), env=spec.env,
        deadline_seconds=60, deployment_id=dep["id"],
    )
    again = ActivityEnvironment().run(JobActivities(settings, KubeActivities(settings)).run_job, RunJobInput(release=spec, job=job, deadline_at=utcnow()))
    assert again.recorded and again.run_id == recorded.id and again.status == "succeeded"

    # A reset of the workflow to its start: it runs the release again up to the rollout.
    workflow_id = dep["workflow_id"]
    temporal = f"{sys.prefix}/bin/temporal"
    subprocess.run(
        [temporal, "workflow", "reset", "--workflow-id", workflow_id, "--type", "FirstWorkflowTask", "--reason", "test", "--address", settings.temporal_address, "--yes"],
        check=True, capture_output=True, text=True, timeout=60,
    )

    def released_again():
        progress = api.deployment(app["id"], dep["id"])["progress"] or []
        return [s["detail"] for s in progress if s["name"] == "release" and s["state"] == "done" and "recorded before" in s["detail"]]

    eventually(released_again, 60, what="the reset release to pass its release command again")
    assert release_job(kube_api, settings, app, dep["id"]).metadata.uid == uid
    assert len(job_pods(kube_api, settings, job_name)) == 1 and len(runs_of(settings, dep["id"])) == 1
    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    assert api.wait_finished(app["id"], dep["id"])["status"] == "cancelled"


def test_a_cancel_while_the_release_command_runs_deletes_its_job_and_changes_nothing_else(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"release_command": "./migrate kwok-job-slow"})
    dep = api.deployments(app["id"])[0]
    job_name = jobs.release_job_name(app["slug"], dep["id"])
    eventually(lambda: any(p.status.phase == "Running" for p in job_pods(kube_api, settings, job_name)), 30, what="the release command's pod to run")
    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    cancelled = api.wait_finished(app["id"], dep["id"], timeout=60)
    assert cancelled["status"] == "cancelled" and f"the previous deployment {first['id']} keeps serving" in cancelled["reason"]

    def job_gone() -> bool:
        try:
            release_job(kube_api, settings, app, dep["id"])
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    # The worker learns of the cancel at the activity's next heartbeat (at most 8 s: 80% of its timeout).
    eventually(job_gone, 30, what="the cancelled release command's Job to be deleted")
    [run] = runs_of(settings, dep["id"])
    assert run.status == "failed" and run.reason.startswith("cancelled")
    deployment = k8s.AppsV1Api(kube_api).read_namespaced_deployment(app["slug"], namespace_of(settings))
    assert deployment.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == first["id"]


# --- scheduled jobs ------------------------------------------------------------


def schedule(settings, schedule_id: str):
    async def describe():
        client = await connect(settings)
        try:
            return await client.get_schedule_handle(schedule_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    return asyncio.run(describe())


def pause(settings, schedule_id: str) -> None:
    async def run():
        client = await connect(settings)
        await client.get_schedule_handle(schedule_id).pause(note="paused by an operator")

    asyncio.run(run())


def next_run_in(described, zone: str) -> str:
    return described.info.next_action_times[0].astimezone(ZoneInfo(zone)).strftime("%H:%M")


def test_a_cron_entry_is_a_schedule_whose_trigger_runs_its_job_and_that_follows_the_releases(api, kube_api, settings):
    app = api.create_app(env={"MODE": "one"}, cron=[NIGHTLY])
    [first] = api.deployments(app["id"])
    active = api.wait_active(app["id"], first["id"])
    schedule_id = jobs.schedule_id(app["id"], "nightly")
    described = schedule(settings, schedule_id)
    assert described is not None
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP and described.schedule.policy.catchup_window == timedelta(minutes=15)
    assert described.schedule.spec.time_zone_name == "Europe/Berlin" and next_run_in(described, "Europe/Berlin") == "03:00"
    action = described.schedule.action
    assert action.workflow == "CronRunWorkflow" and action.execution_timeout is not None
    assert {p.key.name: p.value for p in described.typed_search_attributes}.items() >= {"AppId": app["id"], "Operation": "cron"}.items()

    api.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger", 202)

    def succeeded_run():
        runs = api.call("GET", f"/apps/{app['id']}/jobs", 200, params={"kind": "cron"}).json()
        return runs and runs[0]["status"] == "succeeded" and runs[0]

    run = eventually(succeeded_run, 60, what="the triggered run to succeed")
    assert run["name"] == "nightly" and run["image_ref"] == active["image_ref"] and run["command"] == ["python", "nightly.py"]
    assert run["workflow_id"].startswith(schedule_id + "-")
    assert api.call("GET", f"/apps/{app['id']}/jobs/{run['id']}/log", 200).text.splitlines() == cluster.JOB_LOG_LINES
    job = k8s.BatchV1Api(kube_api).read_namespaced_job(run["job_name"], namespace_of(settings))
    assert job.metadata.labels[jobs.LABEL_CRON] == "nightly" and job.spec.template.spec.containers[0].image == active["image_ref"]
    secret = k8s.CoreV1Api(kube_api).read_namespaced_secret(jobs.env_secret_name(run["job_name"]), namespace_of(settings))
    assert decoded(secret) == {"MODE": "one"}
    # The run is a workflow of its own in the Web UI, with the schedule's id and the app's.
    assert schedule(settings, schedule_id).info.recent_actions[-1].action.workflow_id == run["workflow_id"]

    # A change of `cron` updates the schedule (paused stays paused), adds and removes.
    pause(settings, schedule_id)
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"cron": [{**NIGHTLY, "schedule": "30 4 * * *"}, {**NIGHTLY, "name": "weekly", "schedule": "0 5 * * sun", "timezone": "UTC"}]})
    second = api.deployments(app["id"])[0]
    api.wait_active(app["id"], second["id"])
    nightly, weekly = schedule(settings, schedule_id), schedule(settings, jobs.schedule_id(app["id"], "weekly"))
    assert nightly.schedule.state.paused and weekly is not None and not weekly.schedule.state.paused
    assert nightly.schedule.spec.time_zone_name == "Europe/Berlin" and nightly.schedule.spec.calendars[0].hour[0].start == 4
    assert weekly.schedule.spec.time_zone_name == "UTC" and next_run_in(weekly, "UTC") == "05:00"
    assert datetime.fromisoformat(str(weekly.info.next_action_times[0])).weekday() == 6
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"cron": [{**NIGHTLY, "name": "weekly", "schedule": "0 5 * * sun", "timezone": "UTC"}]})
    third = api.deployments(app["id"])[0]
    api.wait_active(app["id"], third["id"])
    assert schedule(settings, schedule_id) is None and schedule(settings, jobs.schedule_id(app["id"], "weekly")) is not None
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"cron": []})
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert schedule(settings, jobs.schedule_id(app["id"], "weekly")) is None
    assert api.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger").status_code == 404


def test_deleting_an_app_deletes_its_schedules_and_jobs(api, kube_api, settings):
    app = api.create_app(cron=[NIGHTLY], release_command="./migrate")
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    schedule_id = jobs.schedule_id(app["id"], "nightly")
    assert schedule(settings, schedule_id) is not None
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be gone")
    assert schedule(settings, schedule_id) is None
    namespace = namespace_of(settings)
    selector = jobs.app_jobs_selector(app["id"])
    assert not k8s.BatchV1Api(kube_api).list_namespaced_job(namespace, label_selector=selector).items
    assert not k8s.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=selector).items
    eventually(lambda: not k8s.CoreV1Api(kube_api).list_namespaced_secret(namespace, label_selector=selector).items, 30, what="the Job's Secret to go with it")


def test_a_failed_scheduled_run_is_listed_failed_with_its_last_lines_and_fails_its_workflow(api, settings):
    app = api.create_app(cron=[{**NIGHTLY, "command": "./nightly kwok-job-fail", "deadline_seconds": 120}])
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    api.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger", 202)

    def failed_run():
        runs = api.call("GET", f"/apps/{app['id']}/jobs", 200, params={"name": "nightly"}).json()
        return runs and runs[0]["status"] == "failed" and runs[0]

    run = eventually(failed_run, 60, what="the triggered run to fail")
    assert run["exit_code"] == 1 and run["reason"].startswith("the scheduled job nightly failed (exit code 1")
    assert cluster.JOB_LOG_LINES[-1] in run["reason"]
    assert api.call("GET", f"/apps/{app['id']}/jobs/{run['id']}/log", 200).text.splitlines() == cluster.JOB_LOG_LINES

    async def workflow_status():
        client = await connect(settings)
        return (await client.get_workflow_handle(run["workflow_id"]).describe()).status.name

    assert eventually(lambda: asyncio.run(workflow_status()) == "FAILED" and True, 30, what="the run's workflow to fail")
