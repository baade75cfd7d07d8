"""One lane per app: its cluster-changing operations run one at a time, in
the order they were requested. Each runs as a child workflow with its own id
(`deploy-dep_…`), so operators can watch or cancel it on its own.

An operation of an app that has none in flight does not come here: its
workflow starts at once, holding the app's turn (conveyor/clients/db/turns.py).
The lane gets the operations committed while another holds the turn; it
takes the turn before running them (a delete cancels the holder), and gives
it back once it has run every one handed to it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.types import MethodAsyncSingleParam
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from opentelemetry import context as otel_context
    from opentelemetry import propagate

    from activities.turns import TurnActivities
    from conveyor.domain.payloads import LaneInput, Operation, TurnInput
    from conveyor.domain.vocabulary import OperationKind
    from workflows.common import TURN, cancelled
    from workflows.delete import DeleteAppWorkflow
    from workflows.deploy import DeployWorkflow
    from workflows.scale import ScaleWorkflow

IDLE = timedelta(minutes=5)
MAX_HISTORY = 5000
# While another operation holds the app's turn, the lane asks for it again
# when the holder gives it on (the `turn_offered` signal) or after this long
# (a holder that ended without a word, a signal lost with its worker); for a
# delete, whose cancel may end the holder without a word, sooner.
TURN_POLL = timedelta(seconds=30)
TURN_POLL_FOR_DELETE = timedelta(seconds=2)
# What `_run_operation` returns when the lane's history grew too long while it waited.
WAITED_LONG = "continue as new while waiting for the app's turn"
# What `_run_operation` returns when a delete superseded the operation
# before it started (while it waited for the app's turn).
SUPERSEDED = "superseded by the app's delete before it started"


def lane_id(app_id: str) -> str:
    """The workflow id of the app's lane."""
    return f"app-{app_id}"
# Which workflow runs each kind of operation.
WORKFLOWS: dict[str, MethodAsyncSingleParam[Any, Operation, str]] = {
    OperationKind.DEPLOY: DeployWorkflow.run,
    OperationKind.UPDATE: DeployWorkflow.run,
    OperationKind.RESTART: DeployWorkflow.run,
    OperationKind.ROLLBACK: DeployWorkflow.run,
    OperationKind.SCALE: ScaleWorkflow.run,
    OperationKind.DELETE: DeleteAppWorkflow.run,
}


def search_attributes(op: Operation) -> TypedSearchAttributes:
    pairs = [
        SearchAttributePair(SearchAttributeKey.for_keyword("AppId"), op.app_id),
        SearchAttributePair(SearchAttributeKey.for_keyword("ProjectId"), op.project_id),
        SearchAttributePair(SearchAttributeKey.for_keyword("Operation"), op.kind),
    ]
    if op.deployment_id:
        pairs.append(SearchAttributePair(SearchAttributeKey.for_keyword("DeploymentId"), op.deployment_id))
    return TypedSearchAttributes(pairs)


