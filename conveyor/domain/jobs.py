"""One-off Kubernetes Jobs of an app (pure): the release command that runs
once before a release changes any Deployment, and the scheduled jobs
(`cron`) that Temporal Schedules start.

Both run the same way (`activities/jobs.py`): a Job from a release's image
with the release's env (from a Secret of the Job's own, owned by the Job, so
the app's live Secret is never touched), waited for, its log kept as the
run's output. This module holds their names, the Job's manifest and how
its state is read; the fields as the API takes them are in `commands.py`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from conveyor.domain.commands import CronEntry
from conveyor.domain.manifests import LABEL_APP_ID, MANAGED_BY, PULL_SECRET
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.workload import Resources

# --- runs --------------------------------------------------------------------------


class JobKind(StrEnum):
    RELEASE = "release"
    CRON = "cron"


class JobRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


JOB_FINISHED = frozenset({JobRunStatus.SUCCEEDED, JobRunStatus.FAILED})

LABEL_JOB_KIND = "conveyor.dev/job-kind"
LABEL_CRON = "conveyor.dev/cron"
LABEL_PART_OF = "app.kubernetes.io/part-of"
# The release whose image and env the Job runs. Not the Deployment's
# `conveyor.dev/deployment-id`, and no `app.kubernetes.io/name`: a Job's pod
# is no pod of the app's Deployment, its Service or its rollout.
ANNOTATION_RELEASE = "conveyor.dev/release"
CONTAINER = "job"
# What a run's output keeps: the end of the Job's log.
OUTPUT_LINES = 1000
OUTPUT_BYTES = 64 * 1024
# How many lines of the output a failure's reason quotes.
REASON_LINES = 5
# Finished Jobs (and their pods and Secrets) stay this long for `kubectl
# logs`; the run's output is in the database anyway.
FINISHED_JOB_TTL_SECONDS = 24 * 3600


class JobSpec(BaseModel):
    """One run of one Job: what the activity creates, waits for and records."""

    kind: JobKind
    app_id: str
    project_id: str
    slug: str
    namespace: str
    # The Kubernetes Job (and its env Secret) name: deterministic per run, so
    # that a retried or reset activity finds the Job it created.
    job_name: str
    # The cron entry's name, or "release".
    name: str
    image_ref: str
    argv: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None
    deadline_seconds: int
    # The release that runs it (the release command), or whose image a cron run uses.
    deployment_id: str
    # How a cron run started: "schedule" or "trigger"; "release" for a release command.
    trigger: str = "release"
    # The workflow running it (a scheduled run's id, or deploy-dep_…).
    workflow_id: str = ""


    @classmethod
    def of(cls, spec: ReleaseSpec, kind: JobKind, name: str, job_name: str, argv: list[str], deadline_seconds: int, **marks: str) -> JobSpec:
        """A run of `argv` from a release: its image, env and resources, in its app's namespace."""
        return cls(
            kind=kind,
            app_id=spec.app_id,
            project_id=spec.project_id,
            slug=spec.slug,
            namespace=spec.namespace,
            job_name=job_name,
            name=name,
            image_ref=spec.image_ref,
            argv=argv,
            env=spec.env,
            resources=spec.resources,
            deadline_seconds=deadline_seconds,
            deployment_id=spec.deployment_id,
            **marks,
        )


class JobOutcome(BaseModel):
    run_id: str
    status: JobRunStatus
    output: str = ""
    reason: str | None = None
    exit_code: int | None = None
    # The outcome was read from the database: nothing ran this time.
    recorded: bool = False


