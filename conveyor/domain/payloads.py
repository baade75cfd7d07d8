"""Workflow and activity inputs/outputs (one model per call, so fields can be
added later). Serialised by the pydantic data converter everywhere."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from conveyor.domain.commands import CommandField, CronEntry
from conveyor.domain.vocabulary import BuildStatus, DeploymentStatus, OperationKind
from conveyor.domain.workload import Autoscaling, Probe, Process, ProjectLimits, Resources


class Operation(BaseModel):
    """One cluster-changing request of an app: run on its own, or in the app's lane."""

    kind: OperationKind
    app_id: str
    project_id: str
    workflow_id: str
    summary: str
    deployment_id: str | None = None
    replicas: int | None = None
    previous_replicas: int | None = None
    user: str = "system"
    # A scale of a process other than web (None: web).
    process: str | None = None
    # W3C trace context of the request that asked for it, so the operation's
    # workflow joins that request's trace even when the lane runs already.
    trace_context: dict[str, str] = Field(default_factory=dict)
    # Set on every release queued since begin_deployment runs as a local
    # activity: its workflow takes that path because its input says so, not
    # through `workflow.patched` (whose marker, and the TemporalChangeVersion
    # search-attribute upsert that comes with it, cost two history events
    # and a visibility write per release). False in operations queued
    # before (outbox rows, lane queues): their histories decide by the patch.
    begins_locally: bool = False
    # Where it runs (conveyor/clients/db/turns.py): its own workflow started
    # at once (`direct`: it had the app's turn), or the app's lane, where
    # `lane_seq` is its place. Both unset in operations queued before turns.
    direct: bool = False
    lane_seq: int = 0


class LaneInput(BaseModel):
    app_id: str
    project_id: str
    pending: list[Operation] = Field(default_factory=list)
    # Lanes started since turns take the app's turn before each operation and
    # give it back when they have run them all; `seq` is the last place
    # (Operation.lane_seq) the run had received. An older lane run keeps the
    # way it started with (its history replays unchanged).
    turns: bool = False
    seq: int = 0


class TurnInput(BaseModel):
    """The app's lane asks for, or gives back, the app's turn."""

    app_id: str
    # For a delete: the operation holding the turn is cancelled (a delete supersedes it).
    supersede: bool = False
    # release: the last place in the lane the lane has received.
    seq: int = 0


class ReleaseSpec(BaseModel):
    """Everything needed to render an app's manifests for one deployment."""

    app_id: str
    project_id: str
    deployment_id: str
    name: str
    slug: str
    namespace: str
    image_ref: str
    port: int
    replicas: int
    env: dict[str, str] = Field(default_factory=dict)
    progress_deadline_seconds: int = 600
    base_domain: str = "apps.localhost"
    restarted_at: str | None = None
    # Health checks and resources (absent in releases recorded before them:
    # the TCP readiness check and no resources, as those releases ran).
    healthcheck: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    resources: Resources | None = None
    # A HorizontalPodAutoscaler; `replicas` is then the count the activity found live (or the starting count).
    autoscaling: Autoscaling | None = None
    # Run as a Job before anything of the release is applied (None in
    # releases recorded before it: old histories never take that path).
    release_command: CommandField | None = None
    # Scheduled jobs, made Temporal Schedules once this release is active.
    cron: list[CronEntry] | None = None
    # The project's LimitRange and ResourceQuota, applied with its namespace.
    limits: ProjectLimits | None = None
    # Processes other than web, each its own Deployment, with their counts
    # now (a Procfile's lines filled in once the image is known).
    processes: dict[str, Process] | None = None
    # Custom domains (one Ingress rule each, beside the default host) and
    # plain HTTP redirected to HTTPS (None: no annotation, the controller's default).
    domains: list[str] | None = None
    redirect_http: bool | None = None
    # TLS: the domains with an uploaded certificate at release time (their
    # Secrets are written from the database by the apply activity: the key
    # never travels in a payload), the ClusterIssuer cert-manager issues the
    # others' from, and the annotations that redirect HTTP.
    uploaded_certificates: list[str] | None = None
    tls_cluster_issuer: str | None = None
    redirect_annotations: list[str] | None = None


class BeginDeploymentInput(BaseModel):
    deployment_id: str
    # Also resolve the image's tag when the plan needs it (an image app's
    # deploy), so that the release takes no separate round trip for it
    # (False in histories recorded before).
    resolve_image: bool = False


class BuildPlan(BaseModel):
    """How to get an image for a deployment of a git or upload app."""

    build_id: str
    source_type: str  # git | upload
    repo_url: str | None = None
    branch: str | None = None
    commit: str | None = None
    upload_path: str | None = None  # rows before the sources moved to the registry
    source_ref: str | None = None  # the uploaded tarball: repository@sha256:… in the platform's registry
    build_command: str | None = None
    log_path: str | None = None  # unused since logs moved to the database; kept so recorded histories decode
    timeout_seconds: int = 900


