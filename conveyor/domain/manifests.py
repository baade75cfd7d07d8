"""Render an app's Kubernetes objects from a release snapshot (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from conveyor.domain.commands import as_argv
from conveyor.domain.domains import CLUSTER_ISSUER_ANNOTATION, tls_secret_name, uploaded_ingress_name
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.workload import LIMIT_RANGE as LIMIT_RANGE
from conveyor.domain.workload import RESOURCE_QUOTA as RESOURCE_QUOTA
from conveyor.domain.workload import WEB, Autoscaling, Probe, Resources, limit_range, parse_quantity, readiness, resource_quota

MANAGED_BY = "conveyor"
LABEL_APP = "app.kubernetes.io/name"
LABEL_APP_ID = "conveyor.dev/app-id"
LABEL_PROCESS = "conveyor.dev/process"
ANNOTATION_DEPLOYMENT = "conveyor.dev/deployment-id"
ANNOTATION_RESTARTED = "kubectl.kubernetes.io/restartedAt"
ANNOTATION_ENV_CHECKSUM = "conveyor.dev/env-checksum"
# On the TLS Secrets Conveyor writes from uploaded certificates (not those cert-manager fills).
LABEL_TLS = "conveyor.dev/tls"
TLS_UPLOADED = "uploaded"
CONTAINER = "app"
SERVICE_PORT = 80
# One per app namespace (a project's): its registry credentials, which every pod pulls with.
PULL_SECRET = "conveyor-registry"


def env_secret_name(slug: str) -> str:
    return f"{slug}-env"


def env_config_map_name(slug: str) -> str:
    """Where env lived before it moved to a Secret; removed once a rollout no longer needs it."""
    return f"{slug}-env"


def pull_secret(namespace: str, docker_config_json: str) -> dict[str, Any]:
    """The namespace's `kubernetes.io/dockerconfigjson` Secret (built by the
    apply activity from the project's credentials, read from the database:
    they never travel in a workflow's payloads). Shared by the project's apps,
    so it carries no app's labels and an app's delete leaves it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PULL_SECRET, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(docker_config_json.encode()).decode()},
    }


def labels(spec: ReleaseSpec) -> dict[str, str]:
    return {LABEL_APP: spec.slug, "app.kubernetes.io/managed-by": MANAGED_BY, LABEL_APP_ID: spec.app_id}


def selector(spec: ReleaseSpec) -> dict[str, str]:
    return {LABEL_APP: spec.slug}


