"""Small database operations shared by the API and the activities."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.db.models import App, AuditEntry, Deployment, Handoff, Project
from conveyor.db.session import read_scope
from conveyor.ids import utcnow

TERMINAL = {"active", "superseded", "failed", "cancelled"}
IN_FLIGHT = {"queued", "pending", "building", "deploying"}
DEFAULT_PROJECT = "proj_default"


def add_audit(session: Session, app: App, action: str, user: str, details: str, deployment_id: str | None = None) -> None:
    session.add(
        AuditEntry(
            project_id=app.project_id,
            app_id=app.id,
            deployment_id=deployment_id,
            action=action,
            user=user,
            details=details,
            created_at=utcnow(),
        )
    )


def active_deployment(session: Session, app_id: str) -> Deployment | None:
    return session.scalars(
        select(Deployment).where(Deployment.app_id == app_id, Deployment.status == "active")
    ).first()


def in_flight(session: Session, app_id: str) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment).where(Deployment.app_id == app_id, Deployment.status.in_(IN_FLIGHT)).order_by(Deployment.number)
        )
    )


def ensure_default_project(session: Session, settings) -> Project:
    project = session.get(Project, DEFAULT_PROJECT)
    if project is None:
        project = Project(id=DEFAULT_PROJECT, name="default", namespace=settings.project_namespace(DEFAULT_PROJECT))
        session.add(project)
        session.flush()
    return project


def build_log_path(settings, build_id: str):
    return settings.home / "builds" / f"{build_id}.log"


def handoff_backlog(settings) -> int:
    """Operations committed but not yet accepted by Temporal."""
    with read_scope(settings.effective_database_url) as session:
        return session.scalar(select(func.count()).select_from(Handoff)) or 0
