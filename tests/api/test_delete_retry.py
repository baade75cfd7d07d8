"""A delete that fails leaves the app where DELETE can be tried again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus

from conveyor.clients.db.models import AuditEntry
from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.temporal_client import connect
from conveyor.domain import manifests
from tests.support.waiting import eventually


def deny_service_deletion(kube_api, namespace: str, slug: str) -> str:
    """An admission policy that refuses to delete the app's Service: a failure
    the real kube-apiserver produces, as a webhook or policy of a real cluster would."""
    name = f"deny-delete-{slug}"
    custom = client.CustomObjectsApi(kube_api)
    group, version = "admissionregistration.k8s.io", "v1"
    custom.create_cluster_custom_object(
        group, version, "validatingadmissionpolicies",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["services"]}
                    ]
                },
                "validations": [{"expression": "false", "message": "this Service is protected by a test policy"}],
            },
        },
    )
    custom.create_cluster_custom_object(
        group, version, "validatingadmissionpolicybindings",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "objectSelector": {"matchLabels": {manifests.LABEL_APP: slug}},
                },
            },
        },
    )
    return name


def allow_service_deletion(kube_api, name: str) -> None:
    custom = client.CustomObjectsApi(kube_api)
    group, version = "admissionregistration.k8s.io", "v1"
    custom.delete_cluster_custom_object(group, version, "validatingadmissionpolicybindings", name)
    custom.delete_cluster_custom_object(group, version, "validatingadmissionpolicies", name)


def service_deletion_denied(kube_api, namespace: str, slug: str) -> bool:
    """Asked with a dry run: whether the policy is in force now."""
    try:
        client.CoreV1Api(kube_api).delete_namespaced_service(slug, namespace, dry_run="All")
    except ApiException as exc:
        if exc.status in (403, 422) and "protected by a test policy" in (exc.body or ""):
            return True
        raise
    return False


async def workflow_status(settings, workflow_id: str) -> WorkflowExecutionStatus | None:
    temporal = await connect(settings)
    return (await temporal.get_workflow_handle(workflow_id).describe()).status


def test_failed_delete_says_why_and_deleting_again_finishes(api, kube_api, settings, deployed_app):
    app, _ = deployed_app
    namespace = namespace_for(settings, "proj_default")
    core = client.CoreV1Api(kube_api)
    policy = deny_service_deletion(kube_api, namespace, app["slug"])
    try:
        eventually(lambda: service_deletion_denied(kube_api, namespace, app["slug"]), 30, what="the policy in force")
        deleting = api.call("DELETE", f"/apps/{app['id']}", 202).json()
        assert deleting["status"] == "deleting"

        failed = eventually(
            lambda: (a := api.call("GET", f"/apps/{app['id']}", 200).json())["status"] == "delete_failed" and a,
            90,
            what="the delete to fail",
        )
        assert "Service" in failed["status_reason"] and "protected by a test policy" in failed["status_reason"]
        audit = api.call("GET", f"/apps/{app['id']}/audit", 200).json()
        assert audit[0]["action"] == "delete_failed" and "protected by a test policy" in audit[0]["details"]
        assert asyncio.run(workflow_status(settings, f"delete-{app['id']}-1")) == WorkflowExecutionStatus.FAILED
        # Nothing but DELETE is accepted now, and the answer says what to do.
        refused = api.call("PATCH", f"/apps/{app['id']}", 409, json={"env": {"X": "1"}})
        assert "DELETE it again" in refused.text
        api.call("POST", f"/apps/{app['id']}/deploy", 409)
        core.read_namespaced_service(app["slug"], namespace)  # still there
    finally:
        allow_service_deletion(kube_api, policy)

    eventually(lambda: not service_deletion_denied(kube_api, namespace, app["slug"]), 30, what="the policy gone")
    again = api.call("DELETE", f"/apps/{app['id']}", 202).json()
    assert again["status"] == "deleting" and again["status_reason"] is None
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be gone")
    # The app's row goes in the attempt's last activity; the workflow completes just after.
    eventually(
        lambda: asyncio.run(workflow_status(settings, f"delete-{app['id']}-2")) == WorkflowExecutionStatus.COMPLETED,
        30,
        what="the second attempt to complete",
    )
    for read in (core.read_namespaced_service, client.AppsV1Api(kube_api).read_namespaced_deployment):
        try:
            read(app["slug"], namespace)
            raise AssertionError(f"{read.__name__} still finds {app['slug']}")
        except ApiException as exc:
            assert exc.status == 404
    with read_scope(settings.effective_database_url) as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.app_id == app["id"]).order_by(AuditEntry.id)
        ).all()
    assert actions[-4:] == ["delete_requested", "delete_failed", "delete_requested", "delete"]


def test_delete_while_deleting_starts_nothing_new(api, deployed_app):
    app, _ = deployed_app
    api.call("DELETE", f"/apps/{app['id']}", 202)
    repeat = api.call("DELETE", f"/apps/{app['id']}")
    assert repeat.status_code == 404 or (repeat.status_code == 202 and repeat.json()["status"] == "deleting")
    patch = api.call("PATCH", f"/apps/{app['id']}", json={"env": {"X": "1"}})
    assert patch.status_code == 404 or (patch.status_code == 409 and "being deleted" in patch.text), patch.text
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be gone")


async def terminate(settings, workflow_id: str) -> None:
    temporal = await connect(settings)
    await temporal.get_workflow_handle(workflow_id).terminate(reason="test: an operator terminated the delete")


def test_delete_terminated_in_the_web_ui_can_be_started_again(api, kube_api, settings, deployed_app):
    app, _ = deployed_app
    namespace = namespace_for(settings, "proj_default")
    core = client.CoreV1Api(kube_api)
    # A finalizer nothing clears: the delete waits for the Service to go.
    core.patch_namespaced_service(app["slug"], namespace, {"metadata": {"finalizers": ["conveyor.test/hold"]}})
    try:
        api.call("DELETE", f"/apps/{app['id']}", 202)
        eventually(
            lambda: core.read_namespaced_service(app["slug"], namespace).metadata.deletion_timestamp is not None,
            60,
            what="the Service to be marked for deletion",
        )
        # Still running: a repeat DELETE starts nothing.
        assert api.call("DELETE", f"/apps/{app['id']}", 202).json()["status"] == "deleting"
        asyncio.run(terminate(settings, f"delete-{app['id']}-1"))
        assert api.call("GET", f"/apps/{app['id']}", 200).json()["status"] == "deleting"
        api.call("DELETE", f"/apps/{app['id']}", 202)
        eventually(
            lambda: asyncio.run(workflow_status(settings, f"delete-{app['id']}-2")) == WorkflowExecutionStatus.RUNNING,
            30,
            what="a second delete attempt",
        )
    finally:
        core.patch_namespaced_service(app["slug"], namespace, {"metadata": {"finalizers": None}})
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be gone")
    assert asyncio.run(workflow_status(settings, f"delete-{app['id']}-1")) == WorkflowExecutionStatus.TERMINATED
    # The app's row goes in the attempt's last activity; the workflow completes just after.
    eventually(
        lambda: asyncio.run(workflow_status(settings, f"delete-{app['id']}-2")) == WorkflowExecutionStatus.COMPLETED,
        30,
        what="the second attempt to complete",
    )


def test_a_delete_that_waits_past_its_timeout_names_only_what_is_still_there(kube_api, settings):
    """The delete's step on the cluster (run here as the worker runs it, on
    the platform's Kubernetes): a Service a finalizer holds outlasts the
    wait, the Secret beside it goes, and the failure names the Service only."""
    from temporalio.testing import ActivityEnvironment

    from activities.workloads import KubeActivities
    from conveyor.domain import errors
    from conveyor.domain.payloads import DeleteResourcesInput

    namespace = namespace_for(settings, "proj_default")
    slug = f"held-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(
        namespace, {"metadata": {"name": slug, "finalizers": ["conveyor.test/hold"]}, "spec": {"ports": [{"port": 80}]}}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": manifests.env_secret_name(slug)}, "stringData": {"X": "1"}})
    heartbeats: list[object] = []
    environment = ActivityEnvironment()
    environment.on_heartbeat = lambda *details: heartbeats.append(details[0])
    try:
        with pytest.raises(errors.DeletionStuck) as stuck:
            environment.run(KubeActivities(settings).delete_app_resources, DeleteResourcesInput(namespace=namespace, slug=slug, timeout_seconds=2))
        assert str(stuck.value) == f"still present after 2s: Service/{slug}"
        # What the Web UI shows of the waiting step: from the first object still there on (found gone before it).
        assert heartbeats[-1][0] == f"Service/{slug}" and not [h for h in heartbeats[-1] if h.split("/")[0] in ("HorizontalPodAutoscaler", "Deployment")]
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_secret(manifests.env_secret_name(slug), namespace)
        assert gone.value.status == 404
    finally:
        core.patch_namespaced_service(slug, namespace, {"metadata": {"finalizers": None}})
