"""Activity options shared by the workflows (temporalio and stdlib only)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError

# Database writes and reads: quick, retried a few times.
DB = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=10),
)
# Registry look-ups: the registry may be briefly away.
REGISTRY = dict(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5),
)
# Single Kubernetes writes.
KUBE_WRITE = dict(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15), maximum_attempts=8),
)


def long_wait(seconds: int) -> dict:
    """Options for a heartbeating wait bounded by `seconds` of work."""
    return dict(
        start_to_close_timeout=timedelta(seconds=seconds + 120),
        heartbeat_timeout=timedelta(seconds=20),
        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5),
    )


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
