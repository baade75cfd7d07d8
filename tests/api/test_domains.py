"""Custom domains end to end: the Ingress rules, an uploaded certificate
becoming the Ingress's kubernetes.io/tls Secret, a revert putting the earlier
domains (and their certificate) back, and a delete removing the Secret and
freeing the domain. cert-manager cannot run here: the second test stands in
for it by creating its Certificate CustomResourceDefinition and the Certificate
its ingress-shim would make, against an API and worker whose settings name a
ClusterIssuer. The rules the API enforces are tests/fast/test_domain_rules.py."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from kubernetes import client
from temporalio.api.enums.v1 import EventType

from conveyor.clients.temporal_client import connect
from conveyor.domain.payloads import ApplyInput
from tests.support.api_client import Api
from tests.support.certificates import make_certificate
from tests.support.production import api_and_worker, conveyor_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.stack


def domain() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}.example.com"


def hosts(ingress: client.V1Ingress) -> list[str]:
    return [rule.host for rule in ingress.spec.rules]


def missing(read, *args) -> bool:
    try:
        read(*args)
    except client.ApiException as exc:
        return exc.status == 404
    return False


def apply_inputs(settings, workflow_id: str) -> list[ApplyInput]:
    """The apply_manifests inputs of a release's history, decoded by the platform's codec."""

    async def read() -> list[ApplyInput]:
        temporal = await connect(settings)
        found = []
        async for event in temporal.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == "apply_manifests":
                    found.append((await temporal.data_converter.decode(attrs.input.payloads, [ApplyInput]))[0])
        return found

    return asyncio.run(read())


def put_certificate(api: Api, app_id: str, name: str, made, expect: int = 202) -> dict:
    return api.call("PUT", f"/apps/{app_id}/domains/{name}/certificate", expect, json={"certificate": made.certificate, "key": made.key}).json()


def test_domains_and_an_uploaded_certificate_reach_the_ingress_and_a_revert_and_a_delete_undo_them(api, kube_api, settings):
    a, b, c = domain(), domain(), domain()
    app = api.create_app(domains=[a, b], redirect_http=True)
    slug, namespace = app["slug"], settings.project_namespace("proj_default")
    v1 = api.deployments(app["id"])[0]
    api.wait_active(app["id"], v1["id"])
    net, core = client.NetworkingV1Api(kube_api), client.CoreV1Api(kube_api)
    ingress = net.read_namespaced_ingress(slug, namespace)
    assert hosts(ingress) == [f"{slug}.{settings.base_domain}", a, b]
    assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true" and not ingress.spec.tls

    # An uploaded certificate: a release writes its Secret, and the Ingress names it.
    made = make_certificate(a)
    uploaded = put_certificate(api, app["id"], a, made)
    api.wait_active(app["id"], uploaded["deployment_id"])
    secret_name = f"{slug}.tls.{a}"
    secret = core.read_namespaced_secret(secret_name, namespace)
    assert secret.type == "kubernetes.io/tls"
    assert base64.b64decode(secret.data["tls.crt"]).decode() == made.certificate
    assert base64.b64decode(secret.data["tls.key"]).decode() == made.key
    ingress = net.read_namespaced_ingress(slug, namespace)
    assert [(t.hosts, t.secret_name) for t in ingress.spec.tls] == [([a], secret_name)]
    shown = {d["domain"]: d["certificate"] for d in api.call("GET", f"/apps/{app['id']}/domains", 200).json()["domains"]}
    assert shown[a]["state"] == "uploaded" and shown[a]["expires_at"] == made.not_after.isoformat().replace("+00:00", "Z")
    assert shown[b]["state"] == "none"
    # The key went from the database to the cluster: not in the release's history even decrypted, nor in a log.
    release = api.deployment(app["id"], uploaded["deployment_id"])
    [applied] = apply_inputs(settings, release["workflow_id"])
    assert applied.spec.uploaded_certificates == [a]
    key_line = made.key.splitlines()[1]
    assert "PRIVATE KEY" not in applied.model_dump_json() and key_line not in applied.model_dump_json()
    for log in ("api.log", "worker.log"):
        assert key_line not in (settings.home / "logs" / log).read_text(errors="replace"), log

    # Other domains: a release; the dropped domain's Secret goes with it.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"domains": [c]})
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    ingress = net.read_namespaced_ingress(slug, namespace)
    assert hosts(ingress) == [f"{slug}.{settings.base_domain}", c] and not ingress.spec.tls
    assert missing(core.read_namespaced_secret, secret_name, namespace)

    # A revert to v1 restores its domains, and the certificate still stored comes back.
    reverted = api.call("POST", f"/apps/{app['id']}/deployments/{v1['id']}/revert", 202).json()
    api.wait_active(app["id"], reverted["id"])
    ingress = net.read_namespaced_ingress(slug, namespace)
    assert hosts(ingress) == [f"{slug}.{settings.base_domain}", a, b]
    assert [(t.hosts, t.secret_name) for t in ingress.spec.tls] == [([a], secret_name)]
    assert core.read_namespaced_secret(secret_name, namespace).type == "kubernetes.io/tls"
    assert api.call("POST", "/apps", json={"name": f"x-{uuid.uuid4().hex[:6]}", "image_url": f"{api.registry}/demo/web:v1", "domains": [a]}).status_code == 409

    # Deleting the app removes the Secret and the Ingress, and frees the domains.
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 60, what="the app to be removed")
    assert missing(core.read_namespaced_secret, secret_name, namespace)
    assert missing(net.read_namespaced_ingress, slug, namespace)
    successor = api.create_app(domains=[a, b])
    api.call("DELETE", f"/apps/{successor['id']}", 202)


CERTIFICATE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io",
        "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates", "singular": "certificate"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


def ensure_certificate_crd(kube_api) -> None:
    """cert-manager's Certificate kind, minimal (no controller: nothing issues)."""
    extensions = client.ApiextensionsV1Api(kube_api)
    try:
        extensions.create_custom_resource_definition(CERTIFICATE_CRD)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition("certificates.cert-manager.io").status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, 30, what="the Certificate CRD to be established")


