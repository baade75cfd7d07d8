"""Private registries on the real stack: a docker-registry with htpasswd auth
behind TLS (its CA in the platform's registry CA directory). Without a
credential the image cannot be deployed; with the project's credential it
is, the namespace's pull Secret holds it and the pods reference it; the
password is in no answer, no workflow history and no log file. Env values
are sealed in the database; the egress policy refuses internal addresses and
foreign token realms, and reads the same for every connection failure."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from sqlalchemy import text

from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.temporal_client import connect
from conveyor.domain import manifests
from tests.support import private_registry
from tests.support.api_client import assert_422_naming
from tests.support.waiting import eventually

PROJECT = "proj_default"


@pytest.fixture(scope="module")
def registry(platform, settings, tmp_path_factory):
    with private_registry.running(settings, tmp_path_factory.mktemp("private-registry")) as running:
        running.copy_from_platform(settings, "demo/web:v1", "team/web", "v1")
        yield running


@pytest.fixture
def credential(api, registry):
    saved = api.call("POST", "/registry-credentials", json={"registry": registry.host, "username": registry.username, "password": registry.password})
    assert saved.status_code in (200, 201), saved.text
    yield saved.json()
    api.call("DELETE", f"/registry-credentials/{registry.host}")


async def raw_histories(settings, app_id: str) -> list[bytes]:
    """Every workflow history of the app as Temporal stores it (encoded payloads)."""
    temporal = await connect(settings)
    found = [w async for w in temporal.list_workflows(f"AppId = '{app_id}'")]
    raw = []
    for w in found:
        history = await temporal.get_workflow_handle(w.id, run_id=w.run_id).fetch_history()
        raw.append(history.to_json().encode())
    return raw


async def decoded_histories(settings, app_id: str) -> list[str]:
    """The same histories with every payload decrypted by the codec (what an admin can read)."""
    temporal = await connect(settings)
    codec = temporal.data_converter.payload_codec
    texts = []
    async for w in temporal.list_workflows(f"AppId = '{app_id}'"):
        async for event in temporal.get_workflow_handle(w.id, run_id=w.run_id).fetch_history_events():
            for field in ("activity_task_scheduled_event_attributes", "activity_task_completed_event_attributes",
                          "workflow_execution_started_event_attributes", "workflow_execution_signaled_event_attributes"):
                if event.HasField(field):
                    attrs = getattr(event, field)
                    payloads = getattr(attrs, "input", None) or getattr(attrs, "result", None)
                    if payloads is not None and payloads.payloads:
                        texts.extend(p.data.decode(errors="replace") for p in await codec.decode(list(payloads.payloads)))
    return texts


def log_files(settings) -> list[Path]:
    return [p for p in settings.home.rglob("*.log") if p.is_file()] + [p for p in settings.home.rglob("logs/*") if p.is_file()]


def test_a_private_image_deploys_only_with_the_projects_credential(api, settings, kube_api, registry):
    image = f"{registry.host}/team/web:v1"
    answers = []
    app = api.create_app(image_url=image, replicas=2)
    first = api.wait_finished(app["id"], api.deployments(app["id"])[-1]["id"])
    assert first["status"] == "failed", first
    assert f"registry {registry.host} refused access to team/web (401)" in first["reason"], first["reason"]
    assert "no credential" in first["reason"] and "conveyor registry login" in first["reason"]

    saved = api.call("POST", "/registry-credentials", 201, json={"registry": registry.host, "username": registry.username, "password": registry.password})
    listed = api.call("GET", "/registry-credentials", 200)
    answers += [saved.text, listed.text]
    assert saved.json()["registry"] == registry.host and saved.json()["username"] == registry.username
    assert registry.host in [c["registry"] for c in listed.json()]
    try:
        second = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
        done = api.wait_active(app["id"], second["id"])
        answers += [json.dumps(done), api.call("GET", f"/apps/{app['id']}", 200).text, api.call("GET", f"/apps/{app['id']}/deployments", 200).text]
        assert done["image_ref"].startswith(f"{image}@sha256:")

        namespace = namespace_for(settings, PROJECT)
        core = client.CoreV1Api(kube_api)
        secret = core.read_namespaced_secret(manifests.PULL_SECRET, namespace)
        assert secret.type == "kubernetes.io/dockerconfigjson"
        config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
        entry = config["auths"][registry.host]
        assert (entry["username"], entry["password"]) == (registry.username, registry.password)
        assert base64.b64decode(entry["auth"]).decode() == f"{registry.username}:{registry.password}"
        deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(app["slug"], namespace)
        assert [s.name for s in deployment.spec.template.spec.image_pull_secrets] == [manifests.PULL_SECRET]
        pods = eventually(
            lambda: [p for p in core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={app['slug']}").items
                     if p.spec.containers[0].image.startswith(image)],
            30, what="the pods of the private image",
        )
        assert all([s.name for s in p.spec.image_pull_secrets] == [manifests.PULL_SECRET] for p in pods)

        # The password is nowhere a deployer, an operator's log or Temporal's database can read it.
        assert not any(registry.password in a for a in answers)
        raw = asyncio.run(raw_histories(settings, app["id"]))
        # The first deploy (refused without the credential) and the second: each a workflow of its own.
        assert len(raw) >= 2 and not any(registry.password.encode() in h for h in raw)
        decoded = asyncio.run(decoded_histories(settings, app["id"]))
        assert decoded and not any(registry.password in d for d in decoded)
        assert any("resolve_image_digest" in d or "team/web" in d for d in decoded)
        for path in log_files(settings):
            assert registry.password.encode() not in path.read_bytes(), path
        # At rest: sealed, not the password.
        with read_scope(settings.effective_database_url) as session:
            stored = session.execute(text("SELECT password FROM registry_credentials WHERE registry = :r"), {"r": registry.host}).scalar_one()
        assert registry.password not in str(stored) and "$sealed" in str(stored)
    finally:
        api.call("DELETE", f"/registry-credentials/{registry.host}", 204)
    assert registry.host not in [c["registry"] for c in api.call("GET", "/registry-credentials", 200).json()]


def test_a_credential_change_reaches_the_pull_secret_at_the_next_release(api, settings, kube_api, registry, credential):
    app = api.create_app(image_url=f"{registry.host}/team/web:v1", replicas=1)
    api.wait_active(app["id"], api.deployments(app["id"])[-1]["id"])
    namespace = namespace_for(settings, PROJECT)
    core = client.CoreV1Api(kube_api)
    assert registry.host in json.loads(base64.b64decode(core.read_namespaced_secret(manifests.PULL_SECRET, namespace).data[".dockerconfigjson"]))["auths"]
    api.call("DELETE", f"/registry-credentials/{credential['id']}", 204)
    restart = api.call("POST", f"/apps/{app['id']}/restart", 202).json()
    api.wait_active(app["id"], restart["id"])
    auths = json.loads(base64.b64decode(core.read_namespaced_secret(manifests.PULL_SECRET, namespace).data[".dockerconfigjson"]))["auths"]
    assert registry.host not in auths
    # And without it the tag no longer resolves.
    again = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    failed = api.wait_finished(app["id"], again["id"])
    assert failed["status"] == "failed" and "refused access" in failed["reason"]


def test_env_values_are_sealed_in_the_database_and_reach_the_release(api, settings, kube_api):
    secret = f"s3cret-{uuid.uuid4().hex}"
    app = api.create_app(replicas=1, env={"API_TOKEN": secret, "GREETING": "hello"})
    api.wait_active(app["id"], api.deployments(app["id"])[-1]["id"])
    with read_scope(settings.effective_database_url) as session:
        app_env = session.execute(text("SELECT env FROM apps WHERE id = :id"), {"id": app["id"]}).scalar_one()
        dep_envs = session.execute(text("SELECT env FROM deployments WHERE app_id = :id"), {"id": app["id"]}).scalars().all()
    for raw in [app_env, *dep_envs]:
        assert secret not in str(raw) and "hello" not in str(raw) and "$sealed" in str(raw), raw
    if settings.effective_database_url.startswith("sqlite"):
        with sqlite3.connect(settings.effective_database_url.removeprefix("sqlite:///")) as db:
            assert secret.encode() not in b"".join(str(r).encode() for r in db.execute("SELECT env FROM apps").fetchall())
    # The API masks it as before; the release has it.
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["env"] == {"API_TOKEN": "********", "GREETING": "hello"}
    env_secret = client.CoreV1Api(kube_api).read_namespaced_secret(manifests.env_secret_name(app["slug"]), namespace_for(settings, PROJECT))
    assert base64.b64decode(env_secret.data["API_TOKEN"]).decode() == secret


@pytest.mark.parametrize("image", ["169.254.169.254/latest/meta:v1", "10.0.0.1/team/web:v1", "127.0.0.2:5000/team/web:v1", "localhost:5000/x:v1", "[::1]:5000/x:v1"])
def test_images_on_internal_addresses_are_refused_naming_image_url(api, image):
    host = image.split("/", 1)[0]
    created = api.call("POST", "/apps", json={"name": f"egress-{uuid.uuid4().hex[:6]}", "image_url": image})
    assert_422_naming(created, "image_url", refused=host)
    app = api.create_app(replicas=1)
    patched = api.call("PATCH", f"/apps/{app['id']}", json={"image_url": image})
    assert_422_naming(patched, "image_url", refused=host)


def test_a_git_host_on_an_internal_address_is_refused_naming_repo_url(api):
    for url in ("https://10.1.2.3/team/app.git", "https://169.254.169.254/x.git", "git@192.168.1.1:team/app.git"):
        created = api.call("POST", "/apps", json={"name": f"egress-{uuid.uuid4().hex[:6]}", "source_type": "git", "repo_url": url})
        assert_422_naming(created, "repo_url", refused=url.split("/")[2] if "://" in url else "192.168.1.1")


@pytest.mark.parametrize(
    ("realm", "why"),
    [
        ("https://auth.example.org/token", "token realm on another host"),
        ("http://{host}/token", "not https"),
        ("https://10.0.0.7/token", "token realm on another host"),
    ],
)
def test_a_token_realm_elsewhere_is_refused(api, settings, tmp_path, realm, why):
    with private_registry.challenging_server(settings, tmp_path) as server:
        server.challenge = f'Bearer realm="{realm.format(host=server.host)}",service="test",scope="repository:team/web:pull"'
        app = api.create_app(image_url=f"{server.host}/team/web:v1", replicas=1)
        dep = api.wait_finished(app["id"], api.deployments(app["id"])[-1]["id"])
    assert dep["status"] == "failed", dep
    assert why in dep["reason"], dep["reason"]
    assert server.hits and all(hit.startswith("/v2/team/web/manifests/") for hit in server.hits), "only the registry itself was asked"


def test_connection_failures_read_the_same(api, settings, tmp_path):
    """A closed port and a port that speaks no TLS: one message, which says
    neither (the worker's log has the cause)."""
    closed = private_registry.free_port()
    with private_registry.challenging_server(settings, tmp_path):
        # An allowed host (the test's CA names 127.0.0.1), where nothing or something else listens.
        plain = _plain_listener()
        reasons = {}
        apps = {}
        for label, host in (("closed", f"127.0.0.1:{closed}"), ("no tls", f"127.0.0.1:{plain.getsockname()[1]}")):
            app = api.create_app(image_url=f"{host}/team/web:v1", replicas=1)
            dep = api.deployments(app["id"])[-1]
            apps[label] = (app, dep)
            detail = eventually(lambda app=app, dep=dep: (r := api.deployment(app["id"], dep["id"]).get("reason") or "") and "retrying" in r and r,
                                60, what=f"the {label} registry's retry")
            reasons[label] = re.sub(r"127\.0\.0\.1:\d+", "HOST", re.sub(r"\(attempt.*", "", detail)).strip()
        for app, dep in apps.values():
            api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel")
        plain.close()
    assert reasons["closed"] == reasons["no tls"], reasons
    assert "unreachable" in reasons["closed"] and not re.search(r"refused|ssl|tls|timed out|timeout", reasons["closed"], re.IGNORECASE), reasons


def _plain_listener():
    """A loopback port that accepts and closes connections (no TLS)."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock
