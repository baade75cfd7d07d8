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
