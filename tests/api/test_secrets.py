"""Secret env values on the real stack: ciphertext in Temporal's histories, a
codec endpoint that decrypts only for an authorised token, and a Kubernetes
Secret (never a ConfigMap) that the pods read."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid

import httpx
import pytest
from google.protobuf import json_format
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.payload_codec import ENCODING
from conveyor.clients.temporal_client import connect
from conveyor.domain import manifests
from conveyor.domain.payloads import ApplyInput
from conveyor.stack import temporal
from scripts import web_ui_codec_check
from tests.support.api_client import start_never_ready_deploy
from tests.support.kube import read_or_none
from tests.support.waiting import eventually

NAMESPACE_PROJECT = "proj_default"


def secret_env() -> tuple[str, dict[str, str]]:
    password = f"pw-{uuid.uuid4().hex}"
    return password, {"DATABASE_URL": f"postgres://app:{password}@db.internal:5432/app", "GREETING": "hello"}



async def histories(settings, app_id: str, client: Client) -> dict[str, list]:
    found = []
    for _ in range(40):
        found = [w async for w in client.list_workflows(f"AppId = '{app_id}'")]
        if len(found) >= 2:  # the app's lane and its deploy
            break
        await asyncio.sleep(0.25)
    return {w.id: (await client.get_workflow_handle(w.id, run_id=w.run_id).fetch_history()).events for w in found}


@pytest.fixture
def app_with_secret(api):
    password, env = secret_env()
    app = api.create_app(replicas=1, env=env)
    first = api.deployments(app["id"])[-1]
    api.wait_active(app["id"], first["id"])
    return app, first, password, env


def test_secret_env_is_ciphertext_in_every_history_and_the_codec_client_reads_it(api, settings, app_with_secret):
    app, first, password, env = app_with_secret

    async def read_histories():
        # A client without the codec sees what Temporal stores.
        raw = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        stored = await histories(settings, app["id"], raw)
        decoding = await connect(settings)
        apply_inputs = []
        for events in stored.values():
            for event in events:
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    attrs = event.activity_task_scheduled_event_attributes
                    if attrs.activity_type.name == "apply_manifests":
                        apply_inputs.append(attrs.input)
        decoded = [(await decoding.data_converter.decode(p.payloads, [ApplyInput]))[0] for p in apply_inputs]
        return stored, apply_inputs, decoded

    stored, apply_inputs, decoded = asyncio.run(read_histories())
    assert first["workflow_id"] in stored, list(stored)
    events = [event for history in stored.values() for event in history]
    assert len(events) > 20
    for event in events:
        raw_bytes = event.SerializeToString()
        assert password.encode() not in raw_bytes, event
        assert base64.b64encode(password.encode()) not in raw_bytes
    # Payloads are marked encrypted; the platform's client decodes them.
    assert apply_inputs and all(p.metadata["encoding"] == ENCODING for inputs in apply_inputs for p in inputs.payloads)
    assert decoded[0].spec.env == env

    # Neither the deployment record nor the audit trail carries the value; GET masks it.
    for path in (f"/apps/{app['id']}/deployments/{first['id']}", f"/apps/{app['id']}/audit", f"/apps/{app['id']}"):
        assert password not in api.call("GET", path, 200).text
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["env"]["DATABASE_URL"] == "********"
    # The list reads the sealed env as stored text and opens it itself (on
    # this run's database, SQLite or PostgreSQL): the same body as GET.
    listed = api.call("GET", "/apps", 200, params={"name": app["name"]})
    assert listed.json() == [api.call("GET", f"/apps/{app['id']}", 200).json()] and password not in listed.text


def test_the_codec_endpoint_decodes_for_an_admin_and_refuses_others(api, settings, make_token, app_with_secret):
    app, first, password, env = app_with_secret

    async def apply_input() -> Payloads:
        raw = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        async for event in raw.get_workflow_handle(first["workflow_id"]).fetch_history_events():
            if event.activity_task_scheduled_event_attributes.activity_type.name == "apply_manifests":
                return event.activity_task_scheduled_event_attributes.input
        raise AssertionError("no apply_manifests in the deploy's history")

    body = json_format.MessageToJson(asyncio.run(apply_input()))
    assert password not in body
    url = f"{settings.codec_endpoint}/decode"
    headers = {"Content-Type": "application/json", "X-Namespace": settings.temporal_namespace}
    admin = {**headers, "Authorization": api.http.headers["Authorization"]}

    decoded = httpx.post(url, content=body, headers=admin)
    assert decoded.status_code == 200, decoded.text
    [payload] = decoded.json()["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(payload["data"]))["spec"]["env"] == env

    assert httpx.post(url, content=body, headers=headers).status_code == 401
    assert httpx.post(url, content=body, headers={**headers, "Authorization": "Bearer cvy_not-a-token"}).status_code == 401
    deployer, _ = make_token("deployer")
    refused = httpx.post(url, content=body, headers={**headers, "Authorization": f"Bearer {deployer}"})
    assert refused.status_code == 403 and password not in refused.text
    other_namespace = httpx.post(url, content=body, headers={**admin, "X-Namespace": "elsewhere"})
    assert other_namespace.status_code == 404
    bad = httpx.post(url, content=b'{"payloads": 3}', headers=admin)
    assert bad.status_code == 400 and "payloads" in bad.text

    # /encode gives ciphertext that /decode turns back.
    plain = Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(password).encode())])
    encoded = httpx.post(f"{settings.codec_endpoint}/encode", content=json_format.MessageToJson(plain), headers=admin)
    assert encoded.status_code == 200 and password not in encoded.text
    back = httpx.post(url, content=encoded.text, headers=admin).json()
    assert json.loads(base64.b64decode(back["payloads"][0]["data"])) == password


def test_the_temporal_cli_shows_decrypted_history_through_the_codec_endpoint(api, settings, app_with_secret):
    app, first, password, env = app_with_secret
    show = [
        temporal.temporal_cli(), "workflow", "show", "-w", first["workflow_id"], "--output", "json",
        "--address", settings.temporal_address, "--namespace", settings.temporal_namespace,
        "--codec-endpoint", settings.codec_endpoint,
    ]  # fmt: skip
    with_token = subprocess.run(
        [*show, "--codec-auth", api.http.headers["Authorization"]], capture_output=True, text=True, timeout=60
    )
    assert with_token.returncode == 0, with_token.stderr
    decoded = payload_data(json.loads(with_token.stdout))
    assert any(password.encode() in data for data in decoded)
    without = subprocess.run(show, capture_output=True, text=True, timeout=60)
    assert password not in without.stdout + without.stderr
    if without.returncode == 0:
        assert not any(password.encode() in data for data in payload_data(json.loads(without.stdout)))


def payload_data(doc) -> list[bytes]:
    """The data of every payload in a history printed as JSON (bytes are base64 there)."""
    found: list[bytes] = []
    if isinstance(doc, dict):
        for payload in doc.get("payloads", []) if isinstance(doc.get("payloads"), list) else []:
            found.append(base64.b64decode(payload.get("data", "")))
        for value in doc.values():
            found += payload_data(value)
    elif isinstance(doc, list):
        for value in doc:
            found += payload_data(value)
    return found


def test_the_web_ui_uses_the_codec_endpoint_and_may_call_it_cross_origin(platform, settings, admin_token):
    ui = temporal.ui_url(settings)
    ui_settings = httpx.get(f"{ui}/api/v1/settings", timeout=5).json()
    assert ui_settings["Codec"]["Endpoint"] == settings.codec_endpoint
    # The browser sends the codec sign-in cookie with each request; no token passes through the UI.
    assert ui_settings["Codec"]["IncludeCredentials"] is True and ui_settings["Codec"]["PassAccessToken"] is False

    url = f"{settings.codec_endpoint}/decode"
    preflight = httpx.options(
        url,
        headers={
            "Origin": ui,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ui
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    allowed_headers = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "x-namespace"} <= {h.strip() for h in allowed_headers.split(",")}

    stranger = httpx.options(url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert stranger.status_code == 403 and "Access-Control-Allow-Origin" not in stranger.headers

    body = json_format.MessageToJson(Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')]))
    answered = httpx.post(url, content=body, headers={"Origin": ui, "Authorization": f"Bearer {admin_token}"})
    assert answered.status_code == 200 and answered.headers["Access-Control-Allow-Origin"] == ui
    # A refusal still carries the CORS headers, so the UI can tell it was refused.
    refused = httpx.post(url, content=body, headers={"Origin": ui})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == ui


def test_env_lives_in_a_secret_that_the_pods_read_and_a_change_rolls_them(api, kube_api, settings, app_with_secret):
    app, first, password, env = app_with_secret
    namespace = namespace_for(settings, NAMESPACE_PROJECT)
    core, apps_api = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)

    secret = core.read_namespaced_secret(manifests.env_secret_name(app["slug"]), namespace)
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == env
    assert read_or_none(core.read_namespaced_config_map, manifests.env_config_map_name(app["slug"]), namespace) is None
    template = apps_api.read_namespaced_deployment(app["slug"], namespace).spec.template
    assert password not in json.dumps(kube_api.sanitize_for_serialization(template))
    pods = core.list_namespaced_pod(namespace, label_selector=f"{manifests.LABEL_APP}={app['slug']}").items
    assert pods and all(
        [ref.secret_ref.name for ref in p.spec.containers[0].env_from] == [manifests.env_secret_name(app["slug"])]
        for p in pods
    )

    before_pods = {p.metadata.name for p in pods}
    before_checksum = template.metadata.annotations[manifests.ANNOTATION_ENV_CHECKSUM]
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"GREETING": "changed"}})
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    status = api.wait_ready(app["id"], 1)
    assert before_pods.isdisjoint({p["name"] for p in status["pods"]})
    after = apps_api.read_namespaced_deployment(app["slug"], namespace).spec.template.metadata.annotations
    assert after[manifests.ANNOTATION_ENV_CHECKSUM] != before_checksum
    secret = core.read_namespaced_secret(manifests.env_secret_name(app["slug"]), namespace)
    assert base64.b64decode(secret.data["GREETING"]).decode() == "changed"


def test_an_app_deployed_with_the_old_configmap_ends_up_with_only_the_secret(api, kube_api, settings, app_with_secret):
    app, first, password, env = app_with_secret
    namespace = namespace_for(settings, NAMESPACE_PROJECT)
    core, apps_api = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    name = manifests.env_secret_name(app["slug"])

    # Put the app back as the code before the Secret left it: env in a
    # ConfigMap, pods reading it, no Secret. (Another field manager, so this
    # partial apply does not drop the fields Conveyor owns.)
    deployment = apps_api.read_namespaced_deployment(app["slug"], namespace)
    old_configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": deployment.metadata.labels},
        "data": env,
    }
    old_template_env = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app["slug"], "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {manifests.LABEL_APP: app["slug"]}},
            "template": {
                "metadata": {"labels": deployment.spec.template.metadata.labels},
                "spec": {"containers": [{"name": manifests.CONTAINER, "envFrom": [{"configMapRef": {"name": name}}]}]},
            },
        },
    }
    dynamic = DynamicClient(kube_api)
    for obj in (old_configmap, old_template_env):
        dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).server_side_apply(
            body=obj, name=obj["metadata"]["name"], namespace=namespace, field_manager="before-secrets", force_conflicts=True
        )
    core.delete_namespaced_secret(name, namespace)
    refs = apps_api.read_namespaced_deployment(app["slug"], namespace).spec.template.spec.containers[0].env_from
    assert [r.config_map_ref.name for r in refs if r.config_map_ref] == [name]

    # While a rollout is under way the old pods still read the ConfigMap (and
    # may restart): it stays. It goes once a template without it has rolled
    # out, here the restore after the cancel.
    stuck = start_never_ready_deploy(api, app)
    assert read_or_none(core.read_namespaced_config_map, name, namespace) is not None
    api.call("POST", f"/apps/{app['id']}/deployments/{stuck['id']}/cancel", 202)
    assert api.wait_finished(app["id"], stuck["id"], timeout=90)["status"] == "cancelled"
    eventually(
        lambda: read_or_none(core.read_namespaced_config_map, name, namespace) is None, 60, what="the old ConfigMap to go"
    )
    secret = core.read_namespaced_secret(name, namespace)
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == env
    container = apps_api.read_namespaced_deployment(app["slug"], namespace).spec.template.spec.containers[0]
    assert [(r.secret_ref and r.secret_ref.name, r.config_map_ref) for r in container.env_from] == [(name, None)]

    # Delete removes the Secret (and would remove a leftover ConfigMap).
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=env))
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 60, what="the app to be removed")
    assert read_or_none(core.read_namespaced_secret, name, namespace) is None
    assert read_or_none(core.read_namespaced_config_map, name, namespace) is None


def apply_event(settings, workflow_id: str) -> tuple[int, Payloads]:
    """The id and (stored, encrypted) input of the deploy's apply_manifests event."""

    async def find() -> tuple[int, Payloads]:
        raw = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        async for event in raw.get_workflow_handle(workflow_id).fetch_history_events():
            if event.activity_task_scheduled_event_attributes.activity_type.name == "apply_manifests":
                return event.event_id, event.activity_task_scheduled_event_attributes.input
        raise AssertionError("no apply_manifests in the deploy's history")

    return asyncio.run(find())


def test_the_web_ui_shows_decoded_env_only_to_a_browser_signed_in_to_the_codec(settings, app_with_secret, tmp_path):
    """Headless Chromium as an operator: the event page before sign-in, signed in, signed out."""
    app, first, password, env = app_with_secret
    event_id, _ = apply_event(settings, first["workflow_id"])
    results = web_ui_codec_check.run(first["workflow_id"], password, tmp_path, event_id=event_id, settings=settings)
    print(f"screenshots in {tmp_path}")
    assert all(ok for _, ok in results), results
    assert {p.name for p in tmp_path.glob("*.png")} == {"1-before-sign-in.png", "2-signed-in.png", "3-signed-out.png"}