def env_checksum(env: dict[str, str], key: bytes, app_id: str) -> str:
    """Changes with the env, so pods roll; keyed, so the annotation (readable by
    anyone who may read Deployments) cannot be brute-forced back to a short value."""
    message = json.dumps({"app": app_id, "env": env}, sort_keys=True).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def role_bindings(bindings: list[tuple[str, str, str]], namespace: str) -> list[dict[str, Any]]:
    """One RoleBinding per (cluster role, service account namespace, name) in an app namespace."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": f"{role}-{sa_name}",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            },
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "namespace": sa_namespace, "name": sa_name}],
        }
        for role, sa_namespace, sa_name in bindings
    ]


@dataclass(frozen=True)
class ProcessView:
    """One process of a release as its Deployment renders it: web (the app's
    own fields and port) or another process (`<slug>-<process>`)."""

    process: str
    name: str
    replicas: int
    command: list[str] | None
    port: int | None
    resources: Resources | None
    autoscaling: Autoscaling | None
    healthcheck: Probe | None
    liveness: Probe | None
    startup: Probe | None


def deployment_name(slug: str, process: str) -> str:
    return slug if process == WEB else f"{slug}-{process}"


def process_views(spec: ReleaseSpec) -> list[ProcessView]:
    """Web first, then the other processes by name."""
    web = ProcessView(WEB, spec.slug, spec.replicas, None, spec.port, spec.resources, spec.autoscaling, spec.healthcheck, spec.liveness, spec.startup)
    others = [
        ProcessView(
            name,
            deployment_name(spec.slug, name),
            p.replicas,
            as_argv(p.command) if p.command is not None else None,
            None,
            p.resources,
            p.autoscaling,
            p.healthcheck,
            p.liveness,
            p.startup,
        )
        for name, p in sorted((spec.processes or {}).items())
    ]
    return [web, *others]


def process_view(spec: ReleaseSpec, process: str) -> ProcessView | None:
    return next((view for view in process_views(spec) if view.process == process), None)


def pod_labels(spec: ReleaseSpec, view: ProcessView) -> dict[str, str]:
    return {**labels(spec), LABEL_APP: view.name, LABEL_PROCESS: view.process}


def pod_selector(view: ProcessView) -> dict[str, str]:
    """A Deployment's selector, which never changes: web's is the one it always had."""
    return {LABEL_APP: view.name}


def probes(view: ProcessView) -> dict[str, Any]:
    """The container's probes: readiness from `healthcheck` (else, for web, a
    TCP check on the port), liveness and startup when asked for."""
    port = view.port or 0
    rendered: dict[str, Any] = {}
    if view.healthcheck is not None or view.port is not None:
        rendered["readinessProbe"] = readiness(view.healthcheck, port)
    if view.liveness is not None:
        rendered["livenessProbe"] = view.liveness.render(port)
    if view.startup is not None:
        rendered["startupProbe"] = view.startup.render(port)
    return rendered


def namespace_policies(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """The project's LimitRange and ResourceQuota in the app's namespace (those it sets)."""
    if spec.limits is None:
        return []
    owned = {"app.kubernetes.io/managed-by": MANAGED_BY}
    found = (limit_range(spec.limits, spec.namespace, owned), resource_quota(spec.limits, spec.namespace, owned))
    return [policy for policy in found if policy is not None]


def render(spec: ReleaseSpec, checksum_key: bytes) -> list[dict[str, Any]]:
    """Namespace, the project's LimitRange and ResourceQuota, Secret,
    Deployment, its HorizontalPodAutoscaler (with autoscaling on), Service
    and Ingress, in apply order."""
    meta = {"name": spec.slug, "namespace": spec.namespace, "labels": labels(spec)}
    pod_annotations = {
        ANNOTATION_DEPLOYMENT: spec.deployment_id,
        ANNOTATION_ENV_CHECKSUM: env_checksum(spec.env, checksum_key, spec.app_id),
    }
    if spec.restarted_at:
        pod_annotations[ANNOTATION_RESTARTED] = spec.restarted_at
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
    }
    # `data`, not `stringData`: with server-side apply a key dropped from
    # `stringData` would stay in `data`.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**meta, "name": env_secret_name(spec.slug)},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(spec.env.items())},
    }
    deployments = [deployment(spec, view, pod_annotations) for view in process_views(spec)]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": spec.port, "protocol": "TCP"}],
        },
    }
    # Each process's Deployment, then its autoscaler (with autoscaling on).
    workloads = [obj for view, d in zip(process_views(spec), deployments, strict=True) for obj in (d, *autoscalers(spec, view))]
    return [namespace, *namespace_policies(spec), secret, *workloads, service, *ingresses(spec)]


def default_host(spec: ReleaseSpec) -> str:
    return f"{spec.slug}.{spec.base_domain}"


def _rule(spec: ReleaseSpec, host: str) -> dict[str, Any]:
    backend = {"service": {"name": spec.slug, "port": {"number": SERVICE_PORT}}}
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}


def _ingress(spec: ReleaseSpec, name: str, hosts: list[str], tls: list[str], annotations: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": spec.namespace, "labels": labels(spec)}
    if annotations:
        metadata["annotations"] = annotations
    body: dict[str, Any] = {"rules": [_rule(spec, host) for host in hosts]}
    if tls:
        body["tls"] = [{"hosts": [domain], "secretName": tls_secret_name(spec.slug, domain)} for domain in tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": body}


def ingresses(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """The app's Ingress: one rule for the default host `<slug>.<base domain>`,
    then one per custom domain, each with a `tls` entry when it has a
    certificate: an uploaded one (its Secret is written by the release), or
    cert-manager's (the ClusterIssuer's annotation; cert-manager fills the
    Secret). With both at once, the domains of uploaded certificates are
    served by a second Ingress without the annotation, which cert-manager
    leaves alone (it would otherwise issue over every `tls` entry)."""
    domains = spec.domains or []
    uploaded = [d for d in domains if d in set(spec.uploaded_certificates or [])]
    redirect = {name: "true" if spec.redirect_http else "false" for name in (spec.redirect_annotations or [])} if spec.redirect_http is not None else {}
    if spec.tls_cluster_issuer is None or not domains:
        return [_ingress(spec, spec.slug, [default_host(spec), *domains], uploaded, redirect)]
    issued = [d for d in domains if d not in uploaded]
    main = _ingress(spec, spec.slug, [default_host(spec), *issued], issued, {**redirect, CLUSTER_ISSUER_ANNOTATION: spec.tls_cluster_issuer} if issued else redirect)
    return [main, _ingress(spec, uploaded_ingress_name(spec.slug), uploaded, uploaded, redirect)] if uploaded else [main]


def tls_secret(spec: ReleaseSpec, domain: str, chain_pem: str, key_pem: str) -> dict[str, Any]:
    """The `kubernetes.io/tls` Secret of an uploaded certificate (written by the
    apply activity, which opens the key: it is never part of the release)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": tls_secret_name(spec.slug, domain), "namespace": spec.namespace, "labels": {**labels(spec), LABEL_TLS: TLS_UPLOADED}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(chain_pem.encode()).decode(), "tls.key": base64.b64encode(key_pem.encode()).decode()},
    }


