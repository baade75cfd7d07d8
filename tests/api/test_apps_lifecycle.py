"""The apps lifecycle end to end through HTTP, on the real stack:
API → Temporal → worker → Kubernetes (KWOK nodes) and the registry."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.temporal_client import connect
from conveyor.domain import manifests, markers
from conveyor.stack import registry
from tests.support.waiting import eventually

NAMESPACE_PROJECT = "proj_default"


def k8s_deployment(kube_api, settings, slug: str) -> client.V1Deployment:
    return client.AppsV1Api(kube_api).read_namespaced_deployment(slug, namespace_for(settings, NAMESPACE_PROJECT))


def pod_names(api, app_id: str) -> set[str]:
    return {p["name"] for p in api.status(app_id)["pods"]}


def test_create_deploys_three_ready_replicas_pinned_to_the_registry_digest(api, kube_api, settings):
    app = api.create_app(replicas=3)
    assert app["id"].startswith("app_") and app["project_id"] == "proj_default"
    assert app["status"] == "deploying" and app["created_at"].endswith("Z")
    [first] = api.deployments(app["id"])
    assert first["id"].startswith("dep_")

    dep = api.wait_active(app["id"], first["id"])
    status = api.wait_ready(app["id"], 3)
    assert {p["phase"] for p in status["pods"]} == {"Running"}

    digest = registry.manifest_digest(settings, "demo/web", "v1")
    assert dep["image_digest"] == digest
    assert dep["image_ref"] == f"{api.registry}/demo/web:v1@{digest}"
    container = k8s_deployment(kube_api, settings, app["slug"]).spec.template.spec.containers[0]
    assert container.image == dep["image_ref"]

    got = api.call("GET", f"/apps/{app['id']}", 200).json()
    assert got["status"] == "running" and got["last_deploy_at"].endswith("Z")
    assert [a["action"] for a in api.call("GET", f"/apps/{app['id']}/audit", 200).json()] == ["deploy", "create"]


def test_env_change_is_a_new_deployment_and_supersedes_the_old(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    response = api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"LOG_LEVEL": "debug", "GREETING": None}})
    assert response.json()["env"] == {"LOG_LEVEL": "debug"}

    newest = api.deployments(app["id"])[0]
    assert newest["id"] != first["id"] and newest["operation"] == "update"
    api.wait_active(app["id"], newest["id"])
    assert api.deployment(app["id"], first["id"])["status"] == "superseded"

    secret = client.CoreV1Api(kube_api).read_namespaced_secret(
        manifests.env_secret_name(app["slug"]), namespace_for(settings, NAMESPACE_PROJECT)
    )
    assert secret.data == {"LOG_LEVEL": "ZGVidWc="}
    api.wait_ready(app["id"], 2)
    audit = api.call("GET", f"/apps/{app['id']}/audit", 200).json()
    assert audit[0]["action"] == "update" and "LOG_LEVEL" in audit[1]["details"] + audit[0]["details"]


def test_scale_three_five_zero_two(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    for replicas in (3, 5, 0, 2):
        response = api.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": replicas})
        assert response.json()["replicas"] == replicas
        api.wait_ready(app["id"], replicas)
        assert k8s_deployment(kube_api, settings, app["slug"]).spec.replicas == replicas
    # Scaling is not a release: still the one deployment, still active.
    assert [d["id"] for d in api.deployments(app["id"])] == [first["id"]]
    def scale_details():
        audit = api.call("GET", f"/apps/{app['id']}/audit", 200).json()
        entries = [a["details"] for a in audit if a["action"] == "scale"]
        return entries[::-1] if len(entries) == 4 else None

    details = eventually(scale_details, 30, what="four scale audit entries")
    assert details == [
        "Scaled from 2 to 3 replicas",
        "Scaled from 3 to 5 replicas",
        "Scaled from 5 to 0 replicas",
        "Scaled from 0 to 2 replicas",
    ]


def test_restart_replaces_every_pod(api, deployed_app):
    app, first = deployed_app
    before = pod_names(api, app["id"])
    assert len(before) == 2
    dep = api.call("POST", f"/apps/{app['id']}/restart", 202).json()
    assert dep["operation"] == "restart" and dep["image_ref"] == first["image_ref"]
    api.wait_active(app["id"], dep["id"])
    after = api.wait_ready(app["id"], 2)
    assert not before & {p["name"] for p in after["pods"]}, "every pod should have been replaced"


def test_revert_puts_the_first_digest_back_as_a_new_deployment(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v2"})
    second = api.deployments(app["id"])[0]
    second = api.wait_active(app["id"], second["id"])
    assert second["image_digest"] == registry.manifest_digest(settings, "demo/web", "v2") != first["image_digest"]

    revert = api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    assert revert["operation"] == "rollback" and revert["rollback_of"] == first["id"]
    assert revert["id"] not in (first["id"], second["id"])
    revert = api.wait_active(app["id"], revert["id"])
    assert revert["image_digest"] == first["image_digest"]
    assert api.deployment(app["id"], second["id"])["status"] == "superseded"
    image = k8s_deployment(kube_api, settings, app["slug"]).spec.template.spec.containers[0].image
    assert image == first["image_ref"]
    assert [d["id"] for d in api.deployments(app["id"])] == [revert["id"], second["id"], first["id"]]
    api.wait_ready(app["id"], 2)


@pytest.mark.parametrize("marker", markers.ALL, ids=lambda m: m.suffix.lstrip("-"))
def test_failing_image_fails_with_its_reason_and_the_previous_release_keeps_serving(
    api, kube_api, settings, marker
):
    app = api.create_app(replicas=2, progress_deadline_seconds=10)
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    before = pod_names(api, app["id"])

    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1{marker.suffix}"})
    bad = api.deployments(app["id"])[0]
    bad = api.wait_finished(app["id"], bad["id"], timeout=120)

    assert bad["status"] == "failed"
    expected = marker.reason or "progress deadline"
    assert expected in bad["reason"], bad["reason"]
    assert first["id"] in bad["reason"], "the reason should say which deployment keeps serving"
    assert api.deployment(app["id"], first["id"])["status"] == "active"
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["status"] == "running"
    image = k8s_deployment(kube_api, settings, app["slug"]).spec.template.spec.containers[0].image
    assert image == first["image_ref"]
    status = api.wait_ready(app["id"], 2)
    # The old pods never stopped serving (maxUnavailable 0).
    assert before == {p["name"] for p in status["pods"]}
    failed = [a for a in api.call("GET", f"/apps/{app['id']}/audit", 200).json() if a["action"] == "update_failed"]
    assert failed and expected in failed[0]["details"]


def test_two_deploys_in_quick_succession_run_one_after_the_other(api, deployed_app):
    app, first = deployed_app
    one = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    two = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    assert two["status"] == "queued"
    api.wait_finished(app["id"], one["id"])
    two = api.wait_finished(app["id"], two["id"])
    one = api.deployment(app["id"], one["id"])
    assert (one["status"], two["status"]) == ("superseded", "active")
    assert two["started_at"] >= one["finished_at"], (one, two)
    assert two["number"] == one["number"] + 1


async def _workflows_for(settings, deployment_id: str) -> list:
    temporal = await connect(settings)
    for _ in range(40):
        found = [w async for w in temporal.list_workflows(f"DeploymentId = '{deployment_id}'")]
        if found:
            return found
        await asyncio.sleep(0.25)
    return []


def test_repeated_idempotency_key_starts_one_workflow(api, settings, deployed_app):
    app, first = deployed_app
    key = f"deploy-{uuid.uuid4()}"
    a = api.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": key})
    b = api.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": key})
    assert a.json() == b.json()
    assert b.headers.get("Idempotent-Replayed") == "true"
    assert len(api.deployments(app["id"])) == 2
    api.wait_active(app["id"], a.json()["id"])
    workflows = asyncio.run(_workflows_for(settings, a.json()["id"]))
    assert len(workflows) == 1
    # The same key on another request is refused, not replayed.
    other = api.call("POST", f"/apps/{app['id']}/restart", headers={"Idempotency-Key": key})
    assert other.status_code == 422 and "Idempotency-Key" in other.text


def test_workflows_carry_search_attributes_and_a_readable_summary(api, settings, deployed_app):
    app, first = deployed_app
    [workflow] = asyncio.run(_workflows_for(settings, first["id"]))
    assert workflow.id == first["workflow_id"]
    attributes = {k.name: v for k, v in ((p.key, p.value) for p in workflow.typed_search_attributes)}
    assert attributes["AppId"] == app["id"]
    assert attributes["ProjectId"] == "proj_default"
    assert attributes["Operation"] == "deploy"

    async def summary() -> str | None:
        temporal = await connect(settings)
        description = await temporal.get_workflow_handle(first["workflow_id"]).describe()
        return await description.static_summary()

    text = asyncio.run(summary())
    assert text == f"deploy {app['name']} → {api.registry}/demo/web:v1 ×2"


def test_delete_leaves_no_kubernetes_object_behind(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    response = api.call("DELETE", f"/apps/{app['id']}", 202)
    assert response.json()["status"] == "deleting"
    assert api.call("POST", f"/apps/{app['id']}/deploy").status_code == 409
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 60, what="the app to be removed")

    namespace = namespace_for(settings, NAMESPACE_PROJECT)
    core, apps_api, net = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api), client.NetworkingV1Api(kube_api)
    for read, name in (
        (apps_api.read_namespaced_deployment, app["slug"]),
        (core.read_namespaced_service, app["slug"]),
        (net.read_namespaced_ingress, app["slug"]),
        (core.read_namespaced_secret, manifests.env_secret_name(app["slug"])),
        (core.read_namespaced_config_map, manifests.env_config_map_name(app["slug"])),
    ):
        with pytest.raises(ApiException) as gone:
            read(name, namespace)
        assert gone.value.status == 404
    selector = f"{manifests.LABEL_APP}={app['slug']}"
    assert core.list_namespaced_pod(namespace, label_selector=selector).items == []
    assert apps_api.list_namespaced_replica_set(namespace, label_selector=selector).items == []


def test_status_of_a_fresh_app_reports_its_pods(api):
    app = api.create_app(replicas=1)
    status = api.wait_ready(app["id"], 1)
    assert status["pods"][0]["name"].startswith(app["slug"] + "-")
    pods = api.call("GET", f"/apps/{app['id']}/pods", 200).json()
    assert pods[0]["node"].startswith("kwok-node-") and pods[0]["restarts"] == 0 and pods[0]["reason"] is None
    assert "@sha256:" in pods[0]["image"] and pods[0]["image"].endswith(pods[0]["image_digest"])
    assert 0 <= pods[0]["age_seconds"] < 300
