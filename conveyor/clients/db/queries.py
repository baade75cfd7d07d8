"""Small database operations shared by the API and the activities."""

from __future__ import annotations

import re

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.clients.db.models import App, AuditEntry, Deployment, Handoff, Project
from conveyor.clients.db.session import read_scope
from conveyor.domain.ids import utcnow
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.vocabulary import IN_FLIGHT, DeploymentStatus
from conveyor.domain.workload import Process, ProjectLimits, Workload, at_counts, with_procfile
from conveyor.settings import Settings

DEFAULT_PROJECT = "proj_default"


def add_audit(
    session: Session,
    app: App,
    action: str,
    user: str,
    details: str,
    deployment_id: str | None = None,
    operation_key: str | None = None,
) -> None:
    """One audit entry; with `operation_key` (the workflow writing it), at
    most one per key and action: a repeated activity finds it written, in the
    same transaction (the unique constraint backs this up)."""
    if operation_key is not None:
        written = session.scalar(
            select(AuditEntry.id).where(AuditEntry.operation_key == operation_key, AuditEntry.action == action)
        )
        if written is not None:
            return
    session.add(
        AuditEntry(
            project_id=app.project_id,
            app_id=app.id,
            deployment_id=deployment_id,
            action=action,
            user=user,
            details=details,
            created_at=utcnow(),
            operation_key=operation_key,
        )
    )


def deployment_status(session: Session, deployment_id: str) -> str | None:
    dep = session.get(Deployment, deployment_id)
    return dep.status if dep is not None else None


def delete_workflow_id(app_id: str, attempt: int) -> str:
    """Each DELETE attempt runs its own workflow; attempt 0 is how deletes
    requested before attempts were counted were named."""
    return f"delete-{app_id}-{attempt}" if attempt else f"delete-{app_id}"


def active_deployment(session: Session, app_id: str) -> Deployment | None:
    return session.scalars(
        select(Deployment).where(Deployment.app_id == app_id, Deployment.status == DeploymentStatus.ACTIVE)
    ).first()


def in_flight(session: Session, app_id: str) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment).where(Deployment.app_id == app_id, Deployment.status.in_(IN_FLIGHT)).order_by(Deployment.number)
        )
    )


PROJECT_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def create_project(session: Session, settings, name: str) -> Project:
    """A project `proj_<name>` whose apps live in their own namespace."""
    namespace = settings.project_namespace(f"proj_{name}")
    if not PROJECT_NAME.fullmatch(name) or len(namespace) > 63:
        raise ValueError(
            "a project name is lowercase letters, digits and dashes, starting with a letter, "
            f"short enough that its namespace ({settings.namespace_prefix}<name>) has at most 63 characters"
        )
    taken = session.scalars(
        select(Project).where((Project.id == f"proj_{name}") | (Project.name == name) | (Project.namespace == namespace))
    ).first()
    if taken is not None:
        raise ValueError(f"project {taken.id} already uses that name or namespace")
    project = Project(id=f"proj_{name}", name=name, namespace=namespace, created_at=utcnow())
    session.add(project)
    session.flush()
    return project


def set_project_limits(session: Session, settings, project_id: str, given: dict) -> Project:
    """Set a project's own defaults and ceilings (ProjectLimits fields; None
    clears one back to the settings' value). Raises ValueError, naming the
    field, when the result is not valid limits."""
    project = session.get(Project, project_id, with_for_update=True)
    if project is None:
        raise ValueError(f"no project {project_id}")
    own = {k: v for k, v in ((project.limits or {}) | given).items() if v is not None}
    try:
        settings.project_limits(own)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "limits"
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    project.limits = own or None
    session.flush()
    return project


def project_limits(session: Session, settings, project_id: str) -> ProjectLimits:
    project = session.get(Project, project_id)
    return settings.project_limits(project.limits if project is not None else None)


def ensure_default_project(session: Session, settings) -> Project:
    project = session.get(Project, DEFAULT_PROJECT)
    if project is None:
        project = Project(id=DEFAULT_PROJECT, name="default", namespace=settings.project_namespace(DEFAULT_PROJECT))
        session.add(project)
        session.flush()
    return project


def handoff_backlog(settings) -> int:
    """Operations committed but not yet accepted by Temporal."""
    with read_scope(settings.effective_database_url) as session:
        return session.scalar(select(func.count()).select_from(Handoff)) or 0


def release_spec(app: App, project: Project, dep: Deployment, settings: Settings, replicas: int) -> ReleaseSpec:
    """What the deployment renders: its own snapshot (image, env, port,
    health checks, resources), the app's size and the project's limits now."""
    workload = Workload.of(dep.workload)
    return ReleaseSpec(
        app_id=app.id,
        project_id=app.project_id,
        deployment_id=dep.id,
        name=app.name,
        slug=app.slug,
        namespace=project.namespace,
        image_ref=dep.image_ref or "",
        port=dep.port,
        replicas=replicas,
        env=dict(dep.env or {}),
        progress_deadline_seconds=app.progress_deadline_seconds,
        base_domain=settings.base_domain,
        restarted_at=dep.restarted_at,
        healthcheck=workload.healthcheck,
        liveness=workload.liveness,
        startup=workload.startup,
        resources=workload.resources,
        autoscaling=workload.autoscaling,
        release_command=workload.release_command,
        cron=workload.cron,
        limits=settings.project_limits(project.limits),
        processes=release_processes(Workload.of(app.workload), workload, dep.procfile),
        domains=workload.domains,
        redirect_http=workload.redirect_http,
        # The app's certificates now, as a release applies its env Secret now:
        # a revert never puts back a certificate that was replaced or deleted.
        # (Read only for a release with domains: no query for the others.)
        uploaded_certificates=sorted(c.domain for c in app.certificates if c.domain in workload.domains) or None if workload.domains else None,
        tls_cluster_issuer=settings.tls_cluster_issuer,
        redirect_annotations=settings.redirect_annotations if workload.redirect_http is not None else None,
    )


def release_processes(app: Workload, release: Workload, procfile: dict[str, str] | None) -> dict[str, Process] | None:
    """The release's processes (with its Procfile's lines) at the app's counts now."""
    return at_counts(with_procfile(release.processes, procfile), app)
