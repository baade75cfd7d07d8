"""A project's registry credentials: saved (one per registry: a second save
replaces the first), listed without their secret, deleted. The password is
sealed at rest (conveyor/clients/db/sealed.py) and only the worker opens it,
to resolve digests and to build the namespace's pull Secret at a release."""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Caller
from api.schemas import RegistryCredentialCreate, RegistryCredentialPublic
from api.services.apps import unprocessable
from api.unit_of_work import Answer
from conveyor.clients import outbound
from conveyor.clients.db.models import RegistryCredential
from conveyor.domain import egress, registry_auth
from conveyor.domain.ids import iso, new_id, utcnow
from conveyor.settings import Settings


def public(row: RegistryCredential) -> RegistryCredentialPublic:
    return RegistryCredentialPublic(
        id=row.id,
        registry=row.registry_host,
        username=row.username,
        created_by=row.created_by,
        created_at=iso(row.created_at) or "",
        updated_at=iso(row.updated_at) or "",
    )


def listed(session: Session, caller: Caller) -> list[RegistryCredentialPublic]:
    rows = session.scalars(
        select(RegistryCredential).where(RegistryCredential.project_id == caller.project_id).order_by(RegistryCredential.registry_host)
    ).all()
    return [public(row) for row in rows]


def check_registry_host(settings: Settings, registry: str, field: str) -> None:
    """The egress policy's check at the API (no DNS: IP literals and `localhost`)."""
    host, port = egress.split_host_port(registry)
    try:
        outbound.policy(settings).check_named(egress.Purpose.REGISTRY, host, port)
    except egress.OutboundRefused as exc:
        raise unprocessable(field, f"the registry {exc}") from None


def save(session: Session, caller: Caller, settings: Settings, body: RegistryCredentialCreate) -> Answer[RegistryCredentialPublic]:
    """201 for a new registry, 200 when it replaces the project's credential for it."""
    check_registry_host(settings, body.registry, "registry")
    row = session.scalars(
        select(RegistryCredential).where(RegistryCredential.project_id == caller.project_id, RegistryCredential.registry_host == body.registry)
    ).first()
    now = utcnow()
    if row is not None:
        row.username, row.password, row.created_by, row.updated_at = body.username, body.password, caller.name, now
        session.flush()
        return Answer(200, public(row))
    row = RegistryCredential(
        id=new_id("rc"),
        project_id=caller.project_id,
        registry_host=body.registry,
        username=body.username,
        password=body.password,
        created_by=caller.name,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return Answer(201, public(row))


def delete(session: Session, caller: Caller, which: str) -> Answer[RegistryCredentialPublic]:
    """By id (`rc_…`) or by registry; another project's is a 404 like a missing one."""
    mine = select(RegistryCredential).where(RegistryCredential.project_id == caller.project_id)
    row = session.scalars(mine.where(RegistryCredential.id == which)).first()
    if row is None:
        try:
            key = registry_auth.registry_key(which)
        except registry_auth.InvalidRegistry:
            key = None
        row = session.scalars(mine.where(RegistryCredential.registry_host == key)).first() if key else None
    if row is None:
        raise HTTPException(404, "no registry credential of this project by that id or registry")
    answer = public(row)
    session.delete(row)
    return Answer(200, answer)
