"""What the deployments routes do: revert, cancel and retry, each run in the
request's transaction (`Mutation.run`) as `service(session, caller, ...)`."""

from __future__ import annotations

from typing import Any, cast

from fastapi import HTTPException
from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from api.deps import Caller
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from api.services.apps import check_change_fits, check_domains_free, claim_domains, load_app, mutable
from api.services.releases import Release, ReleaseSource, image_of, release, source_release
from api.unit_of_work import Answer
from conveyor.clients.db.models import App, Deployment
from conveyor.clients.db.queries import add_audit
from conveyor.domain.ids import utcnow
from conveyor.domain.planning import keeping_counts
from conveyor.domain.vocabulary import NOT_STARTED, ONCE_RAN, TERMINAL, DeploymentStatus, OperationKind
from conveyor.domain.workload import Workload
from conveyor.settings import Settings


class StartedMeanwhile(Exception):
    """The deployment left the queue between the look and the claim."""


def load_deployment(session: Session, app: App, deployment_id: str) -> Deployment:
    dep = session.get(Deployment, deployment_id)
    if dep is None or dep.app_id != app.id:
        raise HTTPException(404, "deployment not found for this app")
    return dep


def load_both(session: Session, caller: Caller, app_id: str, deployment_id: str) -> Deployment:
    return load_deployment(session, load_app(session, caller, app_id), deployment_id)


def revert(session: Session, caller: Caller, settings: Settings, app_id: str, deployment_id: str) -> Answer[DeploymentPublic]:
    """A new deployment of the target's image, env, port, health checks and
    resources; the replica count stays."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    target = load_deployment(session, app, deployment_id)
    if target.status not in ONCE_RAN or not target.image_ref:
        raise HTTPException(409, f"deployment {target.id} is {target.status}: only a deployment that once ran can be restored")
    restored = keeping_counts(Workload.of(target.workload), Workload.of(app.workload))
    check_change_fits(session, settings, app, app.replicas, restored)
    app.env, app.port, app.workload = dict(target.env), target.port, restored.stored()
    claim_domains(session, settings, app, restored)
    return release(session, caller, app, Release.of_deployment(OperationKind.ROLLBACK, image_of(target), target, rollback_of=target.id))


def cancel(session: Session, caller: Caller, app_id: str, deployment_id: str, workflow_told: bool) -> Answer[DeploymentPublic]:
    """Cancel a deployment that has not started here; one that has was told
    through its workflow before this runs (`workflow_told`) and is only recorded."""
    app = load_app(session, caller, app_id, lock=True)
    dep = load_deployment(session, app, deployment_id)
    if dep.status in TERMINAL:
        raise HTTPException(409, f"deployment {dep.id} is already {dep.status}")
    # Not started yet: cancel it here; its workflow will find it cancelled and do nothing.
    claim = (
        update(Deployment)
        .where(Deployment.id == dep.id, Deployment.status.in_(NOT_STARTED))
        .values(status=DeploymentStatus.CANCELLED, reason=f"cancelled by {caller.name} before it started", finished_at=utcnow())
    )
    if cast(CursorResult[Any], session.execute(claim)).rowcount:
        add_audit(session, app, f"{dep.operation}_cancelled", caller.name, f"Cancelled deployment v{dep.number} before it started", dep.id)
    elif not workflow_told:
        raise StartedMeanwhile()
    else:
        add_audit(session, app, "cancel_requested", caller.name, f"Requested cancellation of deployment v{dep.number}", dep.id)
    session.flush()
    session.refresh(dep)
    return Answer(202, deployment_public(dep))


def retry(session: Session, caller: Caller, settings: Settings, app_id: str, deployment_id: str) -> Answer[DeploymentPublic]:
    """A new deployment with the same snapshot as a failed or cancelled one."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    dep = load_deployment(session, app, deployment_id)
    if dep.status not in (DeploymentStatus.FAILED, DeploymentStatus.CANCELLED):
        raise HTTPException(409, f"deployment {dep.id} is {dep.status}: only a failed or cancelled one can be retried")
    check_change_fits(session, settings, app, app.replicas, Workload.of(dep.workload))
    check_domains_free(session, app, Workload.of(dep.workload))
    if dep.image_ref or app.source_type == "image":
        source = image_of(dep)
    else:
        # It never got an image: build its source again.
        source = source_release(session, app) or ReleaseSource()
    return release(
        session,
        caller,
        app,
        Release.of_deployment(OperationKind(dep.operation), source, dep, rollback_of=dep.rollback_of, retry_of=dep.id),
    )
