"""Health checks, resources and project limits, end to end: what the
cluster holds, what a revert restores, and a project's LimitRange and
ResourceQuota in its namespace. What the API refuses is tested in process
(tests/fast/test_workload_rules.py)."""

from __future__ import annotations

import uuid

from kubernetes import client

from conveyor.clients.db.models import Project
from conveyor.clients.db.queries import create_project, set_project_limits
from conveyor.clients.db.session import read_scope, session_scope
from tests.support.api_client import Api
from tests.support.waiting import eventually

HEALTHCHECK = {"type": "http", "path": "/healthz", "port": 8080, "period_seconds": 3, "failure_threshold": 2}
LIVENESS = {"type": "tcp", "initial_delay_seconds": 5}
STARTUP = {"type": "exec", "command": ["/bin/true"], "period_seconds": 2, "failure_threshold": 30}
RESOURCES = {"cpu": "250m", "memory": "256Mi", "cpu_limit": "1", "memory_limit": "512Mi"}


def container_of(kube_api, namespace: str, slug: str) -> client.V1Container:
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(slug, namespace)
    return deployment.spec.template.spec.containers[0]


def default_namespace(settings) -> str:
    return settings.project_namespace("proj_default")


def test_probes_and_resources_reach_the_cluster_and_the_deployment_snapshot(api, kube_api, settings):
    app = api.create_app(replicas=2, healthcheck=HEALTHCHECK, liveness=LIVENESS, startup=STARTUP, resources=RESOURCES)
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    shown = api.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["healthcheck"]["path"] == "/healthz" and shown["liveness"]["type"] == "tcp"
    assert shown["startup"]["command"] == ["/bin/true"] and shown["resources"] == RESOURCES
    snapshot = api.deployment(app["id"], first["id"])
    assert snapshot["resources"] == RESOURCES and snapshot["healthcheck"]["path"] == "/healthz"

    pod = container_of(kube_api, default_namespace(settings), app["slug"])
    assert (pod.readiness_probe.http_get.path, pod.readiness_probe.http_get.port) == ("/healthz", 8080)
    assert (pod.readiness_probe.period_seconds, pod.readiness_probe.failure_threshold) == (3, 2)
    assert pod.liveness_probe.tcp_socket.port == 8080 and pod.liveness_probe.initial_delay_seconds == 5
    assert pod.startup_probe._exec.command == ["/bin/true"]
    assert pod.resources.requests == {"cpu": "250m", "memory": "256Mi"}
    assert pod.resources.limits == {"cpu": "1", "memory": "512Mi"}
    api.wait_ready(app["id"], 2)


def test_a_change_of_checks_or_resources_is_a_release_and_a_revert_restores_them(api, kube_api, settings):
    app = api.create_app(replicas=1, healthcheck=HEALTHCHECK, resources=RESOURCES)
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    changed = {"cpu": "500m", "memory": "128Mi"}
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"resources": changed, "healthcheck": None, "liveness": LIVENESS})
    second = api.deployments(app["id"])[0]
    assert second["id"] != first["id"] and second["operation"] == "update"
    api.wait_active(app["id"], second["id"])
    pod = container_of(kube_api, default_namespace(settings), app["slug"])
    assert pod.resources.requests == {"cpu": "500m", "memory": "128Mi"} and not pod.resources.limits
    # No healthcheck: the TCP check on the port again.
    assert pod.readiness_probe.tcp_socket.port == 8080 and pod.readiness_probe.http_get is None
    assert pod.liveness_probe.tcp_socket.port == 8080

    revert = api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    api.wait_active(app["id"], revert["id"])
    pod = container_of(kube_api, default_namespace(settings), app["slug"])
    assert pod.resources.requests == {"cpu": "250m", "memory": "256Mi"}
    assert pod.readiness_probe.http_get.path == "/healthz" and pod.liveness_probe is None
    shown = api.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["resources"] == RESOURCES and shown["healthcheck"]["path"] == "/healthz" and shown["liveness"] is None


def test_a_project_quota_is_in_its_namespace_and_refuses_what_would_exceed_it(platform, settings, kube_api, make_token):
    name = f"q{uuid.uuid4().hex[:8]}"
    with session_scope(settings.effective_database_url) as session:
        create_project(session, settings, name)
        set_project_limits(
            session, settings, f"proj_{name}",
            {"default_cpu": "100m", "default_memory": "64Mi", "quota_pods": 6, "quota_cpu": "1", "quota_memory": "1Gi"},
        )
    token, _ = make_token("admin", f"proj_{name}")
    api = Api(settings.api_url, token, settings.registry)
    namespace = settings.project_namespace(f"proj_{name}")

    # 6 pods: 4 replicas and 1 surge fit; a second app of 2 (and its surge) would not.
    app = api.create_app(replicas=4)
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    core = client.CoreV1Api(kube_api)
    quota = core.read_namespaced_resource_quota("conveyor-quota", namespace)
    assert quota.spec.hard == {"pods": "6", "requests.cpu": "1", "requests.memory": "1Gi"}
    limit_range = core.read_namespaced_limit_range("conveyor-defaults", namespace)
    assert limit_range.spec.limits[0].default_request == {"cpu": "100m", "memory": "64Mi"}
    # The pods that asked for nothing got the project's defaults.
    pods = core.list_namespaced_pod(namespace).items
    assert pods and all(p.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "64Mi"} for p in pods)

    # What the quota refuses is refused by the API first (tests/fast/test_workload_rules.py):
    refused = api.call("POST", "/apps", json={"name": "second", "image_url": f"{api.registry}/demo/web:v1", "replicas": 2})
    assert refused.status_code == 422 and "quota of 6" in refused.text, refused.text
    with read_scope(settings.effective_database_url) as session:
        assert session.get(Project, f"proj_{name}").limits["quota_pods"] == 6
    api.call("DELETE", f"/apps/{app['id']}", 202)


