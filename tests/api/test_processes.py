"""Processes besides web, end to end on the real cluster: one Deployment per
process and only web served, a scale of one process, a dropped process
removed, a failed release restoring every process, a Procfile's lines run as
processes, and the app's delete removing them all. What the API refuses is
tested in process (tests/fast/test_process_rules.py)."""

from __future__ import annotations

import uuid

from kubernetes import client

from conveyor.domain import manifests
from tests.support.api_client import tarball, upload, upload_app
from tests.support.kube import read_or_none
from tests.support.waiting import eventually

WORKER = {"command": ["python", "worker.py"], "replicas": 2, "resources": {"cpu": "100m", "memory": "64Mi"}}
CLOCK = {"command": "python clock.py", "resources": {"cpu": "50m"}, "autoscaling": {"min_replicas": 1, "max_replicas": 2}}


def namespace_of(settings) -> str:
    return settings.project_namespace("proj_default")



def deployment(kube_api, settings, name: str) -> client.V1Deployment | None:
    return read_or_none(client.AppsV1Api(kube_api).read_namespaced_deployment, name, namespace_of(settings))


def autoscaler(kube_api, settings, name: str):
    return read_or_none(client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler, name, namespace_of(settings))


def process_ready(api, app_id: str, process: str, replicas: int) -> dict:
    def check():
        status = api.call("GET", f"/apps/{app_id}/status", 200, params={"process": process}).json()
        return status["desired_replicas"] == replicas and status["ready_replicas"] == replicas and status
    return eventually(check, 60, what=f"{process} to have {replicas} ready pods")


def test_each_process_is_its_own_deployment_scaled_alone_dropped_with_its_release_and_deleted_with_the_app(api, kube_api, settings, make_token):
    app = api.create_app(replicas=2, processes={"worker": WORKER, "clock": CLOCK})
    slug = app["slug"]
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert sorted(first["processes"]) == ["clock", "worker"]

    web, worker, clock = (deployment(kube_api, settings, name) for name in (slug, f"{slug}-worker", f"{slug}-clock"))
    assert web and worker and clock
    assert worker.spec.template.spec.containers[0].command == ["python", "worker.py"]
    assert clock.spec.template.spec.containers[0].command == ["/bin/sh", "-c", "python clock.py"]
    assert worker.spec.template.spec.containers[0].image == web.spec.template.spec.containers[0].image == first["image_ref"]
    assert worker.spec.template.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "64Mi"}
    assert not worker.spec.template.spec.containers[0].ports and web.spec.template.spec.containers[0].ports[0].container_port == 8080
    # Only web is served: the Service's pods are web's alone.
    core = client.CoreV1Api(kube_api)
    service = core.read_namespaced_service(slug, namespace_of(settings))
    served = core.list_namespaced_pod(namespace_of(settings), label_selector=",".join(f"{k}={v}" for k, v in service.spec.selector.items())).items
    assert served and {p.metadata.labels[manifests.LABEL_PROCESS] for p in served} == {"web"}
    assert autoscaler(kube_api, settings, f"{slug}-clock").spec.scale_target_ref.name == f"{slug}-clock"
    assert autoscaler(kube_api, settings, slug) is None

    # Status, pods, logs and metrics take ?process= (web by default).
    process_ready(api, app["id"], "worker", 2)
    assert api.wait_ready(app["id"], 2)["desired_replicas"] == 2
    pods = api.call("GET", f"/apps/{app['id']}/pods", 200, params={"process": "worker"}).json()
    assert len(pods) == 2 and all(p["name"].startswith(f"{slug}-worker-") for p in pods)
    assert all(p["name"].startswith(f"{slug}-") and not p["name"].startswith(f"{slug}-worker-") for p in api.call("GET", f"/apps/{app['id']}/pods", 200).json())
    assert api.call("GET", f"/apps/{app['id']}/logs", 200, params={"process": "worker"}).status_code == 200
    assert len(api.call("GET", f"/apps/{app['id']}/metrics", 200, params={"process": "worker"}).json()["pods"]) == 2
    assert api.call("GET", f"/apps/{app['id']}/status", params={"process": "ghost"}).status_code == 404
    assert api.call("GET", f"/apps/{app['id']}/status", params={"process": "Bad_Name"}).status_code == 422

    # A count alone scales that process: no release, web untouched; a deployer may do it.
    deployer, _ = make_token("deployer")
    scaled = api.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"worker": {"replicas": 3}}}, headers={"Authorization": f"Bearer {deployer}"})
    assert scaled.json()["processes"]["worker"]["replicas"] == 3
    process_ready(api, app["id"], "worker", 3)
    assert len(api.deployments(app["id"])) == 1
    assert deployment(kube_api, settings, slug).spec.replicas == 2

    # A release without `clock` removes its Deployment and autoscaler; worker keeps its count.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"clock": None}})
    second = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert sorted(second["processes"]) == ["worker"]
    assert deployment(kube_api, settings, f"{slug}-clock") is None and autoscaler(kube_api, settings, f"{slug}-clock") is None
    live_worker = deployment(kube_api, settings, f"{slug}-worker")
    assert live_worker.spec.replicas == 3
    assert live_worker.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == second["id"]

    # The app's delete removes every process.
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be deleted")
    assert all(deployment(kube_api, settings, name) is None for name in (slug, f"{slug}-worker"))
    left = core.list_namespaced_pod(namespace_of(settings), label_selector=f"{manifests.LABEL_APP_ID}={app['id']}").items
    assert not [p for p in left if not p.metadata.deletion_timestamp]