def deployment(spec: ReleaseSpec, view: ProcessView, pod_annotations: dict[str, str]) -> dict[str, Any]:
    """One process's Deployment: web serves the port (the Service's pods), the others run their command."""
    container: dict[str, Any] = {"name": CONTAINER, "image": spec.image_ref}
    if view.command is not None:
        container["command"] = view.command
    if view.port is not None:
        container["ports"] = [{"name": "http", "containerPort": view.port, "protocol": "TCP"}]
    container |= {
        "envFrom": [{"secretRef": {"name": env_secret_name(spec.slug)}}],
        **probes(view),
        "resources": view.resources.render() if view.resources else {},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": view.name,
            "namespace": spec.namespace,
            "labels": pod_labels(spec, view),
            "annotations": {ANNOTATION_DEPLOYMENT: spec.deployment_id},
        },
        "spec": {
            "replicas": view.replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": pod_selector(view)},
            # Never drop below the desired count while a new release comes up.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": pod_labels(spec, view), "annotations": pod_annotations},
                "spec": {"containers": [container], "enableServiceLinks": False, "imagePullSecrets": [{"name": PULL_SECRET}]},
            },
        },
    }


def autoscalers(spec: ReleaseSpec, view: ProcessView) -> list[dict[str, Any]]:
    """The process's HorizontalPodAutoscaler (named like its Deployment), if it autoscales."""
    scaling = view.autoscaling
    if scaling is None:
        return []
    return [{
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": view.name, "namespace": spec.namespace, "labels": {**labels(spec), LABEL_PROCESS: view.process}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": view.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_percent}}}
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_delay_seconds}},
        },
    }]


def _within(rendered: Any, live: Any) -> bool:
    """Whether everything `rendered` says holds in `live` (which the API
    server has filled with defaults: a probe's scheme, successThreshold)."""
    if isinstance(rendered, dict):
        return isinstance(live, dict) and all(_within(value, live.get(key)) for key, value in rendered.items())
    if isinstance(rendered, list):
        return isinstance(live, list) and len(rendered) == len(live) and all(_within(r, v) for r, v in zip(rendered, live, strict=True))
    return bool(rendered == live)


def drift(spec: ReleaseSpec, live: dict[str, Any], process: str = WEB) -> list[str]:
    """The fields of a process's live Deployment that differ from what its
    release renders (changed by hand: `kubectl scale`, `kubectl edit`), by
    name; the next release puts them back. The replica count is the
    autoscaler's to change while autoscaling is on."""
    view = process_view(spec, process)
    assert view is not None, "only a process of the release has a Deployment"
    want = deployment(spec, view, {})["spec"]["template"]["spec"]["containers"][0]
    have_spec = live.get("spec") or {}
    containers = ((have_spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    have = next((c for c in containers if c.get("name") == CONTAINER), containers[0])
    found = []
    if view.autoscaling is None and have_spec.get("replicas") != view.replicas:
        found.append("replicas")
    if len(containers) != 1:
        found.append("containers")
    if have.get("image") != want["image"]:
        found.append("image")
    if want.get("command") != have.get("command"):
        found.append("command")
    if not _within(want.get("ports"), have.get("ports")):
        found.append("ports")
    if have.get("env") or not _within(want["envFrom"], have.get("envFrom")):
        found.append("env")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if (probe in want) != (probe in have) or (probe in want and not _within(want[probe], have[probe])):
            found.append(probe)
    if not _same_resources(want["resources"], have.get("resources") or {}):
        found.append("resources")
    return found


def _same_resources(rendered: dict[str, Any], live: dict[str, Any]) -> bool:
    """Equal as quantities: the API server writes `0.5` back as `500m`."""
    for part in ("requests", "limits"):
        want, have = rendered.get(part) or {}, live.get(part) or {}
        if set(want) != set(have):
            return False
        try:
            if any(parse_quantity(str(want[k])) != parse_quantity(str(have[k])) for k in want):
                return False
        except ValueError:
            return False
    return True
