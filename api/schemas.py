"""Request and response bodies of the Apps API (field names as in the contract)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from conveyor import images

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_ENV_ENTRIES = 200
MAX_ENV_VALUE = 32 * 1024
# Keys whose values are masked in every response and never written to the audit log.
SECRET_HINTS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE", "DATABASE_URL", "DSN", "AUTH")
MASK = "********"

SourceType = Literal["image", "git", "upload"]


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug)


def is_secret_key(key: str) -> bool:
    upper = key.upper()
    return any(hint in upper for hint in SECRET_HINTS)


def masked_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_key(k) else v) for k, v in sorted(env.items())}


def _check_env_keys(env: dict[str, object] | None) -> dict | None:
    if env is None:
        return None
    if len(env) > MAX_ENV_ENTRIES:
        raise ValueError(f"at most {MAX_ENV_ENTRIES} variables")
    for key, value in env.items():
        if not ENV_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name (letters, digits, _; not starting with a digit)")
        if isinstance(value, str) and len(value) > MAX_ENV_VALUE:
            raise ValueError(f"the value of {key} is longer than {MAX_ENV_VALUE} characters")
    return env


def _check_image(value: str | None) -> str | None:
    if value is not None:
        try:
            images.parse(value)
        except images.InvalidImageReference as exc:
            raise ValueError(f"not a valid image reference: {exc}") from exc
    return value


ImageUrl = Annotated[str, AfterValidator(_check_image)]
Env = Annotated[dict[str, StrictStr], AfterValidator(_check_env_keys)]
EnvPatch = Annotated[dict[str, StrictStr | None], AfterValidator(_check_env_keys)]


class AppCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, description="Application name (used for subdomain)")
    source_type: SourceType = Field(default="image", description="Source type: image, git, or upload")
    image_url: ImageUrl | None = Field(default=None, description="Docker image URL (required for image source type)")
    repo_url: str | None = Field(default=None, max_length=1024, description="Git repository URL (required for git source type)")
    repo_branch: str | None = Field(default=None, max_length=255, description="Git branch to deploy (default: main)")
    build_command: str | None = Field(default=None, max_length=4096, description="Build command for git/upload sources")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the application listens on")
    replicas: int = Field(default=1, ge=0, description="Number of replicas (default: 1)")
    env: Env = Field(default_factory=dict, description="Environment variables as key-value pairs")
    template_id: str | None = Field(default=None, description="Marketplace template ID for one-click deploys")
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


class AppUpdate(BaseModel):
    """Only the fields given change. `env` is merged: a key set to null is removed."""

    model_config = ConfigDict(extra="forbid")

    image_url: ImageUrl | None = Field(default=None, description="New image; a new deployment follows")
    repo_branch: str | None = Field(default=None, max_length=255)
    build_command: str | None = Field(default=None, max_length=4096)
    port: int | None = Field(default=None, ge=1, le=65535, description="New port; a new deployment follows")
    replicas: int | None = Field(default=None, ge=0, description="New replica count; scales without a new deployment")
    env: EnvPatch | None = Field(
        default=None, description="Variables to set (null removes one); a new deployment follows"
    )
    progress_deadline_seconds: int | None = Field(default=None, ge=10, le=3600)


class AppPublic(BaseModel):
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
    status: str = Field(description="deploying, running, failed, stopped or deleting")
    progress_deadline_seconds: int
    last_deploy_at: str | None
    created_at: str


class DeploymentStep(BaseModel):
    name: str = Field(description="resolve, build, apply, rollout, finalize or restore")
    state: str = Field(description="running, done or failed")
    detail: str = ""
    started_at: str
    updated_at: str


class DeploymentPublic(BaseModel):
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
    reason: str | None = Field(description="Why it failed or was cancelled")
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


class AppStatus(BaseModel):
    desired_replicas: int
    ready_replicas: int
    pods: list[PodStatus]


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
