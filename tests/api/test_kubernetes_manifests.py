"""deploy/ on the real cluster: server-side dry run, apply, and a deploy done by
a worker holding only the worker ServiceAccount's token (TokenRequest)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.support.api_client import Api
from tests.support.production import ROOT, api_and_worker, conveyor_env, inline_kubeconfig, payload_keys
from tests.support.waiting import eventually

pytestmark = pytest.mark.stack

SA_NAMESPACE = "conveyor"


def kubectl(settings, *args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig or settings.effective_kubeconfig), *args],
        capture_output=True, text=True, timeout=120,
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def overlay(platform, settings, tmp_path_factory) -> Path:
    """An overlay as an operator writes one: the image, the config and real Secrets for this stack."""
    folder = tmp_path_factory.mktemp("overlay")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "deploy" / "base", folder)],
        "images": [{"name": "conveyor", "newName": f"{settings.registry}/conveyor/conveyor", "newTag": "latest"}],
        "configMapGenerator": [{
            "name": "conveyor-config", "behavior": "merge",
            "literals": [f"CONVEYOR_TEMPORAL_ADDRESS={settings.temporal_address}", f"CONVEYOR_REGISTRY={settings.registry}"],
        }],
        "secretGenerator": [
            {"name": "conveyor-database", "behavior": "replace",
             "literals": [f"CONVEYOR_DATABASE_URL={settings.effective_database_url}"]},
            {"name": "conveyor-payload-keys", "behavior": "replace",
             "literals": [f"CONVEYOR_PAYLOAD_KEYS={payload_keys(settings)}"]},
        ],
        "generatorOptions": {"disableNameSuffixHash": True},
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


@pytest.fixture(scope="module")
def applied(settings, overlay, kube_api) -> Path:
    kubectl(settings, "apply", "-f", str(ROOT / "deploy" / "base" / "namespace.yaml"))
    kubectl(settings, "apply", "--dry-run=server", "-k", str(overlay))
    kubectl(settings, "apply", "-k", str(overlay))
    return overlay


def test_dry_run_changes_nothing_then_apply_runs_everything(settings, overlay, kube_api):
    kubectl(settings, "delete", "-k", str(overlay), "--ignore-not-found", "--wait=true")
    # A server-side dry run of namespaced objects needs their namespace to exist.
    kubectl(settings, "apply", "-f", str(ROOT / "deploy" / "base" / "namespace.yaml"))
    dry = kubectl(settings, "apply", "--dry-run=server", "-k", str(overlay))
    for kind in ("deployment.apps/conveyor-api", "deployment.apps/conveyor-worker",
                 "job.batch/conveyor-migrate", "service/conveyor-api",
                 "validatingadmissionpolicy.admissionregistration.k8s.io/conveyor-worker-app-namespaces",
                 "clusterrole.rbac.authorization.k8s.io/conveyor-app-manager"):
        assert f"{kind} created (server dry run)" in dry.stdout, dry.stdout
    assert kubectl(settings, "get", "deployment", "conveyor-api", "-n", SA_NAMESPACE, check=False).returncode != 0

    kubectl(settings, "apply", "-k", str(overlay))
    apps = client.AppsV1Api(kube_api)
    batch = client.BatchV1Api(kube_api)
    for name in ("conveyor-api", "conveyor-worker"):
        eventually(lambda name=name: (apps.read_namespaced_deployment(name, SA_NAMESPACE).status.ready_replicas or 0) == 2,
                   120, what=f"{name} with 2 ready pods on KWOK")
    # KWOK runs the Job's pod but never ends it (no process runs in it), so
    # "running" is as far as the cluster gets; the image smoke test runs the command.
    eventually(lambda: (batch.read_namespaced_job("conveyor-migrate", SA_NAMESPACE).status.active or 0) == 1,
               60, what="the migration Job's pod to run")
    pod = client.CoreV1Api(kube_api).list_namespaced_pod(
        SA_NAMESPACE, label_selector="app.kubernetes.io/name=conveyor-worker").items[0]
    assert pod.spec.service_account_name == "conveyor-worker"
    assert pod.spec.containers[0].command == ["python", "-m", "worker"]
    assert pod.spec.termination_grace_period_seconds == 90


def service_account_kubeconfig(settings, kube_api, folder: Path) -> Path:
    """A kubeconfig holding only a TokenRequest token of the worker's ServiceAccount."""
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        "conveyor-worker", SA_NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    cluster = inline_kubeconfig(settings.effective_kubeconfig)["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "worker",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "conveyor-worker", "user": {"token": token}}],
        "contexts": [{"name": "worker", "context": {"cluster": "c", "user": "conveyor-worker"}}],
    }
    path = folder / "worker-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_worker_token_deploys_into_a_new_app_namespace_and_is_refused_in_kube_system(
    settings, applied, kube_api, make_token, tmp_path
):
    kubeconfig = service_account_kubeconfig(settings, kube_api, tmp_path)

    # Refused by RBAC: no rights in kube-system at all.
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}
    (tmp_path / "cm.json").write_text(json.dumps(configmap))
    refused = kubectl(settings, "create", "-f", str(tmp_path / "cm.json"), kubeconfig=kubeconfig, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
    assert kubectl(settings, "auth", "can-i", "list", "secrets", "-n", "kube-system", kubeconfig=kubeconfig,
                   check=False).stdout.strip() == "no"
    assert kubectl(settings, "auth", "can-i", "list", "pods", "--all-namespaces", kubeconfig=kubeconfig,
                   check=False).stdout.strip() == "no"
    # Allowed by RBAC, refused by the admission policy: binding its role in kube-system.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "grab", "namespace": "kube-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "conveyor-app-manager"},
        "subjects": [{"kind": "ServiceAccount", "name": "conveyor-worker", "namespace": SA_NAMESPACE}],
    }
    (tmp_path / "rb.json").write_text(json.dumps(binding))
    refused = eventually(  # the policy is enforced a moment after it is created
        lambda: (p := kubectl(settings, "create", "-f", str(tmp_path / "rb.json"), kubeconfig=kubeconfig, check=False))
        .returncode != 0 and p, 30, what="the admission policy to refuse a RoleBinding in kube-system")
    assert "Forbidden" in refused.stderr and "conveyor-*" in refused.stderr, refused.stderr
    # A 403 in the raw API response, as the brief's clients (the worker) see it.
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(client.ApiException) as denied:
        core.create_namespaced_config_map("kube-system", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert denied.value.status == 403

    # A real deploy by a worker that holds only this token, into a namespace it creates.
    project = f"proj_rbac{uuid.uuid4().hex[:6]}"
    token, _ = make_token("admin", project)
    env = conveyor_env(
        settings,
        CONVEYOR_KUBECONFIG=str(kubeconfig),
        CONVEYOR_APP_ROLE_BINDINGS="conveyor-app-manager=conveyor/conveyor-worker,conveyor-app-reader=conveyor/conveyor-api",
    )
    with api_and_worker(settings, env, tmp_path) as base_url:
        api = Api(base_url, token, settings.registry)
        # With resources, autoscaling, a worker process and a release command,
        # so the worker's rights in a new namespace cover the autoscaler, each
        # process's Deployment, the release Job and its Secret, and the API's
        # cover reading them.
        scaling = {"min_replicas": 2, "max_replicas": 3}
        app = api.create_app(
            replicas=2, resources={"cpu": "100m"}, autoscaling=scaling,
            processes={"worker": {"command": ["python", "worker.py"]}}, release_command="python manage.py migrate",
        )
        first = api.deployments(app["id"])[-1]
        done = api.wait_active(app["id"], first["id"], timeout=120)
        assert [s["state"] for s in done["progress"] if s["name"] == "release"] == ["done"], done["progress"]
        assert api.status(app["id"])["autoscaler"]["max_replicas"] == 3
        assert api.call("GET", f"/apps/{app['id']}/status", 200, params={"process": "worker"}).json()["ready_replicas"] == 1
        namespace = settings.project_namespace(project)
        deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(app.get("slug", app["name"]), namespace)
        assert deployment.status.ready_replicas == 2
        bindings = {b.metadata.name: b for b in client.RbacAuthorizationV1Api(kube_api).list_namespaced_role_binding(namespace).items}
        assert set(bindings) == {"conveyor-app-manager-conveyor-worker", "conveyor-app-reader-conveyor-api"}
        managers = {f.manager for f in deployment.metadata.managed_fields}
        assert managers >= {"conveyor"}
        # And the delete, with the same rights: the process, the release Job and its Secret go too.
        api.call("DELETE", f"/apps/{app['id']}", 202)
        eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 120, what="the app to be deleted")
    left = client.BatchV1Api(kube_api).list_namespaced_job(namespace, label_selector=f"conveyor.dev/app-id={app['id']}").items
    assert not [j for j in left if not j.metadata.deletion_timestamp]
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(namespace, label_selector=f"conveyor.dev/app-id={app['id']}").items == []
    secrets = client.CoreV1Api(kube_api).list_namespaced_secret(namespace, label_selector=f"conveyor.dev/app-id={app['id']}").items
    assert [s.metadata.name for s in secrets] == []
