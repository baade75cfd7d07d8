"""One mutating request, top to bottom:

1. `Mutation.run` checks the `Idempotency-Key` and fingerprints the request;
2. in one write transaction on a worker thread (never on the event loop) it
   replays the key's first answer, or runs the service
   (`service(session, caller, *args)`, from `api/services`), which checks the
   request against the rows, writes them and returns an `Answer` with the
   operations it queues; their `handoffs` rows are written in the same
   transaction (`api/outbox.py`), and the answer is recorded for the key;
3. after the commit, the queued operations are handed to Temporal (for at
   most `HANDOFF_WAIT_SECONDS`; the reconciler has whatever is left);
4. the route returns the answer's body, its status set on the response, so
   the route's `response_model` shapes every answer, replayed ones too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Concatenate, Generic, ParamSpec, TypeVar

from fastapi import Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import idempotency, outbox
from api.deps import Caller, SettingsDep
from api.idempotency import IdempotencyKey
from api.outbox import HandoffReconciler
from conveyor.clients.db.session import session_scope
from conveyor.domain.payloads import Operation
from conveyor.settings import Settings

log = logging.getLogger("conveyor.handoff")
# How long a request waits for its hand-off before answering anyway.
HANDOFF_WAIT_SECONDS = 10.0

Body = TypeVar("Body", bound=BaseModel)
P = ParamSpec("P")


@dataclass(frozen=True)
class Answer(Generic[Body]):
    """What a service answers: the status, the response model, and the
    operations it queued (committed with its rows)."""

    status_code: int
    body: Body
    operations: Sequence[Operation] = ()


# A service: runs in the request's transaction with its session and caller.
Service = Callable[Concatenate[Session, Caller, P], Answer[Any]]


@dataclass(frozen=True)
class _Outcome:
    status_code: int
    body: Any
    operations: Sequence[Operation] = ()
    replayed: bool = False


@dataclass(frozen=True)
class Mutation:
    """The unit of work of one mutating request (the route's dependency)."""

    request: Request
    response: Response
    settings: Settings
    handoff: HandoffReconciler
    idempotency_key: str | None
    # What identifies the request's body for its Idempotency-Key; None: its bytes.
    body_digest: str | None = None

    def identified_by(self, body_digest: str) -> Mutation:
        """The same request, its body identified by `body_digest` (an upload, already read)."""
        return dataclasses.replace(self, body_digest=body_digest)

    async def run(self, caller: Caller, service: Service[P], *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run `service(session, caller, *args)` in one transaction, once per
        Idempotency-Key; then hand off what it queued. Returns the body to answer."""
        key = self.idempotency_key
        if key is not None:
            idempotency.check_key(key)
        body = self.body_digest.encode() if self.body_digest is not None else await self.request.body()
        keyring = self.request.app.state.codec.keyring
        fingerprint = idempotency.fingerprint(self.request.method, self.request.url.path, body, keyring.derive("idempotency-fingerprint"))
        outcome = await run_in_threadpool(self._transact, caller, fingerprint, lambda session: service(session, caller, *args, **kwargs))
        if outcome.operations:
            # Committed: the answer does not wait on a slow Temporal for long;
            # whatever is not delivered by then is the reconciler's.
            # Nor does it fail: the operation is committed, an error now would
            # tell the caller to try again and run it twice.
            try:
                await asyncio.wait_for(self.handoff.deliver(list(outcome.operations)), HANDOFF_WAIT_SECONDS)
            except Exception as exc:  # noqa: BLE001
                log.warning("hand-off after commit did not finish (%s); the reconciler takes over", type(exc).__name__)
        self.response.status_code = outcome.status_code
        if outcome.replayed:
            self.response.headers["Idempotent-Replayed"] = "true"
        return outcome.body

    def _transact(self, caller: Caller, fingerprint: str, work: Callable[[Session], Answer[Any]]) -> _Outcome:
        key = self.idempotency_key
        try:
            with session_scope(self.settings.effective_database_url) as session:
                record = None
                if key is not None:
                    claimed = idempotency.claim(session, self.settings, caller.project_id, key, fingerprint)
                    if isinstance(claimed, idempotency.Replay):
                        return _Outcome(claimed.status_code, claimed.body, replayed=True)
                    record = claimed
                answer = work(session)
                for op in answer.operations:
                    outbox.write(session, op)
                body = answer.body.model_dump(mode="json")
                if record is not None:
                    idempotency.remember(record, answer.status_code, body)
                session.flush()
                return _Outcome(answer.status_code, body, answer.operations)
        except IntegrityError as exc:
            raise HTTPException(409, "a concurrent request changed the same thing first (a name, a custom domain, a deployment number or an Idempotency-Key); retry") from exc


async def get_mutation(request: Request, response: Response, settings: SettingsDep, idempotency_key: IdempotencyKey = None) -> Mutation:
    return Mutation(request, response, settings, request.app.state.handoff, idempotency_key)


MutationDep = Annotated[Mutation, Depends(get_mutation)]