class DeploymentPlan(BaseModel):
    """What a deploy workflow works from, read from the database."""

    deployment_id: str
    app_id: str
    project_id: str
    operation: OperationKind
    status: DeploymentStatus
    stuck_seconds: int = 30
    # How long the release command may run (CONVEYOR_RELEASE_TIMEOUT_SECONDS).
    release_timeout_seconds: int = 600
    image: str | None
    image_ref: str | None
    spec: ReleaseSpec
    previous: ReleaseSpec | None = None
    build: BuildPlan | None = None
    # Transient failures are retried until then (None in histories recorded
    # before deployments had a deadline).
    deadline: datetime | None = None
    # The image's digest, resolved by begin_deployment when asked to; None
    # when it was not asked, not needed, or the registry did not answer (the
    # workflow then resolves it in a step of its own, which retries).
    resolved: ResolvedImage | None = None


class ResolveImageInput(BaseModel):
    image: str
    # Whose registry credentials to resolve with (the activity reads them
    # from the database; None in histories from before credentials).
    project_id: str | None = None


class ResolvedImage(BaseModel):
    image: str
    digest: str
    # tag@digest: pinned bits, tag kept for people (and the KWOK markers).
    reference: str


class RecordImageInput(BaseModel):
    deployment_id: str
    image_ref: str
    image_digest: str


class ApplyInput(BaseModel):
    spec: ReleaseSpec
    # The deployment on whose behalf the cluster is written: the write is
    # refused once that deployment has ended (see KubeActivities.guard).
    on_behalf_of: str | None = None


class RolloutInput(BaseModel):
    namespace: str
    name: str
    deployment_id: str | None = None
    deadline_seconds: int
    stuck_seconds: int
    # When the wait gives up, whatever attempt it is in (None: counted from the
    # first attempt's heartbeat, as before).
    deadline_at: datetime | None = None
    # Signal the calling workflow as pods become ready (DeployWorkflow.rollout_progress).
    report_progress: bool = False


class RolloutProgress(BaseModel):
    ready: int
    desired: int
    message: str = ""
    # The Deployment (one per process); "" from workers before processes.
    name: str = ""


class RolloutResult(BaseModel):
    ready_replicas: int
    desired_replicas: int
    message: str


class FinishDeploymentInput(BaseModel):
    deployment_id: str
    status: DeploymentStatus  # active | failed | cancelled
    reason: str | None = None
    user: str = "system"
    # The digest the tag resolved to, when this deployment resolved one.
    image_ref: str | None = None
    image_digest: str | None = None
    # The workflow's progress steps as they stand with this outcome (kept with
    # the row, so an ended deployment's steps are read without a query).
    steps: list[dict[str, str]] | None = None


class ScaleInput(BaseModel):
    namespace: str
    name: str
    replicas: int
    on_behalf_of: str | None = None


class ScaleRecordInput(BaseModel):
    app_id: str
    replicas: int
    previous_replicas: int | None
    user: str
    outcome: str  # done | failed
    reason: str | None = None
    process: str | None = None


class AppTargetInput(BaseModel):
    app_id: str


class AppTarget(BaseModel):
    app_id: str
    project_id: str
    name: str
    slug: str
    namespace: str
    progress_deadline_seconds: int
    # The app's replica count now: the last scale request wins, whatever
    # order the lane received the requests in.
    replicas: int | None = None
    delete_timeout_seconds: int = 120
    # Each other process's count now (the same rule).
    processes: dict[str, int] = Field(default_factory=dict)


class DeleteResourcesInput(BaseModel):
    namespace: str
    slug: str
    timeout_seconds: int = 120
    # The app's processes other than web are found by it (None in histories from before them).
    app_id: str | None = None


class RemoveAppInput(BaseModel):
    app_id: str
    user: str


class DeleteFailedInput(BaseModel):
    app_id: str
    # The attempt's workflow id: a failure of an older attempt changes nothing.
    workflow_id: str
    reason: str
    user: str


class ResolveCommitInput(BaseModel):
    repo_url: str
    branch: str


class FindBuildInput(BaseModel):
    app_id: str
    commit: str


class BuildInput(BaseModel):
    plan: BuildPlan
    app_id: str
    project_id: str
    slug: str


class BuiltImage(BaseModel):
    image: str
    digest: str
    reference: str
    # The Procfile's processes other than web (name → command line).
    procfile: dict[str, str] = Field(default_factory=dict)


class RecordBuildInput(BaseModel):
    build_id: str
    deployment_id: str
    status: BuildStatus  # building | succeeded | reused | failed
    commit: str | None = None
    image: BuiltImage | None = None
    reason: str | None = None