def test_with_a_cluster_issuer_the_ingress_asks_cert_manager_and_the_certificates_ready_condition_shows(settings, kube_api, make_token, tmp_path):
    ensure_certificate_crd(kube_api)
    token, _ = make_token("admin")
    issued, uploaded = domain(), domain()
    env = conveyor_env(settings, CONVEYOR_TLS_CLUSTER_ISSUER="letsencrypt-test")
    with api_and_worker(settings, env, tmp_path) as base_url:
        api = Api(base_url, token, settings.registry)
        app = api.create_app(domains=[issued, uploaded])
        slug, namespace = app["slug"], settings.project_namespace("proj_default")
        api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
        net = client.NetworkingV1Api(kube_api)
        ingress = net.read_namespaced_ingress(slug, namespace)
        assert ingress.metadata.annotations == {"cert-manager.io/cluster-issuer": "letsencrypt-test"}
        assert [(t.hosts, t.secret_name) for t in ingress.spec.tls] == [([issued], f"{slug}.tls.{issued}"), ([uploaded], f"{slug}.tls.{uploaded}")]
        shown = {d["domain"]: d["certificate"] for d in api.call("GET", f"/apps/{app['id']}/domains", 200).json()["domains"]}
        assert shown[issued]["source"] == "cert-manager" and shown[issued]["state"] == "pending" and shown[issued]["message"] is None

        # What cert-manager's ingress-shim and its issuer would make: a Certificate named after the Secret, Ready.
        not_after = "2027-03-01T00:00:00Z"
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object("cert-manager.io", "v1", namespace, "certificates", {
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"{slug}.tls.{issued}", "namespace": namespace},
            "spec": {"secretName": f"{slug}.tls.{issued}", "dnsNames": [issued], "issuerRef": {"name": "letsencrypt-test", "kind": "ClusterIssuer"}},
            "status": {"notAfter": not_after, "conditions": [{"type": "Ready", "status": "True", "message": "Certificate is up to date and has not expired"}]},
        })
        shown = {d["domain"]: d["certificate"] for d in api.call("GET", f"/apps/{app['id']}/domains", 200).json()["domains"]}
        assert (shown[issued]["state"], shown[issued]["expires_at"]) == ("ready", not_after)
        # ... and the Secret its issuer fills, which cert-manager leaves behind when the Certificate goes.
        filled = make_certificate(issued)
        core = client.CoreV1Api(kube_api)
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": f"{slug}.tls.{issued}"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": filled.certificate, "tls.key": filled.key},
        })

        # An uploaded certificate beside it is served by an Ingress cert-manager leaves alone.
        release = put_certificate(api, app["id"], uploaded, make_certificate(uploaded))
        api.wait_active(app["id"], release["deployment_id"])
        ingress = net.read_namespaced_ingress(slug, namespace)
        assert hosts(ingress) == [f"{slug}.{settings.base_domain}", issued] and [t.hosts for t in ingress.spec.tls] == [[issued]]
        second = net.read_namespaced_ingress(f"{slug}.uploaded-tls", namespace)
        assert hosts(second) == [uploaded] and not second.metadata.annotations
        assert core.read_namespaced_secret(f"{slug}.tls.{uploaded}", namespace).type == "kubernetes.io/tls"
        # The release left cert-manager's Secret alone.
        assert core.read_namespaced_secret(f"{slug}.tls.{issued}", namespace).data["tls.crt"]

        api.call("DELETE", f"/apps/{app['id']}", 202)
        eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 60, what="the app to be removed")
        assert missing(net.read_namespaced_ingress, f"{slug}.uploaded-tls", namespace)
        assert missing(net.read_namespaced_ingress, slug, namespace)
        assert all(missing(core.read_namespaced_secret, f"{slug}.tls.{name}", namespace) for name in (issued, uploaded))
        # cert-manager's own would go with the Ingress that owns it; this stand-in has no owner.
        client.CustomObjectsApi(kube_api).delete_namespaced_custom_object("cert-manager.io", "v1", namespace, "certificates", f"{slug}.tls.{issued}")
