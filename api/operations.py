"""Record intent, then hand it to the app's lane workflow.

The hand-off is a transactional outbox:

1. One short write transaction (in a worker thread, never on the event loop)
   checks the request, writes its rows and a `handoffs` row per operation,
   and commits. Nothing reaches Temporal before that commit, and no
   transaction is open while Temporal is called.
2. The operation is then signalled to the app's lane (signal-with-start,
   deterministic workflow ids) and its `handoffs` row is deleted.
3. If the process dies between 1 and 2, or Temporal is away, the row stays;
   the reconciler (`HandoffReconciler`, running in every API process) hands it
   off again. A second hand-off never runs an operation twice: the lane
   ignores an operation it holds already, and an operation whose workflow
   exists is only crossed off.

So a `202` means the operation is committed and will run; an error means
nothing was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from opentelemetry import propagate
from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Caller, SettingsDep, TemporalConnector
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from conveyor.clients.db.models import App, Deployment, Handoff, IdempotencyRecord
from conveyor.clients.db.queries import in_flight
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.ids import new_id, utcnow
from conveyor.domain.payloads import LaneInput, Operation
from conveyor.domain.vocabulary import DeploymentStatus, OperationKind
from conveyor.settings import Settings
from workflows.lane import AppLaneWorkflow

log = logging.getLogger("conveyor.handoff")
# How long one signal-with-start may take before the reconciler takes over,
# and how long a request waits for its hand-off before answering anyway.
HANDOFF_RPC_TIMEOUT = timedelta(seconds=5)
HANDOFF_WAIT_SECONDS = 10.0
# How often each API process prunes expired Idempotency-Key records.
PRUNE_INTERVAL_SECONDS = 600.0


def lane_id(app_id: str) -> str:
    return f"app-{app_id}"


def new_deployment(
    session: Session,
    app: App,
    caller: Caller,
    operation: OperationKind,
    *,
    image: str | None,
    env: dict[str, str],
    port: int,
    image_ref: str | None = None,
    image_digest: str | None = None,
    rollback_of: str | None = None,
    retry_of: str | None = None,
    restarted_at: str | None = None,
    build_id: str | None = None,
    image_from: str | None = None,
    source_commit: str | None = None,
) -> Deployment:
    number = (session.scalar(select(func.max(Deployment.number)).where(Deployment.app_id == app.id)) or 0) + 1
    dep_id = new_id("dep")
    dep = Deployment(
        id=dep_id,
        app_id=app.id,
        number=number,
        operation=operation,
        # Earlier requests still running or waiting: this one waits its turn.
        status=DeploymentStatus.QUEUED if in_flight(session, app.id) else DeploymentStatus.PENDING,
        image=image,
        image_ref=image_ref,
        image_digest=image_digest,
        env=dict(env),
        port=port,
        rollback_of=rollback_of,
        retry_of=retry_of,
        restarted_at=restarted_at,
        build_id=build_id,
        image_from=image_from,
        source_commit=source_commit,
        workflow_id=f"{operation}-{dep_id}",
        created_by=caller.name,
        created_at=utcnow(),
    )
    session.add(dep)
    session.flush()
    return dep


def release_summary(app: App, dep: Deployment) -> str:
    return f"{dep.operation} {app.name} → {dep.image_ref or dep.image} ×{app.replicas}"


def deployment_operation(app: App, dep: Deployment, caller: Caller) -> Operation:
    return Operation(
        kind=dep.operation,
        app_id=app.id,
        project_id=app.project_id,
        workflow_id=dep.workflow_id,
        deployment_id=dep.id,
        summary=release_summary(app, dep),
        user=caller.name,
    )


def lane_attributes(app_id: str, project_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword("AppId"), app_id),
            SearchAttributePair(SearchAttributeKey.for_keyword("ProjectId"), project_id),
            SearchAttributePair(SearchAttributeKey.for_keyword("Operation"), "lane"),
        ]
    )


async def signal_lane(client: Client, settings: Settings, op: Operation) -> None:
    """Signal-with-start the app's lane: it runs operations one at a time, in order."""
    await client.start_workflow(
        AppLaneWorkflow.run,
        LaneInput(app_id=op.app_id, project_id=op.project_id),
        id=lane_id(op.app_id),
        task_queue=settings.temporal_task_queue,
        start_signal="enqueue",
        start_signal_args=[op],
        search_attributes=lane_attributes(op.app_id, op.project_id),
        static_summary=f"operations of app {op.app_id}, one at a time",
        rpc_timeout=HANDOFF_RPC_TIMEOUT,
    )


