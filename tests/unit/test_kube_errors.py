"""Kubernetes failures become short messages: the Web UI drops a long last
failure ("Failure exceeds size limit."), and the operator needs the reason."""

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities.workloads import MESSAGE_LIMIT, _raise_api_error, concise_errors


def test_an_unreachable_api_is_a_short_transient_failure_without_the_chain():
    @concise_errors
    def call() -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/apis/apps/v1", reason=ConnectionRefusedError("refused " * 500))

    with pytest.raises(ApplicationError) as caught:
        call()
    assert caught.value.type == "KubernetesUnreachable" and not caught.value.non_retryable
    assert len(caught.value.message) < MESSAGE_LIMIT + 100
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False), (409, False), (422, True), (403, True)])
def test_api_answers_say_whether_to_retry_and_keep_only_the_status_message(status, permanent):
    body = json.dumps({"kind": "Status", "message": "failed to allocate a serviceIP: range is full", "details": {"x": "y" * 50_000}})
    with pytest.raises(ApplicationError) as caught:
        _raise(status, body)
    assert caught.value.non_retryable is permanent
    assert caught.value.message.endswith("range is full") and len(caught.value.message) < MESSAGE_LIMIT + 100


def _raise(status: int, body: str) -> None:
    exc = ApiException(status=status, reason="Reason")
    exc.body = body
    _raise_api_error(exc, "applying Service web")
