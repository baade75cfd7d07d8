"""The error vocabulary: each named failure is transient or permanent, reaches
Temporal as an ApplicationError of its kind (worker/failures.py), and is
matched by workflows by its type."""

from __future__ import annotations

import inspect

import pytest
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, RetryState
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from conveyor.domain import errors
from worker.failures import FailureInterceptor, to_application_error

# The kinds are written into workflow histories, and running executions match
# on them: a change here is a change of the wire format.
TRANSIENT = {
    "KubernetesUnreachable",
    "KubernetesUnavailable",
    "KubernetesForbidden",
    "RegistryUnreachable",
    "SourceUnreachable",
    "BuildInterrupted",
    "TemporalUnavailable",
}
PERMANENT = {
    "DeploymentEnded",
    "DeploymentGone",
    "KubernetesRefused",
    "RolloutFailed",
    "DeletionStuck",
    "InvalidImage",
    "RegistryRefused",
    "SourceRefused",
    "BuildFailed",
    "JobFailed",
    "JobNotRunnable",
    "SchedulesRefused",
}


def test_every_kind_is_named_listed_and_either_transient_or_permanent():
    named = {
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls)
        and issubclass(cls, errors.ConveyorError)
        and cls not in (errors.ConveyorError, errors.TransientError, errors.PermanentError)
    }
    assert set(errors.KINDS) == named
    assert {cls.kind for cls in named if issubclass(cls, errors.TransientError)} == TRANSIENT
    assert {cls.kind for cls in named if issubclass(cls, errors.PermanentError)} == PERMANENT
    assert all(cls.kind == cls.__name__ for cls in named)


def test_a_named_failure_becomes_an_application_error_of_its_kind():
    permanent = to_application_error(errors.RolloutFailed("pod web-1 is crash-looping"))
    assert (permanent.message, permanent.type, permanent.non_retryable) == ("pod web-1 is crash-looping", "RolloutFailed", True)
    transient = to_application_error(errors.RegistryUnreachable("registry 127.0.0.1:5000 is unreachable"))
    assert (transient.type, transient.non_retryable) == ("RegistryUnreachable", False)


def test_the_failure_keeps_the_cause_and_the_traceback_and_a_chain_cut_off_stays_cut():
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise errors.RegistryUnreachable("registry x is unreachable") from exc
    except errors.RegistryUnreachable as error:
        chained = to_application_error(error)
        assert isinstance(chained.__cause__, ConnectionRefusedError)
        assert chained.__traceback__ is error.__traceback__
    try:
        try:
            raise TimeoutError("a very long chain")
        except TimeoutError:
            raise errors.KubernetesUnreachable("the Kubernetes API cannot be reached") from None
    except errors.KubernetesUnreachable as error:
        short = to_application_error(error)
        assert short.__cause__ is None and short.__suppress_context__


def _activity_error(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "activity error",
        scheduled_event_id=1,
        started_event_id=2,
        identity="test",
        activity_type="apply_manifests",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    err.__cause__ = cause
    return err


def test_workflows_match_a_failure_by_its_kind_under_temporals_wrappers():
    ended = _activity_error(ApplicationError("deployment dep_1 has already ended", type="DeploymentEnded", non_retryable=True))
    assert errors.is_kind(ended, errors.DeploymentEnded)
    assert errors.is_kind(ended, errors.RolloutFailed, errors.DeploymentEnded)
    assert not errors.is_kind(ended, errors.DeploymentGone)
    assert errors.kind_of(ended) == "DeploymentEnded"
    in_a_child = ChildWorkflowError(
        "child failed",
        namespace="default",
        workflow_id="deploy-dep_1",
        run_id="r",
        workflow_type="DeployWorkflow",
        initiated_event_id=1,
        started_event_id=2,
        retry_state=None,
    )
    in_a_child.__cause__ = ended
    assert errors.is_kind(in_a_child, errors.DeploymentEnded)
    untyped = _activity_error(ApplicationError("something else"))
    assert errors.kind_of(untyped) is None and not errors.is_kind(untyped, errors.DeploymentEnded)
    assert errors.is_kind(errors.RolloutFailed("not wrapped"), errors.RolloutFailed)


class _Next(ActivityInboundInterceptor):
    def __init__(self, outcome: BaseException | str):
        self.outcome = outcome

    async def execute_activity(self, input: ExecuteActivityInput) -> str:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_the_worker_interceptor_converts_named_failures_and_nothing_else():
    def inbound(outcome: BaseException | str) -> ActivityInboundInterceptor:
        return FailureInterceptor().intercept_activity(_Next(outcome))

    request = ExecuteActivityInput(fn=lambda: None, args=[], executor=None, headers={})
    assert await inbound("done").execute_activity(request) == "done"
    with pytest.raises(ApplicationError) as caught:
        await inbound(errors.DeploymentGone("deployment dep_1 no longer exists (its app was deleted)")).execute_activity(request)
    assert (caught.value.type, caught.value.non_retryable) == ("DeploymentGone", True)
    assert caught.value.message == "deployment dep_1 no longer exists (its app was deleted)"
    # Its context is the error's own, not the named error itself (which would repeat the message in the Web UI).
    assert caught.value.__context__ is None
    with pytest.raises(KeyError):
        await inbound(KeyError("not ours")).execute_activity(request)
