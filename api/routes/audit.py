"""/api/v1/apps/{id}/audit: every action on the app, newest first."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import SessionDep, Viewer
from api.pagination import PageDep
from api.schemas import AuditPublic
from api.services.apps import load_app
from conveyor.clients.db.models import AuditEntry
from conveyor.domain.ids import iso

router = APIRouter(prefix="/apps/{app_id}/audit", tags=["audit"])


@router.get("", response_model=list[AuditPublic], summary="Audit log of the app, newest first (paginated)")
def list_audit(
    app_id: str,
    session: SessionDep,
    caller: Viewer,
    page: PageDep,
) -> list[AuditPublic]:
    app = load_app(session, caller, app_id)
    query = select(AuditEntry).where(AuditEntry.app_id == app.id)
    if (after := page.after(int)) is not None:
        query = query.where(AuditEntry.id < after)
    rows = session.scalars(page.take(query.order_by(AuditEntry.id.desc()))).all()
    entries = page.finish(rows, lambda entry: entry.id)
    return [
        AuditPublic(action=e.action, user=e.user, details=e.details, created_at=iso(e.created_at), deployment_id=e.deployment_id)
        for e in entries
    ]