def test_a_release_whose_worker_never_becomes_ready_restores_web_and_worker(api, kube_api, settings):
    app = api.create_app(replicas=1, progress_deadline_seconds=15, processes={"worker": {"command": ["python", "worker.py"], "replicas": 1}})
    slug = app["slug"]
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    # v2: a new image for both, and a worker no node can hold (50 CPUs a pod): it never becomes ready.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={
        "image_url": f"{api.registry}/demo/web:v2",
        "processes": {"worker": {"command": ["python", "worker.py"], "resources": {"cpu": "50"}}},
    })
    second = api.wait_finished(app["id"], api.deployments(app["id"])[0]["id"], timeout=120)
    assert second["status"] == "failed" and f"{slug}-worker" in second["reason"], second["reason"]
    assert "keeps serving" in second["reason"]
    restore = next(step for step in second["progress"] if step["name"] == "restore")
    assert restore["state"] == "done", second["progress"]

    # Both are back on v1: its image, and the worker's definition without the request.
    web, worker = deployment(kube_api, settings, slug), deployment(kube_api, settings, f"{slug}-worker")
    for live in (web, worker):
        assert live.spec.template.spec.containers[0].image == first["image_ref"]
        assert live.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == first["id"]
    assert not (worker.spec.template.spec.containers[0].resources.requests or {})
    process_ready(api, app["id"], "worker", 1)
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["status"] == "running"


def test_a_procfiles_lines_run_as_processes_of_every_release_of_its_image(api, kube_api, settings, make_token):
    app = upload_app(api)
    source = {"Procfile": "web: httpd -f -p 8080 -h /app\nworker: sleep 3600\n", "index.html": "procfile\n"}
    dep = api.wait_active(app["id"], upload(api, app["id"], tarball(source)).json()["id"], timeout=180)
    log = api.call("GET", f"/apps/{app['id']}/build-log", 200, params={"build_id": dep["build_id"]}).text
    assert "Procfile processes besides web: worker" in log
    slug = app["slug"]
    worker = deployment(kube_api, settings, f"{slug}-worker")
    assert worker is not None and worker.spec.template.spec.containers[0].command == ["/bin/sh", "-c", "sleep 3600"]
    process_ready(api, app["id"], "worker", 1)

    # A config change releases the running image without a build: its Procfile's processes come along.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"MODE": "two"}})
    second = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert not [s for s in second["progress"] if s["name"] == "build"]
    worker = deployment(kube_api, settings, f"{slug}-worker")
    assert worker.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == second["id"]

    # A Procfile's process is scaled like a declared one (a scale, no release), and keeps its Procfile command.
    deployer, _ = make_token("deployer")
    released = len(api.deployments(app["id"]))
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"worker": {"replicas": 2}}}, headers={"Authorization": f"Bearer {deployer}"})
    process_ready(api, app["id"], "worker", 2)
    assert len(api.deployments(app["id"])) == released
    assert deployment(kube_api, settings, f"{slug}-worker").spec.template.spec.containers[0].command == ["/bin/sh", "-c", "sleep 3600"]


def test_a_cancel_while_the_worker_rolls_out_restores_every_process(api, kube_api, settings):
    app = api.create_app(replicas=1, progress_deadline_seconds=300, processes={"worker": {"command": ["python", "worker.py"]}})
    slug = app["slug"]
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    api.call("PATCH", f"/apps/{app['id']}", 202, json={
        "image_url": f"{api.registry}/demo/web:v2",
        "processes": {"worker": {"command": ["python", "worker.py"], "resources": {"cpu": "50"}}},
    })
    dep = api.deployments(app["id"])[0]

    def web_out_worker_waiting():
        current = api.deployment(app["id"], dep["id"])
        rollout = next((s for s in current["progress"] or [] if s["name"] == "rollout"), None)
        return rollout is not None and rollout["state"] == "running" and f"{slug} 1/1" in rollout["detail"] and rollout
    step = eventually(web_out_worker_waiting, 60, what="web rolled out while the worker waits")
    assert f"{slug}-worker 0/1" in step["detail"], step
    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    cancelled = api.wait_finished(app["id"], dep["id"], timeout=90)
    assert cancelled["status"] == "cancelled" and "keeps serving" in cancelled["reason"], cancelled["reason"]
    for name in (slug, f"{slug}-worker"):
        live = deployment(kube_api, settings, name)
        assert live.spec.template.metadata.annotations[manifests.ANNOTATION_DEPLOYMENT] == first["id"], name
    process_ready(api, app["id"], "worker", 1)


def test_a_process_never_takes_over_another_apps_deployment(api, kube_api, settings):
    """The API refuses a name it can see clash (tests/fast); a Deployment of
    that name owned by another app (a Procfile line, made by hand) fails the
    release instead, and is left as it was."""
    app = api.create_app(name=f"own-{uuid.uuid4().hex[:6]}")
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    foreign = f"{app['slug']}-worker"
    apps = client.AppsV1Api(kube_api)
    labels = {manifests.LABEL_APP: foreign, manifests.LABEL_APP_ID: "app_someoneelse"}
    apps.create_namespaced_deployment(namespace_of(settings), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": foreign, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {manifests.LABEL_APP: foreign}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "x", "image": f"{api.registry}/demo/web:v1"}]}}},
    })
    try:
        api.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"worker": {"command": ["w"]}}})
        failed = api.wait_finished(app["id"], api.deployments(app["id"])[0]["id"])
        assert failed["status"] == "failed" and "belongs to another app" in failed["reason"], failed["reason"]
        live = apps.read_namespaced_deployment(foreign, namespace_of(settings))
        assert live.metadata.labels[manifests.LABEL_APP_ID] == "app_someoneelse"
        assert live.spec.template.spec.containers[0].name == "x"
    finally:
        apps.delete_namespaced_deployment(foreign, namespace_of(settings))
