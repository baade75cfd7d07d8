"""Prefixed identifiers (app_…, dep_…) and UTC timestamps."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | str | None) -> str | None:
    """ISO-8601 UTC ending in Z (naive values from the database are UTC; strings
    are ISO timestamps as the Kubernetes client serialises them)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"
