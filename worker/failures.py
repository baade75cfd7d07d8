"""The one place where Conveyor's named failures (conveyor/domain/errors.py)
become Temporal's: an activity that raises a `TransientError` or a
`PermanentError` fails with an `ApplicationError` of the same message, whose
`type` is the failure's kind, non-retryable when it is permanent. The
workflows match on that type (`errors.is_kind`), the Web UI shows it as the
pending activity's last failure."""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from conveyor.domain.errors import ConveyorError


def to_application_error(error: ConveyorError) -> ApplicationError:
    """`error` as Temporal's failure, with the same cause, context and traceback
    (an error raised `from None` stays without its chain: short in the Web UI)."""
    failure = ApplicationError(error.message, type=error.kind, non_retryable=not error.transient)
    failure.__cause__ = error.__cause__
    failure.__context__ = error.__context__
    failure.__suppress_context__ = error.__suppress_context__
    return failure.with_traceback(error.__traceback__)


class FailureInterceptor(Interceptor):
    """Install on every worker that runs Conveyor's activities (worker.build_worker
    does): without it a permanent failure would be retried as an unknown error."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _NamedFailures(next)


class _NamedFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await self.next.execute_activity(input)
        except ConveyorError as error:
            failure = to_application_error(error)
        # Raised outside the handler, so the failure's context is the error's own, not the error itself.
        raise failure