def _crossed_off(url: str, workflow_ids: list[str]) -> None:
    with session_scope(url) as session:
        session.execute(delete(Handoff).where(Handoff.workflow_id.in_(workflow_ids)))


def _note_failure(url: str, workflow_id: str, error: str) -> None:
    with session_scope(url) as session:
        session.execute(
            update(Handoff)
            .where(Handoff.workflow_id == workflow_id)
            .values(attempts=Handoff.attempts + 1, last_error=error[:2000])
        )


def idempotency_cutoff(settings: Settings) -> datetime:
    """Idempotency-Keys recorded before this have expired."""
    return utcnow() - timedelta(hours=settings.idempotency_key_hours)


def prune_idempotency_keys(url: str, cutoff: datetime, batch: int = 1000) -> int:
    """Delete expired Idempotency-Key records, a short transaction per batch; returns how many."""
    pruned = 0
    while True:
        with session_scope(url) as session:
            ids = select(IdempotencyRecord.id).where(IdempotencyRecord.created_at < cutoff).limit(batch)
            done = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids))).rowcount
        pruned += done
        if done < batch:
            return pruned


class HandoffReconciler:
    """Hands committed operations to Temporal: right after the request, and
    again in the background for whatever a crash or an outage left behind."""

    def __init__(self, settings: Settings, temporal: TemporalConnector):
        self.settings = settings
        self.temporal = temporal
        self.url = settings.effective_database_url
        self._pruned_at = -PRUNE_INTERVAL_SECONDS

    async def deliver(self, ops: list[Operation]) -> list[str]:
        """Signal each operation to its lane; returns the workflow ids handed off."""
        delivered = []
        for op in ops:
            try:
                client = await self.temporal.client()
                await signal_lane(client, self.settings, op)
            except Exception as exc:  # noqa: BLE001 - the row stays; the reconciler retries
                log.warning("hand-off of %s to Temporal failed, will retry: %s", op.workflow_id, exc)
                await run_in_threadpool(_note_failure, self.url, op.workflow_id, str(exc))
                continue
            delivered.append(op.workflow_id)
        if delivered:
            await run_in_threadpool(_crossed_off, self.url, delivered)
        return delivered

    def _left_behind(self) -> list[Operation]:
        cutoff = utcnow() - timedelta(seconds=self.settings.handoff_grace_seconds)
        with read_scope(self.url) as session:
            # Rows that keep failing go last, so they cannot hold up the others.
            rows = session.scalars(
                select(Handoff).where(Handoff.created_at < cutoff).order_by(Handoff.attempts, Handoff.created_at).limit(200)
            ).all()
            ops = []
            for row in rows:
                try:
                    ops.append(Operation.model_validate(row.operation))
                except ValueError:
                    log.error("hand-off row %s holds no operation this version reads; left in place", row.workflow_id)
            return ops

    async def _started(self, client: Client, workflow_id: str) -> bool:
        try:
            await client.get_workflow_handle(workflow_id).describe(rpc_timeout=HANDOFF_RPC_TIMEOUT)
            return True
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise

    async def reconcile(self) -> int:
        """One pass: hand off every operation committed more than the grace period ago."""
        ops = await run_in_threadpool(self._left_behind)
        if not ops:
            return 0
        client = await self.temporal.client()
        pending, started = [], []
        for op in ops:
            try:
                # Its workflow exists: the lane had it; only the crossing-off was lost.
                (started if await self._started(client, op.workflow_id) else pending).append(op)
            except Exception as exc:  # noqa: BLE001 - this one waits for the next round; the others go on
                await run_in_threadpool(_note_failure, self.url, op.workflow_id, str(exc))
        if started:
            await run_in_threadpool(_crossed_off, self.url, [op.workflow_id for op in started])
        delivered = await self.deliver(pending)
        if pending:
            log.info("reconciler handed off %d of %d left-behind operations", len(delivered), len(pending))
        return len(started) + len(delivered)

    async def prune(self) -> None:
        """Expired Idempotency-Keys go, at most once per PRUNE_INTERVAL_SECONDS."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        pruned = await run_in_threadpool(prune_idempotency_keys, self.url, idempotency_cutoff(self.settings))
        if pruned:
            log.info("pruned %d expired Idempotency-Key records", pruned)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.handoff_interval_seconds)
            try:
                await self.reconcile()
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Temporal or the database away: next round
                log.warning("hand-off reconciler: %s", exc)


def _unprocessable_key(message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["header", "Idempotency-Key"], "msg": message, "type": "value_error"}])


IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="Repeat-safe key: a repeat returns the first answer")
]


@dataclass
class Outcome:
    status_code: int
    body: Any
    operations: list[Operation] = field(default_factory=list)
    replayed: bool = False


@dataclass
class Mutation:
    """One mutating request: its transaction, the operations it queues, the hand-off.

    Handlers (api/services) are plain functions run in a worker thread with
    `session` open; they call `release` / `queue`, and return (status, model).
    `once` gives the route the body to return, with the status set on the
    route's response, so the route's `response_model` shapes every answer."""

    request: Request
    response: Response
    settings: Settings
    handoff: HandoffReconciler
    idempotency_key: str | None
    caller: Caller | None = None
    session: Session = None  # type: ignore[assignment]  # set while a handler runs
    _queued: list[Operation] = field(default_factory=list)

    async def once(self, caller: Caller, handler: Callable[[], tuple[int, BaseModel]], body_digest: str | None = None) -> Any:
        """Run `handler` in one transaction, once per Idempotency-Key; then hand off what it queued."""
        key = self.idempotency_key
        if key is not None and not (1 <= len(key) <= 255):
            raise _unprocessable_key("must be 1 to 255 characters")
        body = body_digest.encode() if body_digest is not None else await self.request.body()
        fingerprint = hashlib.sha256(b"\n".join([self.request.method.encode(), self.request.url.path.encode(), body])).hexdigest()
        self.caller = caller
        outcome = await run_in_threadpool(self._transact, caller, fingerprint, handler)
        if outcome.operations:
            # Committed: the answer does not wait on a slow Temporal for long;
            # whatever is not delivered by then is the reconciler's.
            # Nor does it fail: the operation is committed, an error now would
            # tell the caller to try again and run it twice.
            try:
                await asyncio.wait_for(self.handoff.deliver(outcome.operations), HANDOFF_WAIT_SECONDS)
            except Exception as exc:  # noqa: BLE001
                log.warning("hand-off after commit did not finish (%s); the reconciler takes over", type(exc).__name__)
        self.response.status_code = outcome.status_code
        if outcome.replayed:
            self.response.headers["Idempotent-Replayed"] = "true"
        return outcome.body

    def _transact(self, caller: Caller, fingerprint: str, handler: Callable[[], tuple[int, BaseModel]]) -> Outcome:
        key = self.idempotency_key
        try:
            with session_scope(self.settings.effective_database_url) as session:
                self.session, self._queued = session, []
                record = None
                if key is not None:
                    mine = (IdempotencyRecord.project_id == caller.project_id, IdempotencyRecord.key == key)
                    # An expired key is free again, even before the pruning reaches it.
                    session.execute(delete(IdempotencyRecord).where(*mine, IdempotencyRecord.created_at < idempotency_cutoff(self.settings)))
                    found = session.scalars(select(IdempotencyRecord).where(*mine)).first()
                    if found is not None:
                        if found.request_fingerprint != fingerprint:
                            raise _unprocessable_key("this key was used for a different request")
                        return Outcome(found.status_code, found.body, replayed=True)
                    record = IdempotencyRecord(
                        project_id=caller.project_id, key=key, request_fingerprint=fingerprint, status_code=0, body={}, created_at=utcnow()
                    )
                    session.add(record)
                code, model = handler()
                body = model.model_dump(mode="json")
                if record is not None:
                    record.status_code, record.body = code, body
                session.flush()
                return Outcome(code, body, list(self._queued))
        except IntegrityError as exc:
            raise HTTPException(409, "a concurrent request changed the same thing first (a name, a deployment number or an Idempotency-Key); retry") from exc
        finally:
            self.session = None  # type: ignore[assignment]

    def queue(self, op: Operation) -> None:
        """Commit `op` with this request's rows; it is handed to Temporal after the commit."""
        propagate.inject(op.trace_context)
        self.session.add(Handoff(workflow_id=op.workflow_id, app_id=op.app_id, operation=op.model_dump(), created_at=utcnow()))
        self._queued.append(op)

    def release(self, app: App, operation: OperationKind, **snapshot: Any) -> tuple[int, DeploymentPublic]:
        """Record a new deployment and queue it on the app's lane: (202, its record)."""
        assert self.caller is not None
        dep = new_deployment(self.session, app, self.caller, operation, **snapshot)
        self.queue(deployment_operation(app, dep, self.caller))
        return 202, deployment_public(dep)


async def get_mutation(request: Request, response: Response, settings: SettingsDep, idempotency_key: IdempotencyKey = None) -> Mutation:
    return Mutation(request, response, settings, request.app.state.handoff, idempotency_key)


MutationDep = Annotated[Mutation, Depends(get_mutation)]