def _short_hash(text: str, size: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def release_job_name(slug: str, deployment_id: str) -> str:
    """`<slug>-release-<deployment>`: one Job per deployment, ever."""
    return f"{slug[:37].rstrip('-')}-release-{deployment_id.removeprefix('dep_')[:12]}"


def cron_job_name(slug: str, entry: str, run_key: str) -> str:
    """`<slug>-<entry>-<hash of the run>`: one Job per scheduled run (its
    workflow id: the same across activity retries and workflow resets)."""
    return f"{slug[:24].rstrip('-')}-{entry[:24].rstrip('-')}-{_short_hash(run_key)}"


def schedule_id(app_id: str, entry: str) -> str:
    """The Temporal Schedule of one cron entry (its runs' workflow ids start with it)."""
    return f"cron-{app_id}-{entry}"


def env_secret_name(job_name: str) -> str:
    return f"{job_name}-env"


def tail(text: str, lines: int = OUTPUT_LINES, size: int = OUTPUT_BYTES) -> str:
    """The end of a log: at most `lines` lines and `size` bytes, whole lines."""
    kept = text.splitlines()[-lines:]
    out = "\n".join(kept)
    while len(out.encode()) > size and len(kept) > 1:
        kept = kept[1:]
        out = "\n".join(kept)
    return out[-size:]


def failure_reason(what: str, exit_code: int | None, message: str | None, output: str) -> str:
    """Why a run failed, with the last lines of its output (never its env)."""
    why = f"exit code {exit_code}" if exit_code is not None else (message or "it did not finish")
    if exit_code is not None and message:
        why += f": {message}"
    last = "\n".join(output.splitlines()[-REASON_LINES:])
    return f"{what} failed ({why})" + (f"; its last lines:\n{last}" if last else "; it wrote no output")


def labels(job: JobSpec) -> dict[str, str]:
    found = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_APP_ID: job.app_id,
        LABEL_PART_OF: job.slug,
        LABEL_JOB_KIND: job.kind.value,
    }
    if job.kind == JobKind.CRON:
        found[LABEL_CRON] = job.name
    return found


def app_jobs_selector(app_id: str) -> str:
    """Every Job of one app (deleted with it)."""
    return f"{LABEL_APP_ID}={app_id},{LABEL_JOB_KIND}"


def render(job: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job's env Secret and the Job. The Secret is the Job's own (its
    owner is set to the Job once the Job exists, so both go together): the
    app's live Secret is left as it is whatever the run does. One pod, never
    restarted or retried by Kubernetes: Conveyor decides about a second run,
    and for a release command there is none."""
    own = labels(job)
    annotations = {ANNOTATION_RELEASE: job.deployment_id}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": env_secret_name(job.job_name), "namespace": job.namespace, "labels": own},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(job.env.items())},
    }
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job.job_name, "namespace": job.namespace, "labels": own, "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job.deadline_seconds,
            "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": own, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    # The image may be private: the namespace's pull Secret, as every Deployment names it.
                    "imagePullSecrets": [{"name": PULL_SECRET}],
                    "containers": [
                        {
                            "name": CONTAINER,
                            "image": job.image_ref,
                            "command": list(job.argv),
                            "envFrom": [{"secretRef": {"name": env_secret_name(job.job_name)}}],
                            "resources": job.resources.render() if job.resources else {},
                        }
                    ],
                },
            },
        },
    }
    return secret, manifest


def owned_by(secret: dict[str, Any], job_uid: str, job_name: str) -> dict[str, Any]:
    """The Secret with the Job as its owner: Kubernetes deletes it with the Job."""
    meta = {
        **secret["metadata"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid, "blockOwnerDeletion": False}],
    }
    return {**secret, "metadata": meta}


def job_state(job: dict[str, Any]) -> tuple[JobRunStatus, str | None]:
    """Whether a Job (as the API returns it) has ended, by its conditions:
    (running, None), (succeeded, None) or (failed, the condition's reason)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return JobRunStatus.SUCCEEDED, None
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason") or "Failed"
            message = condition.get("message")
            return JobRunStatus.FAILED, f"{reason}: {message}" if message else reason
    return JobRunStatus.RUNNING, None


def container_exit(pod: dict[str, Any]) -> tuple[int | None, str | None]:
    """The Job container's exit code and message, once it has terminated."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if status.get("name") == CONTAINER and terminated:
            return terminated.get("exitCode"), terminated.get("message") or terminated.get("reason")
    return None, None


# --- workflow and activity payloads -------------------------------------------------


class RunJobInput(BaseModel):
    # The release the Job runs from: its namespace (made ready first), image and env.
    release: ReleaseSpec
    job: JobSpec
    # The wait gives up then, whatever attempt it is in (fixed by the workflow).
    deadline_at: datetime


class CronRunInput(BaseModel):
    """What a cron entry's Temporal Schedule starts its workflow with."""

    app_id: str
    project_id: str
    name: str


class LoadCronJobInput(BaseModel):
    app_id: str
    name: str


class SyncSchedulesInput(BaseModel):
    """Make the app's Temporal Schedules what its active release's `cron` says."""

    app_id: str
    project_id: str
    app_name: str
    deployment_id: str
    entries: list[CronEntry] = Field(default_factory=list)


class AppJobsInput(BaseModel):
    app_id: str
    namespace: str
    timeout_seconds: int = 120
