"""Manifest rendering is a pure function of the release snapshot."""

from __future__ import annotations

import base64
import hashlib
import json

from conveyor.domain import manifests
from conveyor.domain.payloads import ReleaseSpec


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


KEY = b"k" * 32


def render(release: ReleaseSpec, key: bytes = KEY) -> list[dict]:
    return manifests.render(release, key)


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


def checksum(objs: list[dict]) -> str:
    return by_kind(objs)["Deployment"]["spec"]["template"]["metadata"]["annotations"][manifests.ANNOTATION_ENV_CHECKSUM]


def test_renders_namespace_secret_deployment_service_ingress_in_order():
    kinds = [o["kind"] for o in render(spec())]
    assert kinds == ["Namespace", "Secret", "Deployment", "Service", "Ingress"]


def test_env_goes_into_a_secret_never_a_configmap():
    objs = by_kind(render(spec(env={"DATABASE_URL": "postgres://u:hunter2@db/x", "A": "1"})))
    secret = objs["Secret"]
    assert secret["metadata"]["name"] == "my-api-env" and secret["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "A": "1",
        "DATABASE_URL": "postgres://u:hunter2@db/x",
    }
    assert "stringData" not in secret
    rendered = json.dumps([o for o in render(spec(env={"DATABASE_URL": "postgres://u:hunter2@db/x"})) if o["kind"] != "Secret"])
    assert "hunter2" not in rendered


def test_the_env_checksum_is_keyed_not_a_plain_hash_of_the_env():
    low_entropy = {"PIN": "1234"}
    objs = render(spec(env=low_entropy))
    plain = json.dumps(low_entropy, sort_keys=True).encode()
    value = checksum(objs)
    assert value not in hashlib.sha256(plain).hexdigest()
    assert value not in hashlib.sha256(json.dumps({"app": "app_1", "env": low_entropy}, sort_keys=True).encode()).hexdigest()
    # Another key gives another checksum; the same key and env the same one.
    assert checksum(render(spec(env=low_entropy), b"x" * 32)) != value
    assert checksum(render(spec(env=low_entropy))) == value
    assert checksum(render(spec(env={"PIN": "1235"}))) != value


def test_deployment_pins_the_digest_and_reads_env_from_the_secret():
    objs = by_kind(render(spec()))
    dep = objs["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@sha256:" + "a" * 64)
    assert container["ports"][0]["containerPort"] == 3000
    assert container["envFrom"] == [{"secretRef": {"name": "my-api-env"}}]
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["progressDeadlineSeconds"] == 120
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["template"]["metadata"]["annotations"][manifests.ANNOTATION_DEPLOYMENT] == "dep_1"
    assert objs["Secret"]["data"] == {"A": "MQ==", "B": "Mg=="}


def test_service_and_ingress_route_the_subdomain_to_the_port():
    objs = by_kind(render(spec()))
    assert objs["Service"]["spec"]["ports"][0]["targetPort"] == 3000
    rule = objs["Ingress"]["spec"]["rules"][0]
    assert rule["host"] == "my-api.apps.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "my-api"


def test_env_change_changes_the_pod_template_and_restart_adds_its_annotation():
    a = by_kind(render(spec()))["Deployment"]["spec"]["template"]
    b = by_kind(render(spec(env={"A": "changed"})))["Deployment"]["spec"]["template"]
    assert a != b
    c = by_kind(render(spec(restarted_at="2026-01-01T00:00:00Z")))["Deployment"]["spec"]["template"]
    assert c["metadata"]["annotations"][manifests.ANNOTATION_RESTARTED] == "2026-01-01T00:00:00Z"
    assert manifests.ANNOTATION_RESTARTED not in a["metadata"]["annotations"]


def test_rendering_is_deterministic():
    assert render(spec()) == render(spec())


def test_every_process_pulls_with_the_namespaces_pull_secret():
    from conveyor.domain.workload import Process

    objects = manifests.render(spec(processes={"worker": Process(command=["w"])}), b"k" * 32)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": manifests.PULL_SECRET}]
    # The Secret itself is the apply activity's (from the database), never the release's.
    assert not any(o["kind"] == "Secret" and o["metadata"]["name"] == manifests.PULL_SECRET for o in objects)
