"""Kubernetes failures become short messages of a named kind: the Web UI drops
a long last failure ("Failure exceeds size limit."), the operator needs the
reason, and the kind says whether the activity is tried again."""

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from activities.workloads import MESSAGE_LIMIT, api_error, concise_errors, missing_permission
from conveyor.domain import errors

WORKER = "system:serviceaccount:conveyor:conveyor-worker"


def test_an_unreachable_api_is_a_short_transient_failure_without_the_chain():
    @concise_errors
    def call() -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/apis/apps/v1", reason=ConnectionRefusedError("refused " * 500))

    with pytest.raises(errors.KubernetesUnreachable) as caught:
        call()
    assert caught.value.transient
    assert len(caught.value.message) < MESSAGE_LIMIT + 100
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, errors.KubernetesUnavailable),
        (503, errors.KubernetesUnavailable),
        (429, errors.KubernetesUnavailable),
        (409, errors.KubernetesUnavailable),
        (408, errors.KubernetesUnavailable),
        (422, errors.KubernetesRefused),
        (404, errors.KubernetesRefused),
        (400, errors.KubernetesRefused),
        # A 403 that is not the authorizer's (here: a quota-like refusal) stays permanent.
        (403, errors.KubernetesRefused),
    ],
)
def test_api_answers_say_whether_to_retry_and_keep_only_the_status_message(status, kind):
    body = json.dumps({"kind": "Status", "message": "failed to allocate a serviceIP: range is full", "details": {"x": "y" * 50_000}})
    failure = api_error(_exception(status, body), "applying Service web")
    assert type(failure) is kind
    assert failure.transient is (kind is errors.KubernetesUnavailable)
    assert failure.message == f"applying Service web: Kubernetes answered {status} Reason: failed to allocate a serviceIP: range is full"


def test_a_missing_rbac_grant_is_transient_and_names_the_permission():
    message = (
        f'deployments.apps "web" is forbidden: User "{WORKER}" cannot patch resource "deployments" '
        'in API group "apps" in the namespace "conveyor-default"'
    )
    failure = api_error(_exception(403, json.dumps({"kind": "Status", "message": message, "reason": "Forbidden"})), "applying Deployment web")
    assert isinstance(failure, errors.KubernetesForbidden) and failure.transient
    assert failure.message == (
        f'applying Deployment web: missing RBAC permission: patch deployments (API group "apps") in namespace conveyor-default for User "{WORKER}"; '
        "retried until it is granted or the operation's deadline passes (Kubernetes answered 403 Reason)"
    )


@pytest.mark.parametrize(
    ("message", "permission"),
    [
        (
            f'pods is forbidden: User "{WORKER}" cannot list resource "pods" in API group "" in the namespace "conveyor-a"',
            f'list pods (the core API group) in namespace conveyor-a for User "{WORKER}"',
        ),
        (
            f'deployments.apps "web" is forbidden: User "{WORKER}" cannot patch resource "deployments/scale" in API group "apps" '
            'in the namespace "conveyor-a": RBAC: clusterrole.rbac.authorization.k8s.io "conveyor-app-manager" not found',
            f'patch deployments/scale (API group "apps") in namespace conveyor-a for User "{WORKER}"'
            ' (RBAC: clusterrole.rbac.authorization.k8s.io "conveyor-app-manager" not found)',
        ),
        (
            f'namespaces "conveyor-b" is forbidden: User "{WORKER}" cannot patch resource "namespaces" in API group "" at the cluster scope',
            f'patch namespaces (the core API group) cluster-wide for User "{WORKER}"',
        ),
        (f'forbidden: User "{WORKER}" cannot get path "/metrics"', f'get on the path /metrics for User "{WORKER}"'),
    ],
)
def test_the_permission_an_rbac_refusal_names(message, permission):
    assert missing_permission(message) == permission


@pytest.mark.parametrize(
    "message",
    [
        # Admission (the README's namespace policy, a webhook), a quota, a namespace going away: permanent.
        "namespaces \"kube-system\" is forbidden: ValidatingAdmissionPolicy 'conveyor-namespaces' with binding "
        "'conveyor-namespaces' denied request: the worker writes only namespaces named conveyor-*",
        'admission webhook "policy.example.com" denied the request: images must come from the platform registry',
        'pods "web-1" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=8',
        'deployments.apps "web" is forbidden: unable to create new content in namespace conveyor-a because it is being terminated',
    ],
)
def test_other_403s_stay_permanent(message):
    assert missing_permission(message) is None
    failure = api_error(_exception(403, json.dumps({"kind": "Status", "message": message})), "applying Deployment web")
    assert isinstance(failure, errors.KubernetesRefused) and not failure.transient


def _exception(status: int, body: str) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = body
    return exc
