"""API tokens: random secrets shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clients.db.models import ApiToken, Project
from conveyor.domain.ids import new_id, utcnow

ROLES = ("viewer", "deployer", "admin")
TOKEN_PREFIX = "cvy_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, project_id: str, role: str, name: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if session.get(Project, project_id) is None:
        raise ValueError(f"project {project_id} does not exist")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(id=new_id("tok"), project_id=project_id, name=name, role=role, token_hash=hash_token(token), created_at=utcnow())
    )
    session.flush()
    return token


def find_token(session: Session, token: str) -> ApiToken | None:
    return session.scalars(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def find_token_by_id(session: Session, token_id: str) -> ApiToken | None:
    """A live token by its id (what a signed codec session names, never the secret)."""
    return session.scalars(select(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))).first()
