"""/api/v1/apps/{id}/audit: every action on the app, newest first."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import SessionDep, Viewer
from api.routes.apps import load_app
from api.schemas import AuditPublic
from conveyor.db.models import AuditEntry
from conveyor.ids import iso

router = APIRouter(prefix="/apps/{app_id}/audit", tags=["audit"])


@router.get("", response_model=list[AuditPublic], summary="Audit log of the app, newest first")
def list_audit(app_id: str, session: SessionDep, caller: Viewer) -> list[AuditPublic]:
    app = load_app(session, caller, app_id)
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.app_id == app.id).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    )
    return [
        AuditPublic(action=e.action, user=e.user, details=e.details, created_at=iso(e.created_at), deployment_id=e.deployment_id)
        for e in entries
    ]
