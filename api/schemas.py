"""Request and response bodies of the Apps API (field names as in the contract)."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from conveyor.domain import images, registry_auth
from conveyor.domain.commands import CommandField, CronEntries
from conveyor.domain.domains import Domains
from conveyor.domain.workload import MAX_PROCESSES, Autoscaling, Probe, Process, ProcessName, Resources

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_ENV_ENTRIES = 200
MAX_ENV_KEY = 253  # the longest key a Kubernetes ConfigMap or Secret takes
MAX_ENV_VALUE = 32 * 1024  # UTF-8 bytes of one value
# UTF-8 bytes of all keys and values of an app: well under Kubernetes' 1 MiB
# per object and Temporal's payload limits, where the env travels twice
# (the release and the one it replaces).
MAX_ENV_TOTAL = 256 * 1024
# Characters that a one-line field never holds: NUL (PostgreSQL refuses it in
# text) and line breaks (they would split a build step or a log line).
_LINE_BREAKS_OR_NUL = re.compile(r"[\x00\r\n\u2028\u2029\x85]")
# git check-ref-format, in short; a leading '-' would also read as an option.
_BAD_BRANCH = re.compile(r"^[-/.]|[/.]$|\.\.|//|@\{|\.lock$|/\.|[\x00-\x20\x7f~^:?*\[\\]")
# Keys whose values are masked in every response and never written to the audit log.
SECRET_HINTS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE", "DATABASE_URL", "DSN", "AUTH")
MASK = "********"

SourceType = Literal["image", "git", "upload"]


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    upper = key.upper()
    return any(hint in upper for hint in SECRET_HINTS)


def masked_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_key(k) else v) for k, v in sorted(env.items())}


def env_problem(env: dict[str, str | None]) -> str | None:
    """What is wrong with `env`, or None. Keys are named by position, never
    repeated: a refused key or value may be a secret pasted in the wrong place."""
    if len(env) > MAX_ENV_ENTRIES:
        return f"at most {MAX_ENV_ENTRIES} variables"
    total = 0
    for position, (key, value) in enumerate(env.items(), start=1):
        if len(key) > MAX_ENV_KEY or not ENV_KEY.fullmatch(key):
            return (
                f"key #{position} is not a valid environment variable name: letters, digits and _, "
                f"not starting with a digit, at most {MAX_ENV_KEY} characters"
            )
        size = len(value.encode()) if value is not None else 0
        if size > MAX_ENV_VALUE:
            return f"the value of key #{position} is longer than {MAX_ENV_VALUE} bytes"
        if value is not None and "\x00" in value:
            return f"the value of key #{position} contains a NUL character"
        total += len(key) + size
    if total > MAX_ENV_TOTAL:
        return f"keys and values together must be at most {MAX_ENV_TOTAL} bytes"
    return None


def _check_env(env: dict | None) -> dict | None:
    problem = env_problem(env) if env is not None else None
    if problem is not None:
        raise ValueError(problem)
    return env


def _single_line(value: str | None) -> str | None:
    if value is not None and _LINE_BREAKS_OR_NUL.search(value):
        raise ValueError("must be one line: no line breaks or NUL characters")
    return value


def _check_branch(value: str | None) -> str | None:
    if value is not None and _BAD_BRANCH.search(value):
        raise ValueError(
            "must be a git branch name: no spaces, control characters, ~ ^ : ? * [ \\, '..', '//' or '@{', "
            "not starting with '-', '/' or '.', not ending with '/', '.' or '.lock'"
        )
    return value


def _check_image(value: str | None) -> str | None:
    if value is not None:
        try:
            images.parse(value)
        except images.InvalidImageReference as exc:
            raise ValueError(f"not a valid image reference: {exc}") from exc
    return value


ImageUrl = Annotated[str, AfterValidator(_check_image)]
Env = Annotated[dict[str, StrictStr], AfterValidator(_check_env)]
EnvPatch = Annotated[dict[str, StrictStr | None], AfterValidator(_check_env)]
OneLine = Annotated[str, AfterValidator(_single_line)]
Branch = Annotated[str, AfterValidator(_check_branch)]


# `?process=`: which process's Deployment a read is about (web unless named).
ProcessQuery = Annotated[
    str | None, Query(max_length=30, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", description="The process (default web)")
]


class WorkloadFields(BaseModel):
    """Health checks, resources and autoscaling (conveyor/domain/workload.py). On a PATCH,
    each one given replaces the app's whole; null removes it."""

    healthcheck: Probe | None = Field(
        default=None, description="Readiness check; without one, a TCP check on the port. Rollouts wait for it"
    )
    liveness: Probe | None = Field(default=None, description="Liveness check: the container restarts when it fails")
    startup: Probe | None = Field(default=None, description="Startup check: the other checks wait until it passes")
    resources: Resources | None = Field(
        default=None, description="CPU and memory requests and limits of each pod, in Kubernetes quantities"
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="A HorizontalPodAutoscaler on CPU use; `replicas` is then the starting count (needs a CPU request)",
    )
    processes: Annotated[dict[ProcessName, Process], Field(max_length=MAX_PROCESSES)] | None = Field(
        default=None,
        description="Processes besides web (the app's own fields), each its own Deployment <slug>-<name> without Service or Ingress; "
        "git and upload apps also run every other line of their Procfile",
    )
    domains: Domains | None = Field(
        default=None,
        description="Custom domains (lowercase DNS names, at most 20) the Ingress serves besides <slug>.<base domain>; "
        "each may belong to one app only, in any project. A change is a release",
    )
    redirect_http: bool | None = Field(
        default=None, description="Redirect plain HTTP to HTTPS (the ingress controller's annotations); null: the controller's default"
    )
    release_command: CommandField | None = Field(
        default=None,
        description="Run once per release as a Job from the release's image with its env, before any Deployment changes "
        "(a string runs as /bin/sh -c; or an argv list). If it fails, the release fails and nothing else changes",
    )
    cron: CronEntries | None = Field(
        default=None,
        description="Scheduled jobs: [{name, schedule, command, timezone, deadline_seconds}], each a Temporal Schedule "
        "running `command` as a Job from the app's running image with its env; [] or null removes them",
    )


