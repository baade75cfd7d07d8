"""Activity options shared by the workflows (temporalio and stdlib only).

Failures are named in conveyor/domain/errors.py. Transient ones (connection
refused, 5xx, 429, timeouts, a missing RBAC grant) are retried with backoff
for as long as the operation has time: no policy has an attempt count. A
deploy bounds every activity by its own deadline (`until`); the other
workflows, which have none, by OPERATION_BUDGET. Permanent ones reach the
workflow as non-retryable failures and end the operation at once. A retrying
activity is what the Temporal Web UI shows as pending, with its attempt count
and last failure, and what an operator may pause, reset or update there
(README: runbook)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError

# How long a scale or delete keeps retrying a transient failure.
OPERATION_BUDGET = timedelta(hours=1)
# Even past its deadline an operation gets this long to record its outcome
# and put the previous release back: the database and the cluster must agree.
CLEANUP_GRACE = timedelta(minutes=30)
# The least an activity is given, so that one past the deadline still has an attempt.
MIN_BUDGET = timedelta(seconds=30)



class ActivityOptions(TypedDict, total=False):
    """The options every activity call passes: timeouts and a retry policy."""

    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    retry_policy: RetryPolicy


class LocalActivityOptions(TypedDict, total=False):
    """The options of a local activity: no heartbeat (it runs inside a
    workflow task, which the worker keeps alive while it runs)."""

    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy


def local(options: ActivityOptions) -> LocalActivityOptions:
    """`options` for a local activity: the same timeouts and retry policy."""
    converted = LocalActivityOptions()
    if "start_to_close_timeout" in options:
        converted["start_to_close_timeout"] = options["start_to_close_timeout"]
    if "schedule_to_close_timeout" in options:
        converted["schedule_to_close_timeout"] = options["schedule_to_close_timeout"]
    if "retry_policy" in options:
        converted["retry_policy"] = options["retry_policy"]
    return converted


# Database writes and reads: quick.
DB = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=OPERATION_BUDGET,
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)),
)
# Registry look-ups: the registry may be briefly away.
REGISTRY = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=OPERATION_BUDGET,
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15)),
)
# Single Kubernetes writes.
KUBE_WRITE = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=OPERATION_BUDGET,
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15)),
)


# The lane asking for the app's turn, or giving it back: one short database
# transaction (and a look at the holder's workflow), retried for as long as
# it takes: a lane that gave up would leave its app's operations waiting.
TURN = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)),
)


def long_wait(seconds: int) -> ActivityOptions:
    """Options for a heartbeating wait bounded by `seconds` of work. Each
    attempt may take the whole wait; the wait's own deadline (RolloutInput.
    deadline_at) holds across attempts, so a retry never extends it."""
    return ActivityOptions(
        start_to_close_timeout=timedelta(seconds=seconds + 120),
        schedule_to_close_timeout=max(OPERATION_BUDGET, timedelta(seconds=seconds) + CLEANUP_GRACE),
        heartbeat_timeout=timedelta(seconds=20),
        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15)),
    )


def job_wait(seconds: int) -> ActivityOptions:
    """Options for running a Job (release command, scheduled run): a long
    wait whose heartbeats are twice as frequent, so that a worker killed
    mid-run is noticed within 10 s (a new attempt waits for the same Job)
    and a cancel reaches the activity, which deletes the Job, within about 8."""
    options = long_wait(seconds)
    options["heartbeat_timeout"] = timedelta(seconds=10)
    return options


def until(options: ActivityOptions, deadline: datetime | None, grace: timedelta = timedelta(0)) -> ActivityOptions:
    """`options` with retries bounded by `deadline` (+ `grace`) instead of their default budget."""
    if deadline is None:
        return options
    remaining = deadline - workflow.now() + grace
    bounded = options.copy()
    bounded["schedule_to_close_timeout"] = max(remaining, MIN_BUDGET)
    return bounded


def failure_message(err: BaseException) -> str:
    """The message of the error the activity (or child) raised, under Temporal's wrappers."""
    while isinstance(err, (ActivityError, ChildWorkflowError)) and err.cause is not None:
        err = err.cause
    return getattr(err, "message", None) or str(err)


def cancelled(err: BaseException) -> bool:
    """The workflow was cancelled: directly, or through the activity it awaited."""
    if isinstance(err, asyncio.CancelledError):
        return True
    return isinstance(getattr(err, "cause", None), CancelledError)


T = TypeVar("T")


async def all_of(tasks: Sequence[asyncio.Task[T]]) -> list[T]:
    """The results of `tasks` (activities started together). The first of
    them, in order, to fail cancels the others; once all have ended its error
    is raised. A cancel of the workflow cancels each of them the same way.
    One task is simply awaited, so that a single wait is what it always was."""
    if len(tasks) == 1:
        return [await tasks[0]]
    try:
        await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel_all(tasks)
        raise
    failed = next((t for t in tasks if t.done() and (t.cancelled() or t.exception() is not None)), None)
    if failed is not None:
        await _cancel_all(tasks)
        if failed.cancelled():
            raise asyncio.CancelledError()
        raise failed.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


async def _cancel_all(tasks: Sequence[asyncio.Task[T]]) -> None:
    for task in tasks:
        if not task.done():
            task.cancel()
    await workflow.wait(tasks)


def with_step(steps: list[dict[str, str]], name: str, state: str, detail: str) -> None:
    """Set step `name` of a progress list to `state` and `detail` at the
    workflow's time, appending it when it is new."""
    now = workflow.now().isoformat().replace("+00:00", "Z")
    for step in steps:
        if step["name"] == name:
            step.update(state=state, detail=detail, updated_at=now)
            return
    steps.append({"name": name, "state": state, "detail": detail, "started_at": now, "updated_at": now})
