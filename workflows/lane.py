"""One lane per app: its cluster-changing operations run one at a time, in
the order they were requested. Each runs as a child workflow with its own id
(`deploy-dep_…`), so operators can watch or cancel it on its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError
from temporalio.types import MethodAsyncSingleParam
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from opentelemetry import context as otel_context
    from opentelemetry import propagate

    from conveyor.domain.payloads import LaneInput, Operation
    from conveyor.domain.vocabulary import OperationKind
    from workflows.delete import DeleteAppWorkflow
    from workflows.deploy import DeployWorkflow
    from workflows.scale import ScaleWorkflow

IDLE = timedelta(minutes=5)
MAX_HISTORY = 5000
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

    @workflow.signal
    def enqueue(self, op: Operation) -> None:
        if any(q.workflow_id == op.workflow_id for q in self._queue) or (
            self._current is not None and self._current.workflow_id == op.workflow_id
        ):
            return
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

    @workflow.query
    def queued(self) -> list[str]:
        return [op.workflow_id for op in self._queue]

    @workflow.query
    def current(self) -> str | None:
        return self._current.workflow_id if self._current else None

    @workflow.run
    async def run(self, lane: LaneInput) -> None:
        self._queue = list(lane.pending) + self._queue
        while True:
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
            self._running = asyncio.create_task(
                workflow.execute_child_workflow(
                    WORKFLOWS[op.kind],
                    op,
                    id=op.workflow_id,
                    search_attributes=search_attributes(op),
                    static_summary=op.summary,
                    parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                )
            )
            try:
                await self._running
            except ChildWorkflowError as err:
                # The child recorded its own outcome (failed or cancelled).
                workflow.logger.info("operation %s ended: %s", op.workflow_id, err)
            except asyncio.CancelledError:
                if not self._superseded:
                    raise
                workflow.logger.info("operation %s cancelled by the app's delete", op.workflow_id)
            finally:
                if token is not None:
                    otel_context.detach(token)
                self._running, self._superseded = None, False
            self._current = None
            if op.kind == OperationKind.DELETE and not self._queue:
                # The app is gone (or its delete failed and waits for another
                # DELETE, which starts a new lane run). A new delete attempt that
                # arrived meanwhile is in the queue and must still run.
                return
            if workflow.info().get_current_history_length() > MAX_HISTORY:
                workflow.continue_as_new(LaneInput(app_id=lane.app_id, project_id=lane.project_id, pending=self._queue))