class AppCreate(WorkloadFields):
    model_config = ConfigDict(extra="forbid")

    name: OneLine = Field(min_length=1, max_length=63, description="Application name (used for subdomain)")
    source_type: SourceType = Field(default="image", description="Source type: image, git, or upload")
    image_url: ImageUrl | None = Field(default=None, description="Docker image URL (required for image source type)")
    repo_url: str | None = Field(default=None, max_length=1024, description="Git repository URL (required for git source type)")
    repo_branch: Branch | None = Field(default=None, max_length=255, description="Git branch to deploy (default: main)")
    build_command: OneLine | None = Field(
        default=None, max_length=4096, description="Build command for git/upload sources (one line)"
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port the application listens on")
    replicas: int = Field(default=1, ge=0, le=100_000, description="Number of replicas (default: 1)")
    env: Env = Field(default_factory=dict, description="Environment variables as key-value pairs")
    template_id: OneLine | None = Field(
        default=None, max_length=100, description="Marketplace template ID for one-click deploys"
    )
    progress_deadline_seconds: int | None = Field(
        default=None, ge=10, le=3600, description="How long a rollout may take before it fails (default 600)"
    )

    @field_validator("name")
    @classmethod
    def _name_makes_a_slug(cls, value: str) -> str:
        slug = slugify(value)
        if not slug or not DNS_LABEL.match(slug) or len(slug) > 63:
            raise ValueError(
                "must make a DNS label: letters, digits and dashes, starting with a letter, at most 63 characters"
            )
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> AppCreate:
        if self.source_type == "image" and not self.image_url and not self.template_id:
            raise ValueError("image_url is required when source_type is image")
        if self.source_type == "git" and not self.repo_url:
            raise ValueError("repo_url is required when source_type is git")
        return self


class AppUpdate(WorkloadFields):
    """Only the fields given change. `env` is merged: a key set to null is removed."""

    model_config = ConfigDict(extra="forbid")

    image_url: ImageUrl | None = Field(default=None, description="New image; a new deployment follows")
    repo_branch: Branch | None = Field(default=None, max_length=255)
    build_command: OneLine | None = Field(default=None, max_length=4096, description="One line")
    port: int | None = Field(default=None, ge=1, le=65535, description="New port; a new deployment follows")
    replicas: int | None = Field(default=None, ge=0, le=100_000, description="New replica count; scales without a new deployment")
    env: EnvPatch | None = Field(
        default=None, description="Variables to set (null removes one); a new deployment follows"
    )
    progress_deadline_seconds: int | None = Field(default=None, ge=10, le=3600)
    processes: Annotated[dict[ProcessName, Process | None], Field(max_length=MAX_PROCESSES)] | None = Field(  # type: ignore[assignment]
        default=None,
        description="Merged by name: null removes a process, {\"replicas\": n} alone scales it (not a release), "
        "any other object replaces its definition (a release)",
    )


class AppPublic(WorkloadFields):
    id: str = Field(description="app_…")
    project_id: str
    name: str
    slug: str
    source_type: SourceType
    image_url: str | None
    repo_url: str | None = None
    repo_branch: str | None = None
    build_command: str | None = None
    replicas: int
    port: int
    env: dict[str, str] = Field(description="Environment; values of secret-looking keys are masked")
    status: str = Field(description="created, deploying, running, failed, stopped, deleting or delete_failed")
    progress_deadline_seconds: int
    last_deploy_at: str | None
    created_at: str
    running_image: str | None = Field(
        default=None,
        description="The digest-pinned image the active deployment runs (tag@sha256:…); a config change redeploys it",
    )
    status_reason: str | None = Field(default=None, description="Why the app is in its status (delete_failed: why)")


class DeploymentStep(BaseModel):
    name: str = Field(description="resolve, build, apply, rollout, finalize or restore")
    state: str = Field(description="running, done or failed")
    detail: str = ""
    started_at: str
    updated_at: str


class DeploymentPublic(WorkloadFields):
    id: str = Field(description="dep_…")
    app_id: str
    number: int = Field(description="Release number within the app (v1, v2, …)")
    operation: str = Field(description="deploy, update, restart or rollback")
    status: str = Field(description="queued, pending, building, deploying, active, superseded, failed or cancelled")
    image: str | None = Field(description="The image as asked for")
    image_ref: str | None = Field(description="The exact reference deployed: tag@sha256 digest")
    image_digest: str | None
    port: int
    replicas: int | None
    env_keys: list[str] = Field(description="Names of the environment variables of this release")
    rollback_of: str | None
    retry_of: str | None = Field(default=None, description="The failed or cancelled deployment this one retries")
    build_id: str | None = Field(default=None, description="bld_…: the build that made the image (git and upload apps)")
    source_commit: str | None = Field(default=None, description="The git commit deployed (git apps)")
    reason: str | None = Field(
        description="Why it failed or was cancelled; while it runs or waits, what holds it up (`retrying: …`, `queued behind dep_… (…)`)"
    )
    workflow_id: str = Field(description="Temporal workflow id, searchable in the Web UI")
    created_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: list[DeploymentStep] | None = None


class PodStatus(BaseModel):
    name: str
    phase: str
    ready: bool


class AutoscalerStatus(BaseModel):
    """The app's HorizontalPodAutoscaler as the cluster reports it."""

    min_replicas: int
    max_replicas: int
    current_replicas: int = Field(description="pods the autoscaler counts now")
    desired_replicas: int = Field(description="pods it asks the Deployment for")
    current_cpu_percent: int | None = Field(description="average CPU use in percent of the request; null until measured")


class AppStatusPublic(BaseModel):
    """The app's rollout as the cluster reports it (its status in Conveyor is `AppPublic.status`)."""

    desired_replicas: int
    ready_replicas: int
    pods: list[PodStatus]
    autoscaler: AutoscalerStatus | None = Field(default=None, description="with autoscaling on")
    drift: bool = Field(default=False, description="the live Deployment differs from its active release (changed by hand); the next release puts it back")
    drift_fields: list[str] = Field(default_factory=list, description="what differs: replicas, image, ports, env, readinessProbe, livenessProbe, startupProbe, resources, containers")


class PodDetail(PodStatus):
    restarts: int
    node: str | None
    image: str | None
    image_digest: str | None = Field(description="sha256 digest the pod runs")
    created_at: str | None
    age_seconds: int | None
    reason: str | None = Field(description="Why the pod is not ready, when it is not")


class AuditPublic(BaseModel):
    action: str
    user: str
    details: str
    created_at: str
    deployment_id: str | None = None


class EventPublic(BaseModel):
    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    object: str = Field(description="Kind/name of the object the event is about")
    count: int
    first_seen: str | None
    last_seen: str | None


class Measure(BaseModel):
    available: bool
    unit: str
    total: float | None = None
    reason: str | None = Field(default=None, description="Why the figure is not available")


class PodMetrics(BaseModel):
    name: str
    cpu_millicores: float | None
    memory_bytes: int | None
    disk_bytes: int | None
    network_rx_bytes: int | None
    network_tx_bytes: int | None


class AppMetrics(BaseModel):
    timestamp: str | None
    window_seconds: float | None
    cpu: Measure
    memory: Measure
    disk: Measure
    network_rx: Measure
    network_tx: Measure
    pods: list[PodMetrics]


class CertificateUpload(BaseModel):
    """PUT /apps/{id}/domains/{domain}/certificate: PEM, unencrypted key."""

    model_config = ConfigDict(extra="forbid")

    certificate: StrictStr = Field(description="PEM certificate chain: the domain's certificate first, then its intermediates")
    key: StrictStr = Field(description="PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC1; no passphrase). Never shown again")


class CertificateState(BaseModel):
    """Where a domain's certificate comes from, and how it stands."""

    source: Literal["none", "uploaded", "cert-manager"]
    state: str = Field(
        description="none; uploaded (expired once past expires_at); cert-manager: ready, issuing (its Ready condition is not True) "
        "or pending (no Certificate yet, or no cert-manager)"
    )
    secret_name: str | None = Field(default=None, description="The kubernetes.io/tls Secret the Ingress names")
    expires_at: str | None = Field(default=None, description="notAfter of the certificate")
    names: list[str] | None = Field(default=None, description="uploaded: the certificate's DNS names")
    issuer: str | None = Field(default=None, description="uploaded: its issuer; cert-manager: the ClusterIssuer")
    fingerprint: str | None = Field(default=None, description="uploaded: sha256 of the certificate (DER), hex")
    uploaded_at: str | None = None
    uploaded_by: str | None = None
    message: str | None = Field(default=None, description="cert-manager: the Ready condition's message")


class DomainPublic(BaseModel):
    domain: str
    certificate: CertificateState
    deployment_id: str | None = Field(
        default=None, description="After an upload or delete: the release that brings it to the cluster (none when nothing runs yet)"
    )


class AppDomainsPublic(BaseModel):
    default_host: str = Field(description="<slug>.<base domain>, always served")
    redirect_http: bool | None
    domains: list[DomainPublic]


class JobRunPublic(BaseModel):
    """One run of a Job of the app: its release command or a scheduled job."""

    id: str = Field(description="run_…")
    app_id: str
    kind: str = Field(description="release (the release command of a deployment) or cron (a scheduled job)")
    name: str = Field(description="The cron entry's name, or `release`")
    status: str = Field(description="running, succeeded or failed")
    deployment_id: str | None = Field(description="The release whose image and env it ran")
    image_ref: str | None
    command: list[str]
    exit_code: int | None
    reason: str | None = Field(description="Why it failed, with its last lines")
    job_name: str = Field(description="The Kubernetes Job")
    workflow_id: str | None = Field(description="The Temporal workflow that ran it (a scheduled run: cron-<app>-<entry>-<time>)")
    created_at: str
    started_at: str | None
    finished_at: str | None


class TriggeredRun(BaseModel):
    name: str
    schedule_id: str = Field(description="The Temporal Schedule that starts the run (Web UI: Schedules)")


def _check_registry(value: str) -> str:
    try:
        return registry_auth.registry_key(value)
    except registry_auth.InvalidRegistry as exc:
        raise ValueError(f"not a registry host: {exc}") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def _check_username(value: str) -> str:
    if _CONTROL.search(value) or ":" in value:
        raise ValueError("must be one line without control characters or ':'")
    return value


def _check_password(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be one line without control characters")
    return value


class RegistryCredentialCreate(BaseModel):
    """A project's login to one registry; a second one for the same registry replaces it."""

    model_config = ConfigDict(extra="forbid")

    registry: Annotated[StrictStr, Field(min_length=1, max_length=300), AfterValidator(_check_registry)] = Field(
        description="host or host:port (docker.io for Docker Hub)"
    )
    username: Annotated[StrictStr, Field(min_length=1, max_length=registry_auth.MAX_USERNAME), AfterValidator(_check_username)]
    password: Annotated[StrictStr, Field(min_length=1, max_length=registry_auth.MAX_PASSWORD), AfterValidator(_check_password)] = Field(
        description="password or token; stored encrypted, never shown again"
    )


class RegistryCredentialPublic(BaseModel):
    id: str = Field(description="rc_…")
    registry: str
    username: str
    created_by: str
    created_at: str
    updated_at: str