def annotate_usage(kube_api, namespace: str, slug: str, cpu: str | None) -> int:
    """Set (or, with None, remove) KWOK's simulated CPU use of each of the app's pods; how many."""
    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={slug}").items
    for pod in pods:
        core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"annotations": {"kwok.x-k8s.io/usage-cpu": cpu}}})
    return len(pods)


def test_autoscaling_scales_on_simulated_cpu_and_a_release_keeps_its_count(api, kube_api, settings):
    scaling = {"min_replicas": 2, "max_replicas": 4, "target_cpu_percent": 50, "scale_down_delay_seconds": 0}
    app = api.create_app(replicas=1, resources={"cpu": "100m"}, autoscaling=scaling)
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    namespace = default_namespace(settings)
    apps = client.AppsV1Api(kube_api)
    # A new Deployment starts within the bounds: 2, not the 1 asked for.
    assert apps.read_namespaced_deployment(app["slug"], namespace).spec.replicas == 2
    scaler = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(app["slug"], namespace)
    assert (scaler.spec.min_replicas, scaler.spec.max_replicas) == (2, 4)
    assert scaler.spec.metrics[0].resource.target.average_utilization == 50

    # A release applies the count the autoscaler keeps, not the app's `replicas`.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"RELEASE": "2"}})
    second = api.deployments(app["id"])[0]
    api.wait_active(app["id"], second["id"])
    assert apps.read_namespaced_deployment(app["slug"], namespace).spec.replicas == 2

    # Busy pods (300m used of 100m asked): the real controller scales up to the bound...
    eventually(lambda: annotate_usage(kube_api, namespace, app["slug"], "300m") and api.status(app["id"])["autoscaler"]["desired_replicas"] == 4, 240, interval=5, what="the autoscaler to ask for 4 pods")
    eventually(lambda: apps.read_namespaced_deployment(app["slug"], namespace).spec.replicas == 4, 60, what="the Deployment to scale to 4")
    status = api.status(app["id"])["autoscaler"]
    assert (status["min_replicas"], status["max_replicas"]) == (2, 4) and status["current_cpu_percent"] is not None
    # ... and back down when they are idle again.
    eventually(lambda: annotate_usage(kube_api, namespace, app["slug"], None) >= 0 and apps.read_namespaced_deployment(app["slug"], namespace).spec.replicas == 2, 240, interval=5, what="the Deployment to scale back to 2")

    # Autoscaling off: the autoscaler goes, and the app's replicas hold again.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"autoscaling": None})
    third = api.deployments(app["id"])[0]
    api.wait_active(app["id"], third["id"])
    missing = eventually(lambda: _gone(kube_api, namespace, app["slug"]), 30, what="the autoscaler to be deleted")
    assert missing
    assert apps.read_namespaced_deployment(app["slug"], namespace).spec.replicas == 1
    api.call("DELETE", f"/apps/{app['id']}", 202)


def _gone(kube_api, namespace: str, name: str) -> bool:
    try:
        client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    except client.ApiException as exc:
        return exc.status == 404
    return False


def test_drift_made_by_hand_is_shown_and_undone_by_the_next_release(api, kube_api, settings):
    app = api.create_app(replicas=2, resources={"cpu": "100m"})
    [first] = api.deployments(app["id"])
    api.wait_active(app["id"], first["id"])
    assert (api.status(app["id"])["drift"], api.status(app["id"])["drift_fields"]) == (False, [])
    namespace = default_namespace(settings)
    apps = client.AppsV1Api(kube_api)
    # As `kubectl scale --replicas=3` and `kubectl set resources` would.
    apps.patch_namespaced_deployment_scale(app["slug"], namespace, {"spec": {"replicas": 3}})
    apps.patch_namespaced_deployment(
        app["slug"], namespace, {"spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "900m"}}}]}}}}
    )
    status = eventually(lambda: (s := api.status(app["id"]))["drift"] and s, 30, what="drift to show")
    assert status["drift_fields"] == ["replicas", "resources"]
    restart = api.call("POST", f"/apps/{app['id']}/restart", 202).json()
    api.wait_active(app["id"], restart["id"])
    live = apps.read_namespaced_deployment(app["slug"], namespace)
    assert live.spec.replicas == 2 and live.spec.template.spec.containers[0].resources.requests == {"cpu": "100m"}
    assert api.status(app["id"])["drift"] is False
    api.call("DELETE", f"/apps/{app['id']}", 202)
