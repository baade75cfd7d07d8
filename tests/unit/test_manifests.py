"""Manifest rendering is a pure function of the release snapshot."""

from __future__ import annotations

from conveyor import manifests
from conveyor.payloads import ReleaseSpec


def spec(**overrides) -> ReleaseSpec:
    base = dict(
        app_id="app_1",
        project_id="proj_default",
        deployment_id="dep_1",
        name="My API",
        slug="my-api",
        namespace="conveyor-default",
        image_ref="127.0.0.1:5000/demo/web:v1@sha256:" + "a" * 64,
        port=3000,
        replicas=3,
        env={"B": "2", "A": "1"},
        progress_deadline_seconds=120,
        base_domain="apps.example.com",
    )
    return ReleaseSpec(**{**base, **overrides})


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


def test_renders_namespace_configmap_deployment_service_ingress_in_order():
    kinds = [o["kind"] for o in manifests.render(spec())]
    assert kinds == ["Namespace", "ConfigMap", "Deployment", "Service", "Ingress"]


def test_deployment_pins_the_digest_and_reads_env_from_the_configmap():
    objs = by_kind(manifests.render(spec()))
    dep = objs["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@sha256:" + "a" * 64)
    assert container["ports"][0]["containerPort"] == 3000
    assert container["envFrom"][0]["configMapRef"]["name"] == "my-api-env"
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["progressDeadlineSeconds"] == 120
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["template"]["metadata"]["annotations"][manifests.ANNOTATION_DEPLOYMENT] == "dep_1"
    assert objs["ConfigMap"]["data"] == {"A": "1", "B": "2"}


def test_service_and_ingress_route_the_subdomain_to_the_port():
    objs = by_kind(manifests.render(spec()))
    assert objs["Service"]["spec"]["ports"][0]["targetPort"] == 3000
    rule = objs["Ingress"]["spec"]["rules"][0]
    assert rule["host"] == "my-api.apps.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "my-api"


def test_env_change_changes_the_pod_template_and_restart_adds_its_annotation():
    a = by_kind(manifests.render(spec()))["Deployment"]["spec"]["template"]
    b = by_kind(manifests.render(spec(env={"A": "changed"})))["Deployment"]["spec"]["template"]
    assert a != b
    c = by_kind(manifests.render(spec(restarted_at="2026-01-01T00:00:00Z")))["Deployment"]["spec"]["template"]
    assert c["metadata"]["annotations"][manifests.ANNOTATION_RESTARTED] == "2026-01-01T00:00:00Z"
    assert manifests.ANNOTATION_RESTARTED not in a["metadata"]["annotations"]


def test_rendering_is_deterministic():
    assert manifests.render(spec()) == manifests.render(spec())
