"""Releases: what a new deployment rolls out, where its image comes from, and
how it is recorded and queued for the app.

A deployment's image comes from one of three places (`ReleaseSource`):
- the app's source, as `deploy` takes it (`source_release`): an image app's
  tag, resolved by the workflow; a git app's branch head, resolved and built
  (or reused) by the workflow; an upload app's latest upload, built again;
- a deployment that ran, pinned by digest (`image_of`): restart, revert, retry;
- the image that runs now (`running_release`): a config change, which ships
  no new code (see the README, "Releases: what a change deploys").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.deps import Caller
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from api.unit_of_work import Answer
from conveyor.clients.db.models import App, Build, Deployment
from conveyor.clients.db.queries import in_flight
from conveyor.domain.ids import new_id, utcnow
from conveyor.domain.payloads import Operation
from conveyor.domain.vocabulary import BuildStatus, DeploymentStatus, OperationKind


@dataclass(frozen=True)
class ReleaseSource:
    """Where a new deployment's image comes from.

    Nothing set: the workflow resolves a git app's branch head and builds it
    (or reuses the image built for that commit)."""

    # The image as asked for: a tag the workflow resolves to its digest.
    image: str | None = None
    # The exact image, pinned by digest (tag@sha256:…), and the commit it was built from.
    image_ref: str | None = None
    image_digest: str | None = None
    source_commit: str | None = None
    # The Procfile's processes other than web, of an image built from source.
    procfile: Mapping[str, str] | None = None
    # The build that makes the image (upload apps).
    build_id: str | None = None
    # The deployment whose image this one runs, unless another is active by the time it starts.
    image_from: str | None = None


@dataclass(frozen=True)
class Release:
    """One new deployment: its operation, image, env and port, and what it
    reverts, retries or restarts."""

    operation: OperationKind
    source: ReleaseSource
    env: Mapping[str, str]
    port: int
    rollback_of: str | None = None
    retry_of: str | None = None
    restarted_at: str | None = None
    # Health checks and resources, as stored (conveyor.domain.workload.Workload).
    workload: Mapping[str, Any] | None = None

    @classmethod
    def of_app(cls, operation: OperationKind, source: ReleaseSource, app: App) -> Release:
        """A release of the app's config as it is now."""
        return cls(operation, source, env=app.env, port=app.port, workload=app.workload)

    @classmethod
    def of_deployment(cls, operation: OperationKind, source: ReleaseSource, dep: Deployment, **marks: str | None) -> Release:
        """A release of another deployment's config (a restart, revert or retry)."""
        return cls(operation, source, env=dep.env, port=dep.port, workload=dep.workload, **marks)


def new_upload_build(session: Session, app: App, source_ref: str | None, upload_path: str | None = None) -> Build:
    """A build of an uploaded source: `source_ref` in the registry (or a file of an older row)."""
    build = Build(
        id=new_id("bld"),
        app_id=app.id,
        source_type="upload",
        source_ref=source_ref,
        upload_path=upload_path,
        status=BuildStatus.PENDING,
        created_at=utcnow(),
    )
    session.add(build)
    session.flush()
    return build


def source_release(session: Session, app: App) -> ReleaseSource | None:
    """How a deployment of `app`'s source gets its image; None when there is nothing to deploy yet."""
    if app.source_type == "image":
        return ReleaseSource(image=app.image_url)
    if app.source_type == "git":
        return ReleaseSource()
    latest = session.scalars(
        select(Build)
        .where(Build.app_id == app.id, or_(Build.source_ref.is_not(None), Build.upload_path.is_not(None)))
        .order_by(Build.created_at.desc())
    ).first()
    if latest is None:
        return None
    return ReleaseSource(build_id=new_upload_build(session, app, latest.source_ref, latest.upload_path).id)


def image_of(dep: Deployment) -> ReleaseSource:
    """The image a deployment ran, pinned by digest (and the commit it was built from)."""
    return ReleaseSource(
        image=dep.image, image_ref=dep.image_ref, image_digest=dep.image_digest, source_commit=dep.source_commit, procfile=dep.procfile
    )


def running_release(current: Deployment) -> ReleaseSource:
    """A config change is a release of the image that runs now, pinned by
    digest: no tag is resolved again and nothing is rebuilt (only deploy, or
    a new image_url, does that). `image_from` lets the deployment take the
    image of whatever is active when it starts, should a release queued
    before it (a deploy, a revert) become active first."""
    return dataclasses.replace(image_of(current), image_from=current.id)


def new_deployment(session: Session, caller: Caller, app: App, release: Release) -> Deployment:
    """The deployment's row: the app's next number, `queued` behind the
    operations still in flight (else `pending`)."""
    number = (session.scalar(select(func.max(Deployment.number)).where(Deployment.app_id == app.id)) or 0) + 1
    dep_id = new_id("dep")
    source = release.source
    dep = Deployment(
        id=dep_id,
        app_id=app.id,
        number=number,
        operation=release.operation,
        # Earlier requests still running or waiting: this one waits its turn.
        status=DeploymentStatus.QUEUED if in_flight(session, app.id) else DeploymentStatus.PENDING,
        image=source.image,
        image_ref=source.image_ref,
        image_digest=source.image_digest,
        env=dict(release.env),
        port=release.port,
        workload=dict(release.workload) if release.workload else None,
        rollback_of=release.rollback_of,
        retry_of=release.retry_of,
        restarted_at=release.restarted_at,
        build_id=source.build_id,
        image_from=source.image_from,
        source_commit=source.source_commit,
        procfile=dict(source.procfile) if source.procfile else None,
        workflow_id=f"{release.operation}-{dep_id}",
        created_by=caller.name,
        created_at=utcnow(),
    )
    session.add(dep)
    session.flush()
    return dep


def deployment_operation(caller: Caller, app: App, dep: Deployment) -> Operation:
    """The operation that runs `dep` (on its own, or in the app's lane)."""
    return Operation(
        kind=OperationKind(dep.operation),
        app_id=app.id,
        project_id=app.project_id,
        workflow_id=dep.workflow_id,
        deployment_id=dep.id,
        summary=f"{dep.operation} {app.name} → {dep.image_ref or dep.image} ×{app.replicas}",
        user=caller.name,
        begins_locally=True,
    )


def release(session: Session, caller: Caller, app: App, what: Release) -> Answer[DeploymentPublic]:
    """Record a new deployment and queue it for the app: 202 and its record."""
    dep = new_deployment(session, caller, app, what)
    return Answer(202, deployment_public(dep), [deployment_operation(caller, app, dep)])
