"""An app's one-off Jobs: the release command and scheduled runs, both run
here the same way. `run_job` records the run, creates its env Secret and
Job (a deterministic name per run), waits for it, keeps the end of its log
and records the outcome. A run already recorded as ended is not run again,
and a Job that exists already is waited for, never created a second time:
a retry, a worker killed mid-run or a Temporal reset finds what the first
attempt left. (Blocking clients: synchronous activities on the thread pool.)
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.workloads import KubeActivities, api_error, concise_errors
from conveyor.clients.db.models import App, Deployment, JobRun, Project
from conveyor.clients.db.queries import active_deployment, release_spec
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain import errors, jobs, manifests
from conveyor.domain.ids import new_id, utcnow
from conveyor.domain.jobs import AppJobsInput, JobKind, JobOutcome, JobRunStatus, JobSpec, LoadCronJobInput, RunJobInput
from conveyor.domain.vocabulary import AppStatus
from conveyor.settings import Settings

# How often the wait reads the Job (and heartbeats).
POLL_SECONDS = 0.5
# The wait gives the Job this much past its own deadline to be marked failed.
DEADLINE_SLACK_SECONDS = 60
NAMESPACE_KINDS = ("Namespace", "LimitRange", "ResourceQuota")


class JobActivities:
    def __init__(self, settings: Settings, kube: KubeActivities):
        self.settings = settings
        self.url = settings.effective_database_url
        self.kube = kube

    # --- the run ------------------------------------------------------------------

    @activity.defn(name="run_job")
    @concise_errors
    def run_job(self, request: RunJobInput) -> JobOutcome:
        job = request.job
        recorded = self._recorded(job.job_name)
        if recorded is not None and recorded.status in jobs.JOB_FINISHED:
            # Ran already (a retry, a reset): its outcome stands, nothing runs again.
            return self._ended(recorded, recorded_before=True)
        if job.kind == JobKind.RELEASE:
            self.kube.guard(job.deployment_id)
        self._prepare_namespace(request)
        run_id = self._record_start(job)
        secret, manifest = jobs.render(job)
        self._create(job, secret, manifest)
        try:
            status, why = self._wait(job, request.deadline_at.timestamp())
        except CancelledError:
            # The worker raises the cancel in this thread (at a heartbeat):
            # the Job stops with its release or run.
            with activity.shield_thread_cancel_exception():
                self._cancelled(job, run_id)
            raise
        exit_code, message, output = self._result(job)
        reason = None
        if status == JobRunStatus.FAILED:
            what = "the release command" if job.kind == JobKind.RELEASE else f"the scheduled job {job.name}"
            reason = jobs.failure_reason(what, exit_code, message or why, output)
        ended = self._record_end(run_id, status, reason, exit_code, output)
        return self._ended(ended, recorded_before=False)

    def _ended(self, run: JobRun, recorded_before: bool) -> JobOutcome:
        outcome = JobOutcome(
            run_id=run.id,
            status=JobRunStatus(run.status),
            output=run.output or "",
            reason=run.reason,
            exit_code=run.exit_code,
            recorded=recorded_before,
        )
        if outcome.status == JobRunStatus.FAILED:
            raise errors.JobFailed(outcome.reason or "the Job failed")
        return outcome

    def _prepare_namespace(self, request: RunJobInput) -> None:
        """The app's namespace, its project's LimitRange and ResourceQuota and
        the worker's RoleBindings in it, as a release applies them: a release
        command runs before the first release has applied anything."""
        objects = [o for o in manifests.render(request.release, b"") if o["kind"] in NAMESPACE_KINDS]
        bindings = manifests.role_bindings(self.settings.role_bindings, request.release.namespace)
        objects[1:1] = bindings
        # The project's registry credentials: the Job's image may be private.
        objects.insert(1 + len(bindings), manifests.pull_secret(request.release.namespace, self.kube.docker_config(request.release.project_id)))
        settle = bool(bindings) and activity.info().attempt == 1
        dynamic = self.kube.dynamic
        for obj in objects:
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            self.kube.server_side_apply(resource, obj, settle)

    def _create(self, job: JobSpec, secret: dict[str, Any], manifest: dict[str, Any]) -> str:
        """The env Secret, then the Job (or the one that exists: never a
        second), then the Secret owned by the Job. Returns the Job's uid."""
        core, batch = client.CoreV1Api(self.kube.api), client.BatchV1Api(self.kube.api)
        secrets = self.kube.dynamic.resources.get(api_version="v1", kind="Secret")
        try:
            existing = batch.read_namespaced_job(job.job_name, job.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"reading Job {job.job_name}") from None
            existing = None
        if existing is None:
            self.kube.server_side_apply(secrets, secret, settle=False)
            try:
                existing = batch.create_namespaced_job(job.namespace, manifest)  # type: ignore[arg-type]
            except ApiException as exc:
                if exc.status != 409:
                    raise api_error(exc, f"creating Job {job.job_name}") from None
                existing = batch.read_namespaced_job(job.job_name, job.namespace)
        uid = str(existing.metadata.uid) if existing.metadata is not None else ""
        try:
            core.read_namespaced_secret(jobs.env_secret_name(job.job_name), job.namespace)
            self.kube.server_side_apply(secrets, jobs.owned_by(secret, uid, job.job_name), settle=False)
        except ApiException as exc:
            # Gone with a Job that ended long ago (its TTL): nothing to own.
            if exc.status != 404:
                raise api_error(exc, f"reading Secret {jobs.env_secret_name(job.job_name)}") from None
        return str(uid)

    def _wait(self, job: JobSpec, give_up_at: float) -> tuple[JobRunStatus, str | None]:
        batch = client.BatchV1Api(self.kube.api)
        while True:
            if activity.is_cancelled():
                raise CancelledError(f"the wait for Job {job.job_name} was cancelled")
            try:
                found = batch.read_namespaced_job(job.job_name, job.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return JobRunStatus.FAILED, "its Job was deleted before it ended"
                raise api_error(exc, f"reading Job {job.job_name}") from None
            state, why = jobs.job_state(self.kube.api.sanitize_for_serialization(found))  # type: ignore[no-untyped-call]
            activity.heartbeat(state.value)
            if state != JobRunStatus.RUNNING:
                return state, why
            if time.time() > give_up_at:
                return JobRunStatus.FAILED, f"it did not end within {job.deadline_seconds}s"
            time.sleep(POLL_SECONDS)

    def _cancelled(self, job: JobSpec, run_id: str) -> None:
        """What a cancel leaves: the run recorded as cancelled, then no Job
        (what it did so far stays done). The row first: once the Job is gone,
        whoever reads the run sees it ended, never a run still "running"."""
        self._record_end(run_id, JobRunStatus.FAILED, "cancelled: its Job was deleted before it ended", None, "")
        self._delete_job(job)

    def _pod(self, job: JobSpec) -> dict[str, Any] | None:
        core = client.CoreV1Api(self.kube.api)
        try:
            pods = core.list_namespaced_pod(job.namespace, label_selector=f"batch.kubernetes.io/job-name={job.job_name}").items
        except ApiException as exc:
            raise api_error(exc, f"listing the pods of Job {job.job_name}") from None
        if not pods:
            return None
        found: dict[str, Any] = self.kube.api.sanitize_for_serialization(pods[-1])  # type: ignore[no-untyped-call]
        return found

    def _result(self, job: JobSpec) -> tuple[int | None, str | None, str]:
        """The container's exit code and message, and the end of its log."""
        pod = self._pod(job)
        if pod is None:
            return None, None, ""
        exit_code, message = jobs.container_exit(pod)
        try:
            text = client.CoreV1Api(self.kube.api).read_namespaced_pod_log(
                pod["metadata"]["name"], job.namespace, container=jobs.CONTAINER, tail_lines=jobs.OUTPUT_LINES, _request_timeout=30
            )
        except ApiException as exc:
            text = f"(the log could not be read: Kubernetes answered {exc.status} {exc.reason})"
        return exit_code, message, jobs.tail(str(text or ""))

    def _delete_job(self, job: JobSpec) -> None:
        try:
            client.BatchV1Api(self.kube.api).delete_namespaced_job(
                job.job_name, job.namespace, body=client.V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"deleting Job {job.job_name}") from None

    # --- records ------------------------------------------------------------------

    def _recorded(self, job_name: str) -> JobRun | None:
        with read_scope(self.url) as session:
            run = session.scalars(select(JobRun).where(JobRun.job_name == job_name)).first()
            if run is not None:
                session.expunge(run)
            return run

    def _record_start(self, job: JobSpec) -> str:
        """The run's row (once: a repeated attempt finds it)."""
        for _ in range(2):
            try:
                with session_scope(self.url) as session:
                    run = session.scalars(select(JobRun).where(JobRun.job_name == job.job_name)).first()
                    if run is not None:
                        return run.id
                    run = JobRun(
                        id=new_id("run"),
                        app_id=job.app_id,
                        project_id=job.project_id,
                        kind=job.kind.value,
                        name=job.name,
                        job_name=job.job_name,
                        deployment_id=job.deployment_id,
                        image_ref=job.image_ref,
                        command={"argv": list(job.argv)},
                        trigger=job.trigger,
                        workflow_id=job.workflow_id or activity.info().workflow_id,
                        status=JobRunStatus.RUNNING.value,
                        created_at=utcnow(),
                        started_at=utcnow(),
                    )
                    session.add(run)
                    return run.id
            except IntegrityError:
                continue  # written by a concurrent attempt: read it
        raise errors.KubernetesUnavailable(f"the run of Job {job.job_name} could not be recorded")  # pragma: no cover

    def _record_end(self, run_id: str, status: JobRunStatus, reason: str | None, exit_code: int | None, output: str) -> JobRun:
        with session_scope(self.url) as session:
            found = session.get(JobRun, run_id)
            if found is None:
                # Deleted with its app meanwhile: nothing is left to record in.
                return JobRun(id=run_id, status=status.value, reason=reason, exit_code=exit_code, output=output)
            run = found
            if run.status not in jobs.JOB_FINISHED:
                run.status, run.reason, run.exit_code, run.output = status.value, reason, exit_code, output
                run.finished_at = utcnow()
            session.flush()
            session.expunge(run)
            return run

    # --- scheduled runs -----------------------------------------------------------

    @activity.defn(name="load_cron_job")
    def load_cron_job(self, request: LoadCronJobInput) -> RunJobInput:
        """A scheduled run of the app's active release: its image, env and the
        entry as that release has it. The Job's name comes from the run's
        workflow id, so that a retry or a reset of the run finds its Job."""
        workflow_id = activity.info().workflow_id or ""
        with read_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                raise errors.JobNotRunnable(f"app {request.app_id} no longer exists")
            if app.status in (AppStatus.DELETING, AppStatus.DELETE_FAILED):
                raise errors.JobNotRunnable(f"app {app.name} is being deleted")
            active: Deployment | None = active_deployment(session, app.id)
            if active is None:
                raise errors.JobNotRunnable(f"app {app.name} has no active release to run {request.name} from")
            project = session.get_one(Project, app.project_id)
            spec = release_spec(app, project, active, self.settings, app.replicas)
        entry = next((e for e in spec.cron or [] if e.name == request.name), None)
        if entry is None:
            raise errors.JobNotRunnable(
                f"the active release of {spec.name} ({spec.deployment_id}) has no cron entry {request.name}; its schedule is removed with the next release"
            )
        job = JobSpec.of(
            spec, JobKind.CRON, entry.name, jobs.cron_job_name(spec.slug, entry.name, workflow_id), entry.argv, entry.deadline_seconds,
            trigger="schedule", workflow_id=workflow_id,
        )
        return RunJobInput(release=spec, job=job, deadline_at=utcnow() + timedelta(seconds=entry.deadline_seconds + DEADLINE_SLACK_SECONDS))

    # --- the app's delete ---------------------------------------------------------

    @activity.defn(name="delete_app_jobs")
    @concise_errors
    def delete_app_jobs(self, request: AppJobsInput) -> list[str]:
        """Delete the app's Jobs (their pods and Secrets go with them) and wait until their pods are gone."""
        batch, core = client.BatchV1Api(self.kube.api), client.CoreV1Api(self.kube.api)
        selector = jobs.app_jobs_selector(request.app_id)
        try:
            found = batch.list_namespaced_job(request.namespace, label_selector=selector).items
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise api_error(exc, "listing the app's Jobs") from None
        names = [str(j.metadata.name) for j in found if j.metadata is not None]
        for name in names:
            try:
                batch.delete_namespaced_job(name, request.namespace, body=client.V1DeleteOptions(propagation_policy="Foreground"))
            except ApiException as exc:
                if exc.status != 404:
                    raise api_error(exc, f"deleting Job {name}") from None
        # A Job's env Secret is owned by it once the Job exists; one whose Job
        # was never created (refused, or the worker died between the two) has
        # no owner to take it along.
        try:
            core.delete_collection_namespaced_secret(request.namespace, label_selector=selector)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, "deleting the app's Job Secrets") from None
        deadline = time.monotonic() + request.timeout_seconds
        while True:
            left = batch.list_namespaced_job(request.namespace, label_selector=selector).items
            pods = core.list_namespaced_pod(request.namespace, label_selector=selector).items
            remaining = [f"Job/{j.metadata.name}" for j in left if j.metadata] + [f"Pod/{p.metadata.name}" for p in pods if p.metadata]
            activity.heartbeat(remaining)
            if not remaining:
                return [f"Job/{name}" for name in names]
            if time.monotonic() > deadline:
                raise errors.DeletionStuck(f"still present after {request.timeout_seconds}s: {', '.join(remaining)}")
            time.sleep(0.5)
