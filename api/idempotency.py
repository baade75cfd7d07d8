"""`Idempotency-Key`: a repeat of a mutating request gets the first answer
and starts nothing.

A key is per project. Its record is written in the transaction of the
request it answers, so the record and the request's rows commit together
(or not at all). The same key on a different request (method, path, body)
is a `422`. A request is told apart by a fingerprint keyed with the newest
payload key (a repeat that straddles a rotation of that key reads as a
different request). Keys live for `CONVEYOR_IDEMPOTENCY_KEY_HOURS`: after that the key
is free again, and each API process prunes expired records (`KeyPruner`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from conveyor.clients.db.models import IdempotencyRecord
from conveyor.clients.db.session import session_scope
from conveyor.domain.ids import utcnow
from conveyor.settings import Settings

log = logging.getLogger("conveyor.idempotency")
# How often each API process prunes expired Idempotency-Key records.
PRUNE_INTERVAL_SECONDS = 600.0

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="Repeat-safe key: a repeat returns the first answer")
]


def _unprocessable_key(message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["header", "Idempotency-Key"], "msg": message, "type": "value_error"}])


def check_key(key: str) -> None:
    if not (1 <= len(key) <= 255):
        raise _unprocessable_key("must be 1 to 255 characters")


def fingerprint(method: str, path: str, body: bytes, key: bytes) -> str:
    """What makes two requests the same request: keyed (HMAC), so that a
    stored fingerprint of a body that held a secret (a registry password, an
    env value) cannot be checked against guesses without the payload key."""
    return hmac.new(key, b"\n".join([method.encode(), path.encode(), body]), hashlib.sha256).hexdigest()


def idempotency_cutoff(settings: Settings) -> datetime:
    """Idempotency-Keys recorded before this have expired."""
    return utcnow() - timedelta(hours=settings.idempotency_key_hours)


@dataclass(frozen=True)
class Replay:
    """The answer recorded for the first request with the key."""

    status_code: int
    body: Any


def claim(session: Session, settings: Settings, project_id: str, key: str, request_fingerprint: str) -> IdempotencyRecord | Replay:
    """The first answer given with `key`, or a new record of it (written in
    `session`) for `remember` to fill in once the request has its answer."""
    mine = (IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key)
    # An expired key is free again, even before the pruning reaches it.
    session.execute(delete(IdempotencyRecord).where(*mine, IdempotencyRecord.created_at < idempotency_cutoff(settings)))
    found = session.scalars(select(IdempotencyRecord).where(*mine)).first()
    if found is not None:
        if found.request_fingerprint != request_fingerprint:
            raise _unprocessable_key("this key was used for a different request")
        return Replay(found.status_code, found.body)
    record = IdempotencyRecord(
        project_id=project_id, key=key, request_fingerprint=request_fingerprint, status_code=0, body={}, created_at=utcnow()
    )
    session.add(record)
    return record


def remember(record: IdempotencyRecord, status_code: int, body: dict[str, Any]) -> None:
    """The answer a repeat of the request gets."""
    record.status_code, record.body = status_code, body


def prune_idempotency_keys(url: str, cutoff: datetime, batch: int = 1000) -> int:
    """Delete expired Idempotency-Key records, a short transaction per batch; returns how many."""
    pruned = 0
    while True:
        with session_scope(url) as session:
            ids = select(IdempotencyRecord.id).where(IdempotencyRecord.created_at < cutoff).limit(batch)
            done = cast(CursorResult[Any], session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids)))).rowcount
        pruned += done
        if done < batch:
            return pruned


class KeyPruner:
    """Prunes expired Idempotency-Key records, every `PRUNE_INTERVAL_SECONDS`."""

    def __init__(self, settings: Settings):
        self.settings = settings

    async def prune(self) -> int:
        pruned = await run_in_threadpool(prune_idempotency_keys, self.settings.effective_database_url, idempotency_cutoff(self.settings))
        if pruned:
            log.info("pruned %d expired Idempotency-Key records", pruned)
        return pruned

    async def run_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database away: next round
                log.warning("Idempotency-Key pruning: %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
