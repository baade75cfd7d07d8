"""Database models (SQLAlchemy 2.0, typed). Timestamps are stored as UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from conveyor.clients.db.sealed import Sealed
from conveyor.domain.ids import utcnow

# Purposes of sealed columns (bound into their ciphertext).
ENV = "env"
REGISTRY_PASSWORD = "registry-password"
IDEMPOTENT_ANSWER = "idempotent-answer"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dict[str, str]: JSON}


def _now() -> datetime:
    return utcnow()


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    namespace: Mapped[str] = mapped_column(String(63), unique=True)
    # The project's own defaults and ceilings (ProjectLimits fields it sets;
    # the rest come from the settings for all projects).
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_apps_project_name"),
        UniqueConstraint("project_id", "slug", name="uq_apps_project_slug"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    slug: Mapped[str] = mapped_column(String(63))
    source_type: Mapped[str] = mapped_column(String(10))
    image_url: Mapped[str | None] = mapped_column(String(512))
    repo_url: Mapped[str | None] = mapped_column(String(1024))
    repo_branch: Mapped[str | None] = mapped_column(String(255))
    build_command: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int] = mapped_column(Integer)
    replicas: Mapped[int] = mapped_column(Integer)
    # Sealed at rest (conveyor/clients/db/sealed.py); plaintext rows from before 0014 still read.
    env: Mapped[dict[str, str]] = mapped_column(Sealed(ENV), default=dict)
    template_id: Mapped[str | None] = mapped_column(String(100))
    progress_deadline_seconds: Mapped[int] = mapped_column(Integer)
    # Health checks and resources as asked for (conveyor.domain.workload.Workload).
    workload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    # Why the app is in its status, when that needs saying (delete_failed).
    status_reason: Mapped[str | None] = mapped_column(Text)
    # The digest-pinned image of the active deployment: what a config change redeploys.
    running_image: Mapped[str | None] = mapped_column(String(600))
    # Each DELETE attempt runs its own workflow (delete-<app id>-<attempt>).
    delete_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Whose turn it is to change the app in the cluster (conveyor/clients/db/turns.py):
    # None, the workflow id of an operation that runs on its own, or "lane".
    turn: Mapped[str | None] = mapped_column(String(200))
    # How many operations have been handed to the app's lane, and whether the
    # lane has some it has not run yet.
    lane_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lane_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_deploy_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)

    deployments: Mapped[list[Deployment]] = relationship(back_populates="app", cascade="all, delete-orphan")
    # Its claims on custom domains and its uploaded certificates: gone with the app.
    domain_claims: Mapped[list[AppDomain]] = relationship(cascade="all, delete-orphan")
    certificates: Mapped[list[AppCertificate]] = relationship(cascade="all, delete-orphan")


class AppDomain(Base):
    """A custom domain claimed by one app, in any project: the primary key
    is what makes a second claim fail, also when two requests race. Kept in
    step with the app's `domains` in the transaction that changes them."""

    __tablename__ = "app_domains"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AppCertificate(Base):
    """A certificate chain and key an admin uploaded for one domain of an app.
    The key is sealed with the payload keyring (AES-256-GCM, bound to the app
    and domain); only the worker opens it, to write the TLS Secret."""

    __tablename__ = "app_certificates"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    certificate: Mapped[str] = mapped_column(Text)
    key_sealed: Mapped[str] = mapped_column(Text)
    names: Mapped[list[str]] = mapped_column(JSON)
    issuer: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    uploaded_by: Mapped[str] = mapped_column(String(100))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_app_number", "app_id", "number", unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    # The image as asked for (tag), and the digest-pinned reference deployed.
    image: Mapped[str | None] = mapped_column(String(512))
    image_ref: Mapped[str | None] = mapped_column(String(600))
    image_digest: Mapped[str | None] = mapped_column(String(80))
    # A config change: the deployment whose image it reuses. When it starts,
    # it takes the image of whatever deployment is active then instead.
    image_from: Mapped[str | None] = mapped_column(String(40))
    env: Mapped[dict[str, str]] = mapped_column(Sealed(ENV), default=dict)
    port: Mapped[int] = mapped_column(Integer)
    replicas: Mapped[int | None] = mapped_column(Integer)
    # The app's health checks and resources as this release renders them.
    workload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The Procfile's processes other than web (name → command) of the image built from source.
    procfile: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The workflow's steps as they were when it recorded the outcome (since 0015):
    # an ended deployment's progress, read without querying its closed workflow.
    progress: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    source_commit: Mapped[str | None] = mapped_column(String(64))
    build_id: Mapped[str | None] = mapped_column(String(40))
    rollback_of: Mapped[str | None] = mapped_column(String(40))
    retry_of: Mapped[str | None] = mapped_column(String(40))
    restarted_at: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    workflow_id: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    app: Mapped[App] = relationship(back_populates="deployments")


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    # A workflow's activity may run more than once (a retry after a lost
    # reply, an activity or workflow reset): its entry is written once.
    __table_args__ = (UniqueConstraint("operation_key", "action", name="uq_audit_operation_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(40), index=True)
    # No foreign key: the history of a deleted app stays readable.
    app_id: Mapped[str] = mapped_column(String(40), index=True)
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    user: Mapped[str] = mapped_column(String(100))
    details: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # The id of the workflow that wrote the entry (None for API requests).
    operation_key: Mapped[str | None] = mapped_column(String(200))


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("project_id", "key", name="uq_idempotency_project_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    # The first answer, replayed: an app's answer holds its env (masked only
    # where the key looks secret), so it is sealed like the env itself.
    body: Mapped[dict[str, Any]] = mapped_column(Sealed(IDEMPOTENT_ANSWER))
    # Keys expire (Settings.idempotency_key_hours); the reconciler prunes them by age.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)


class Build(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40), index=True)
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    source_type: Mapped[str] = mapped_column(String(10))
    source_commit: Mapped[str | None] = mapped_column(String(64), index=True)
    # Uploaded source: `source_ref` (repository@sha256:… in the platform's
    # registry) since 0005; `upload_path`, a file on one host, in older rows.
    upload_path: Mapped[str | None] = mapped_column(String(1024))
    source_ref: Mapped[str | None] = mapped_column(String(600))
    status: Mapped[str] = mapped_column(String(20))  # pending | building | succeeded | failed | reused
    image_ref: Mapped[str | None] = mapped_column(String(600))
    image_digest: Mapped[str | None] = mapped_column(String(80))
    # The Procfile's processes other than web, as the build found them.
    procfile: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Before 0005 the log was a file; its lines are now `build_log_chunks` rows.
    log_path: Mapped[str | None] = mapped_column(String(1024))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BuildLogChunk(Base):
    """Whole lines of a build's log, appended by the worker as the build runs;
    every API replica follows a build by reading the rows after the last `seq`
    it sent."""

    __tablename__ = "build_log_chunks"

    build_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class RegistryCredential(Base):
    """A project's login to one registry: digests are resolved with it, and its
    pods pull with it (the namespace's `conveyor-registry` Secret). The
    password is sealed at rest and never leaves the API or the worker."""

    __tablename__ = "registry_credentials"
    __table_args__ = (UniqueConstraint("project_id", "registry", name="uq_registry_credentials_project_registry"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    registry_host: Mapped[str] = mapped_column("registry", String(300))
    username: Mapped[str] = mapped_column(String(255))
    password: Mapped[str] = mapped_column(Sealed(REGISTRY_PASSWORD))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class Handoff(Base):
    """An operation committed by the API and not yet accepted by Temporal.

    Written in the same transaction as the rows it acts on; deleted once the
    operation's workflow, or the app's lane, has it. Whatever stays here (the API died between
    the commit and the hand-off, or Temporal was away) is handed off again by
    the API's reconciler. The workflow id is deterministic, so a second
    hand-off never starts a second workflow."""

    __tablename__ = "handoffs"

    workflow_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40), index=True)
    operation: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class JobRun(Base):
    """One run of an app's Job: its release command (at most one per
    deployment) or a run of a scheduled job (one per Temporal workflow run
    of its Schedule). Written by the worker as the Job starts and ends; a
    release command whose run here has succeeded is never run again."""

    __tablename__ = "job_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40), index=True)
    project_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20))  # release | cron (conveyor.domain.jobs.JobKind)
    # The cron entry's name, or "release".
    name: Mapped[str] = mapped_column(String(63))
    # The Kubernetes Job: one name per run, so a repeated activity finds its run.
    job_name: Mapped[str] = mapped_column(String(63), unique=True)
    # The release whose image (and env) it ran.
    deployment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    image_ref: Mapped[str | None] = mapped_column(String(600))
    command: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"argv": [...]}
    trigger: Mapped[str] = mapped_column(String(20))  # release | schedule | trigger
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running | succeeded | failed
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    # The end of the Job's log (conveyor.domain.jobs.tail).
    output: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
