"""The hand-off from the database to Temporal: a transactional outbox.

1. A mutation's transaction writes its rows and, with them, one `handoffs`
   row per operation it queues (`write`), then commits. Nothing reaches
   Temporal before that commit, and no transaction is open while Temporal is
   called.
2. After the commit, each operation is handed to Temporal (`hand_off`,
   deterministic workflow ids): its own workflow starts when it has the
   app's turn (conveyor/clients/db/turns.py), else it is signalled to the
   app's lane (signal-with-start). Its `handoffs` row is then deleted
   (`HandoffReconciler.deliver`).
3. If the process dies between 1 and 2, or Temporal is away, the row stays;
   the reconciler running in every API process hands it off again
   (`HandoffReconciler.reconcile`). A second hand-off never runs an operation
   twice: a workflow id starts once, the lane ignores an operation it holds
   already, and an operation whose workflow exists is only crossed off.

So a `202` means the operation is committed and will run; an error means
nothing was written.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi.concurrency import run_in_threadpool
from opentelemetry import propagate
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import TemporalConnector
from conveyor.clients.db import turns
from conveyor.clients.db.models import Handoff
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.ids import utcnow
from conveyor.domain.payloads import LaneInput, Operation
from conveyor.settings import Settings
from workflows.lane import WORKFLOWS, AppLaneWorkflow, lane_id, search_attributes

log = logging.getLogger("conveyor.handoff")
# How long one signal-with-start may take before the reconciler takes over.
HANDOFF_RPC_TIMEOUT = timedelta(seconds=5)


def lane_attributes(app_id: str, project_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword("AppId"), app_id),
            SearchAttributePair(SearchAttributeKey.for_keyword("ProjectId"), project_id),
            SearchAttributePair(SearchAttributeKey.for_keyword("Operation"), "lane"),
        ]
    )


async def hand_off(client: Client, settings: Settings, op: Operation) -> None:
    """Start the operation's workflow when it has the app's turn, else hand
    it to the app's lane. Either is safe to repeat."""
    if op.direct:
        try:
            await client.start_workflow(
                WORKFLOWS[op.kind],
                op,
                id=op.workflow_id,
                task_queue=settings.temporal_task_queue,
                search_attributes=search_attributes(op),
                static_summary=op.summary,
                # An operation runs once, even when its workflow has ended.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=HANDOFF_RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            pass  # handed off before; only its crossing-off was lost
        return
    await signal_lane(client, settings, op)


async def signal_lane(client: Client, settings: Settings, op: Operation) -> None:
    """Signal-with-start the app's lane: it runs operations one at a time, in order."""
    await client.start_workflow(
        AppLaneWorkflow.run,
        LaneInput(app_id=op.app_id, project_id=op.project_id, turns=True),
        id=lane_id(op.app_id),
        task_queue=settings.temporal_task_queue,
        start_signal="enqueue",
        start_signal_args=[op],
        search_attributes=lane_attributes(op.app_id, op.project_id),
        static_summary=f"operations of app {op.app_id}, one at a time",
        rpc_timeout=HANDOFF_RPC_TIMEOUT,
    )


def write(session: Session, op: Operation) -> None:
    """The `handoffs` row of `op`, committed with the rows of the request that
    queues it, and where it runs: at once if it has the app's turn, else in
    the app's lane. `op` carries the request's trace, so its workflow joins it."""
    propagate.inject(op.trace_context)
    place = turns.route(session, op.app_id, op.workflow_id)
    op.direct, op.lane_seq = place is None, place or 0
    session.add(Handoff(workflow_id=op.workflow_id, app_id=op.app_id, operation=op.model_dump(), created_at=utcnow()))


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


class HandoffReconciler:
    """Hands committed operations to Temporal: right after the request, and
    again in the background for whatever a crash or an outage left behind."""

    def __init__(self, settings: Settings, temporal: TemporalConnector):
        self.settings = settings
        self.temporal = temporal
        self.url = settings.effective_database_url

    async def deliver(self, ops: list[Operation]) -> list[str]:
        """Hand each operation off (its workflow, or its app's lane); returns the workflow ids handed off."""
        delivered = []
        for op in ops:
            try:
                client = await self.temporal.client()
                await hand_off(client, self.settings, op)
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
        pending: list[Operation] = []
        started: list[Operation] = []
        for op in ops:
            try:
                # Its workflow exists: it was handed off; only the crossing-off was lost.
                (started if await self._started(client, op.workflow_id) else pending).append(op)
            except Exception as exc:  # noqa: BLE001 - this one waits for the next round; the others go on
                await run_in_threadpool(_note_failure, self.url, op.workflow_id, str(exc))
        if started:
            await run_in_threadpool(_crossed_off, self.url, [op.workflow_id for op in started])
        delivered = await self.deliver(pending)
        if pending:
            log.info("reconciler handed off %d of %d left-behind operations", len(delivered), len(pending))
        return len(started) + len(delivered)

    async def run_forever(self) -> None:
        """A pass every `CONVEYOR_HANDOFF_INTERVAL_SECONDS`, for the life of the process."""
        while True:
            await asyncio.sleep(self.settings.handoff_interval_seconds)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Temporal or the database away: next round
                log.warning("hand-off reconciler: %s", exc)