@workflow.defn
class AppLaneWorkflow:
    def __init__(self) -> None:
        self._queue: list[Operation] = []
        self._current: Operation | None = None
        # The task that runs the current operation's child workflow, and
        # whether a delete cancelled it.
        self._running: asyncio.Task[Any] | None = None
        self._superseded = False
        # Lanes started since turns (LaneInput.turns): whether this one holds
        # the app's turn, and the last place in the lane it has received.
        self._turns = False
        self._holds_turn = False
        self._seq = 0
        self._offered = False

    @workflow.signal
    def enqueue(self, op: Operation) -> None:
        if any(q.workflow_id == op.workflow_id for q in self._queue) or (
            self._current is not None and self._current.workflow_id == op.workflow_id
        ):
            return
        self._seq = max(self._seq, op.lane_seq)
        if op.kind == OperationKind.DELETE and workflow.patched("delete-supersedes"):
            # A delete supersedes what the app still had to do: the operations
            # waiting (their deployments were cancelled with the DELETE), and
            # the one running, cancelled through its workflow. A release
            # cancelled so restores nothing; the delete then runs at once.
            self._queue = [q for q in self._queue if q.kind == OperationKind.DELETE]
            if self._current is not None and self._current.kind != OperationKind.DELETE and self._running is not None:
                self._superseded = True
                self._running.cancel()
        self._queue.append(op)

    @workflow.signal
    def turn_offered(self) -> None:
        """The holder of the app's turn gave it to the lane (activities/records.py)."""
        self._offered = True

    @workflow.query
    def queued(self) -> list[str]:
        return [op.workflow_id for op in self._queue]

    @workflow.query
    def current(self) -> str | None:
        return self._current.workflow_id if self._current else None

    @workflow.run
    async def run(self, lane: LaneInput) -> None:
        self._queue = list(lane.pending) + self._queue
        self._turns = lane.turns
        self._seq = max([self._seq, lane.seq] + [op.lane_seq for op in self._queue])
        while True:
            if not self._queue and self._holds_turn:
                # Run them all: give the turn back, unless one more is on its way.
                self._holds_turn = not await workflow.execute_activity_method(
                    TurnActivities.release_turn, TurnInput(app_id=lane.app_id, seq=self._seq), summary="give back the app's turn", **TURN
                )
                if not self._holds_turn:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    if not self._queue:
                        return
            if not self._queue:
                try:
                    await workflow.wait_condition(lambda: bool(self._queue), timeout=IDLE)
                except TimeoutError:
                    pass
            if not self._queue:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    return
            op = self._queue.pop(0)
            self._current = op
            # The child belongs to the trace of the request that asked for it.
            token = otel_context.attach(propagate.extract(op.trace_context)) if op.trace_context else None
            # A task, so that a delete can cancel it; the await ends once the
            # cancelled child has recorded its outcome (WAIT_CANCELLATION_COMPLETED).
            self._running = asyncio.create_task(self._run_operation(lane, op))
            outcome = None
            try:
                outcome = await self._running
            except ChildWorkflowError as err:
                # The child recorded its own outcome (failed or cancelled).
                workflow.logger.info("operation %s ended: %s", op.workflow_id, err)
            except (asyncio.CancelledError, ActivityError) as err:
                if not (self._superseded and cancelled(err)):
                    raise
                outcome = SUPERSEDED
            finally:
                if token is not None:
                    otel_context.detach(token)
                self._running, self._superseded = None, False
            if outcome == SUPERSEDED:
                workflow.logger.info("operation %s cancelled by the app's delete", op.workflow_id)
            self._current = None
            if outcome == WAITED_LONG:
                # A long wait for the turn: the next run waits on, with `op` first.
                workflow.continue_as_new(
                    LaneInput(app_id=lane.app_id, project_id=lane.project_id, pending=[op, *self._queue], turns=True, seq=self._seq)
                )
            if op.kind == OperationKind.DELETE and not self._queue and not self._holds_turn:
                # The app is gone (or its delete failed and waits for another
                # DELETE, which starts a new lane run). A new delete attempt that
                # arrived meanwhile is in the queue and must still run.
                return
            if workflow.info().get_current_history_length() > MAX_HISTORY and (self._queue or not self._turns):
                # The next run takes the turn again (it holds it already, or takes it
                # at once). With nothing left to run, this one gives it back and ends.
                workflow.continue_as_new(
                    LaneInput(app_id=lane.app_id, project_id=lane.project_id, pending=self._queue, turns=True, seq=self._seq)
                )

    async def _run_operation(self, lane: LaneInput, op: Operation) -> Any:
        """Take the app's turn (lanes since turns), then run `op` as a child workflow."""
        delete = op.kind == OperationKind.DELETE
        while self._turns and not self._holds_turn and not self._superseded:
            # Cleared before asking, so that an offer made while it asks is not missed.
            self._offered = False
            self._holds_turn = await workflow.execute_activity_method(
                TurnActivities.take_turn,
                TurnInput(app_id=lane.app_id, supersede=delete),
                summary=f"take the app's turn for {op.workflow_id}",
                **TURN,
            )
            if self._holds_turn or self._superseded:
                break
            try:
                await workflow.wait_condition(lambda: self._offered or self._superseded, timeout=TURN_POLL_FOR_DELETE if delete else TURN_POLL)
            except TimeoutError:
                pass
            if not self._superseded and workflow.info().get_current_history_length() > MAX_HISTORY:
                return WAITED_LONG
        if self._superseded:
            # A delete came while this waited for the turn. Its cancel of this
            # task does not always reach it: when take_turn's answer comes in
            # the same workflow task as the DELETE, the answer wins.
            return SUPERSEDED
        return await workflow.execute_child_workflow(
            WORKFLOWS[op.kind],
            op,
            id=op.workflow_id,
            search_attributes=search_attributes(op),
            static_summary=op.summary,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
