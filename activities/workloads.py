"""Kubernetes side effects. Blocking client calls: these are synchronous
activities run on the worker's thread pool. Every write is a server-side apply
or an idempotent delete, so running an activity twice leaves the same state."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import CancelledError

from conveyor.clients.db.models import AppCertificate, RegistryCredential
from conveyor.clients.db.queries import deployment_status
from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import api_client
from conveyor.clients.payload_codec import Keyring, load_keyring, unseal
from conveyor.domain import domains, errors, manifests, registry_auth, rollout
from conveyor.domain.certificates import certificate_context
from conveyor.domain.payloads import ApplyInput, DeleteResourcesInput, ReleaseSpec, RolloutInput, RolloutProgress, RolloutResult, ScaleInput
from conveyor.domain.vocabulary import TERMINAL
from conveyor.domain.workload import WEB
from conveyor.settings import Settings

FIELD_MANAGER = "conveyor"
log = logging.getLogger(__name__)

# Sends a rollout's progress to the workflow with this id (worker.py).
ProgressReporter = Callable[[str, RolloutProgress], None]


F = TypeVar("F", bound=Callable[..., Any])


# The authorizer's words when RBAC refuses a request (k8s.io/apiserver,
# responsewriters.forbiddenMessage, then ": <the authorizer's reason>").
RBAC_REFUSAL = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) (?:resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
    r'(?: in the namespace "(?P<namespace>[^"]+)"| at the cluster scope)?|path "(?P<path>[^"]+)")'
)


def missing_permission(message: str) -> str | None:
    """The permission an RBAC refusal names, as a person grants it, e.g.
    `patch deployments (API group "apps") in namespace conveyor-web for User
    "system:serviceaccount:conveyor:worker"`, with the authorizer's reason
    when it gives one; None for any other refusal (an admission webhook or
    policy, a quota, a namespace being deleted)."""
    found = RBAC_REFUSAL.search(message)
    if found is None:
        return None
    if found["path"] is not None:
        what = f"{found['verb']} on the path {found['path']}"
    else:
        group = f'API group "{found["group"]}"' if found["group"] else "the core API group"
        where = f"in namespace {found['namespace']}" if found["namespace"] else "cluster-wide"
        what = f"{found['verb']} {found['resource']} ({group}) {where}"
    reason = message[found.end() :].strip(" :")[:MESSAGE_LIMIT]
    return f'{what} for User "{found["user"]}"' + (f" ({reason})" if reason else "")


def api_error(exc: ApiException, what: str) -> errors.ConveyorError:
    """What a Kubernetes answer means for a retry. Timeouts, conflicts,
    throttling and server errors are transient, and so is a missing RBAC grant
    (an operator adds it, or a RoleBinding just applied reaches the authorizer):
    retried until the operation's deadline. Any other 4xx will not get better
    by retrying (an invalid object, an admission webhook or policy, not found):
    fail now, with its reason. (A refused connection or a timeout never reaches
    here: it is not an ApiException; see `concise_errors`.)"""
    status = exc.status or 0
    # Short, and without the client's traceback: this is what the Web UI shows
    # as the pending activity's last failure (a long one is dropped there).
    answered = f"Kubernetes answered {status} {exc.reason}"
    if status == 403 and (permission := missing_permission(_full_status_message(exc))) is not None:
        return errors.KubernetesForbidden(
            f"{what}: missing RBAC permission: {permission}; retried until it is granted or the operation's deadline passes ({answered})"
        )
    answered += f": {_status_message(exc)}"
    if status in (408, 409, 429) or status >= 500:
        return errors.KubernetesUnavailable(f"{what}: {answered}")
    return errors.KubernetesRefused(f"{what}: {answered}")


def _full_status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except (ValueError, AttributeError):
        return str(exc.body)


def _status_message(exc: ApiException) -> str:
    return _full_status_message(exc)[:MESSAGE_LIMIT]


def concise_errors(fn: F) -> F:
    """The activity's failures as short messages a person can act on. A
    Kubernetes API that cannot be reached is transient (retried until the
    operation's deadline); the message names it without urllib3's chain."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise errors.KubernetesUnreachable(
                f"the Kubernetes API cannot be reached: {type(exc).__name__}: {str(exc)[:MESSAGE_LIMIT]}"
            ) from None

    return cast(F, run)


# A rollout wait reacts to every change of the Deployment at once (a watch);
# between changes it wakes this often to see whether it was cancelled, and to
# heartbeat and look for stuck pods when those are due.
WATCH_SLICE_SECONDS = 2
# A rollout wait heartbeats when its state changes, and at least this often
# (well inside its 20 s heartbeat timeout).
HEARTBEAT_SECONDS = 5
RBAC_SETTLE_TRIES = 10
MESSAGE_LIMIT = 500


# The kubernetes client imports each API class on its first use (CoreV1Api's
# module alone is some 30,000 lines): a worker loads them as it starts, not
# in the first deploys it runs, and its startup heap freeze covers them.
API_CLASSES = ("AppsV1Api", "AutoscalingV2Api", "BatchV1Api", "CoreV1Api", "NetworkingV1Api")


def load_api_classes() -> None:
    for name in API_CLASSES:
        getattr(client, name)


def read_raw(read: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An object as the API server sent it, a dict: the client's models cost
    several times the CPU of the JSON, and the activities read only a few
    fields. Raises ApiException as the model's read does."""
    body: dict[str, Any] = json.loads(read(*args, **kwargs, _preload_content=False).read())
    return body


class DictWatch(watch.Watch):
    """A watch whose events carry the object as a dict only (`raw_object`),
    not decoded into the client's models as well. It watches lists only: the
    client's base class looks through the list method's signature and its
    docstring at every call to tell a watch from a log follow (2% of the
    worker's CPU when 200 rollouts wait at once)."""

    def get_return_type(self, func: Any) -> None:
        return None

    def get_watch_argument_name(self, func: Any) -> str:
        return "watch"


class KubeActivities:
    """One API client and one discovery cache per worker process."""

    def __init__(self, settings: Settings, report_progress: ProgressReporter | None = None):
        self.settings = settings
        self.report_progress = report_progress
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()

    def guard(self, deployment_id: str | None) -> None:
        """Refuse a cluster write for a deployment that has ended.

        A workflow Reset from the Web UI re-runs a deployment from an earlier
        point, possibly long after it ended and a later one took over. The
        write and this check are in one activity, so whichever point the reset
        picks, an ended deployment never changes the cluster behind the
        database's back; the workflow then ends with this reason."""
        if deployment_id is None:
            return
        with read_scope(self.settings.effective_database_url) as session:
            status = deployment_status(session, deployment_id)
        if status is None or status in TERMINAL:
            raise errors.DeploymentEnded(
                f"deployment {deployment_id} has already ended ({status or 'deleted'}); "
                "a re-run of its workflow changes nothing on the cluster"
            )

    @property
    def api(self) -> client.ApiClient:
        return api_client(self.settings)

    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api)  # type: ignore[no-untyped-call]
            return self._dynamic

    @cached_property
    def env_checksum_key(self) -> bytes:
        return load_keyring(self.settings).derive("env-checksum")

    @cached_property
    def keyring(self) -> Keyring:
        return load_keyring(self.settings)

    def _tls_secrets(self, spec: ReleaseSpec) -> list[dict[str, Any]]:
        """The Secrets of the release's uploaded certificates, as the database
        holds them now (one deleted meanwhile is left out); the key is opened
        here and goes only to the cluster."""
        wanted = spec.uploaded_certificates or []
        if not wanted:
            return []
        with read_scope(self.settings.effective_database_url) as session:
            rows = session.scalars(select(AppCertificate).where(AppCertificate.app_id == spec.app_id, AppCertificate.domain.in_(wanted))).all()
            found = [(row.domain, row.certificate, row.key_sealed) for row in rows]
        return [
            manifests.tls_secret(spec, domain, chain, unseal(self.keyring, sealed, certificate_context(spec.app_id, domain)).decode())
            for domain, chain, sealed in sorted(found)
        ]

    def _uploaded_tls_secrets(self, namespace: str, app_id: str) -> set[str]:
        """The TLS Secrets Conveyor wrote for the app's uploaded certificates, as the cluster has them."""
        selector = f"{manifests.LABEL_APP_ID}={app_id},{manifests.LABEL_TLS}={manifests.TLS_UPLOADED}"
        return self._names("the app's TLS Secrets", client.CoreV1Api(self.api).list_namespaced_secret, namespace, label_selector=selector)

    def _names(self, what: str, listing: Callable[..., Any], *args: Any, **kwargs: Any) -> set[str]:
        """The names of the objects a list call finds."""
        try:
            found = read_raw(listing, *args, **kwargs)
        except ApiException as exc:
            raise api_error(exc, f"listing {what}") from None
        return {item["metadata"]["name"] for item in found.get("items") or []}

    def _tls_secrets_of(self, namespace: str, slug: str) -> set[str]:
        """Every TLS Secret of the app's domains: those of uploaded certificates
        and those cert-manager filled (which it leaves behind when its
        Certificate goes). `<slug>.tls.` is no other app's prefix."""
        try:
            found = read_raw(client.CoreV1Api(self.api).list_namespaced_secret, namespace)
        except ApiException as exc:
            raise api_error(exc, "listing the app's TLS Secrets") from None
        prefix = f"{slug}.tls."
        return {item["metadata"]["name"] for item in found.get("items") or [] if item["metadata"]["name"].startswith(prefix)}

    def docker_config(self, project_id: str) -> str:
        with read_scope(self.settings.effective_database_url) as session:
            rows = session.scalars(select(RegistryCredential).where(RegistryCredential.project_id == project_id)).all()
            credentials = [registry_auth.Credential(row.registry_host, row.username, row.password) for row in rows]
        return registry_auth.docker_config(credentials)

    @activity.defn(name="apply_manifests")
    @concise_errors
    def apply_manifests(self, request: ApplyInput) -> list[str]:
        self.guard(request.on_behalf_of)
        dynamic = self.dynamic
        applied = []
        spec = request.spec
        objects = manifests.render(spec, self.env_checksum_key)
        # The uploaded certificates' Secrets, just before the Ingresses that name them.
        first_ingress = next(i for i, obj in enumerate(objects) if obj["kind"] == "Ingress")
        objects[first_ingress:first_ingress] = self._tls_secrets(spec)
        # Right after the Namespace: the worker's own rights in it come from these.
        bindings = manifests.role_bindings(self.settings.role_bindings, request.spec.namespace)
        objects[1:1] = bindings
        # The namespace's pull Secret, from the project's credentials as they are now.
        objects.insert(1 + len(bindings), manifests.pull_secret(spec.namespace, self.docker_config(spec.project_id)))
        # A RoleBinding just applied reaches the apiserver's authorizer a
        # moment later: until then the worker's own writes are refused. The
        # first attempt waits a little for that; past it, a missing grant is
        # transient like any other (KubernetesForbidden), and the activity's
        # retry policy tries again until the deployment's deadline.
        settle = bool(bindings) and activity.info().attempt == 1
        views = {view.name: view for view in manifests.process_views(spec)}
        for obj in objects:
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            name = obj["metadata"]["name"]
            view = views.get(name)
            if obj["kind"] == "Deployment":
                self._refuse_foreign(spec.namespace, name, spec.app_id)
            if obj["kind"] == "Deployment" and view is not None and view.autoscaling is not None:
                # The autoscaler owns the live count: apply what it set (or the
                # starting count of a new Deployment), read as late as can be.
                live = self._live_replicas(spec.namespace, name)
                obj["spec"]["replicas"] = view.autoscaling.starting(live if live is not None else view.replicas)
            elif obj["kind"] == "Deployment":
                # No autoscaling: one left from before goes first, so it cannot
                # scale the Deployment this release applies.
                self._delete_scaler(spec.namespace, name)
            self.server_side_apply(resource, obj, settle)
            applied.append(f"{obj['kind']}/{name}")
        # A process the release no longer has: its autoscaler, then its Deployment.
        for dropped in self._process_deployments(spec.namespace, spec.app_id) - set(views):
            self._delete_process(spec.namespace, dropped)
        # A project default or quota cleared since: its object goes too.
        core = client.CoreV1Api(self.api)
        rendered = {(o["kind"], o["metadata"]["name"]) for o in objects}
        # A certificate deleted or a domain dropped since: its Secret goes (and
        # the second Ingress, when no domain needs it any more).
        for stale in sorted(self._uploaded_tls_secrets(spec.namespace, spec.app_id) - {n for k, n in rendered if k == "Secret"}):
            self._delete_if_there(functools.partial(core.delete_namespaced_secret, stale, spec.namespace), f"deleting the TLS Secret {stale}")
        second = domains.uploaded_ingress_name(spec.slug)
        if ("Ingress", second) not in rendered:
            net = client.NetworkingV1Api(self.api)
            self._delete_if_there(lambda: net.delete_namespaced_ingress(second, spec.namespace), f"deleting Ingress {second}")
        if spec.limits is not None and ("LimitRange", manifests.LIMIT_RANGE) not in rendered:
            self._delete_if_there(lambda: core.delete_namespaced_limit_range(manifests.LIMIT_RANGE, spec.namespace), "deleting the LimitRange")
        if spec.limits is not None and ("ResourceQuota", manifests.RESOURCE_QUOTA) not in rendered:
            self._delete_if_there(lambda: core.delete_namespaced_resource_quota(manifests.RESOURCE_QUOTA, spec.namespace), "deleting the ResourceQuota")
        return applied

    def _refuse_foreign(self, namespace: str, name: str, app_id: str) -> None:
        """A Deployment of this name that another app owns (its process
        `<slug>-<process>`, say, from a Procfile line the API could not see)
        is never taken over: the release fails, naming it."""
        try:
            live = read_raw(client.AppsV1Api(self.api).read_namespaced_deployment, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise api_error(exc, f"reading Deployment {name}") from None
        owner = (live.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_APP_ID)
        if owner is not None and owner != app_id:
            raise errors.KubernetesRefused(f"Deployment {name} belongs to another app ({owner}); rename the process or the app")

    def _process_deployments(self, namespace: str, app_id: str) -> set[str]:
        """The Deployments of the app's processes other than web, as the cluster has them."""
        selector = f"{manifests.LABEL_APP_ID}={app_id},{manifests.LABEL_PROCESS},{manifests.LABEL_PROCESS}!={WEB}"
        return self._names("the app's process Deployments", client.AppsV1Api(self.api).list_namespaced_deployment, namespace, label_selector=selector)

    def _delete_scaler(self, namespace: str, name: str) -> None:
        self._delete_if_there(
            lambda: client.AutoscalingV2Api(self.api).delete_namespaced_horizontal_pod_autoscaler(name, namespace),
            f"deleting HorizontalPodAutoscaler {name}",
        )

    def _delete_process(self, namespace: str, name: str) -> None:
        self._delete_scaler(namespace, name)
        self._delete_if_there(lambda: client.AppsV1Api(self.api).delete_namespaced_deployment(name, namespace), f"deleting Deployment {name}")

    def server_side_apply(self, resource: Any, obj: dict[str, Any], settle: bool) -> None:
        """Apply one object; `settle`: a refusal for a missing grant right after
        the RoleBindings were applied is waited out a little (see apply_manifests)."""
        name = obj["metadata"]["name"]
        for attempt in itertools.count():
            try:
                # The answer is read (so the connection goes back to the pool), not decoded.
                resource.server_side_apply(
                    body=obj,
                    name=name,
                    namespace=obj["metadata"].get("namespace"),
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    serialize=False,
                ).read()
                return
            except ApiException as exc:
                if settle and attempt < RBAC_SETTLE_TRIES and exc.status == 403 and missing_permission(_full_status_message(exc)):
                    time.sleep(0.5)
                    continue
                raise api_error(exc, f"applying {obj['kind']} {name}") from None

    def _live_replicas(self, namespace: str, name: str) -> int | None:
        """The replica count of the Deployment as it runs, None when there is none."""
        try:
            live = client.AppsV1Api(self.api).read_namespaced_deployment_scale(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, f"reading the scale of Deployment {name}") from None
        return live.spec.replicas if live.spec is not None else None

    def _delete_if_there(self, delete: Callable[[], object], what: str) -> None:
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, what) from None

    def _drop_leftover_env_config_map(self, request: RolloutInput, deployment: dict[str, Any]) -> None:
        """Env lived in a ConfigMap before it moved to the Secret. Once a
        rollout has finished on a template that does not read it, no pod does:
        until then the old pods may restart and need it."""
        name = manifests.env_config_map_name(request.name)
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        if any((ref.get("configMapRef") or {}).get("name") == name for c in containers for ref in c.get("envFrom") or []):
            return
        try:
            client.CoreV1Api(self.api).delete_namespaced_config_map(name, request.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"removing the old env ConfigMap of {request.name}") from None

    def _stuck_pod(self, request: RolloutInput, first_seen: dict[str, float], stuck_after: float) -> str | None:
        pods = read_raw(client.CoreV1Api(self.api).list_namespaced_pod, request.namespace, label_selector=f"{manifests.LABEL_APP}={request.name}")
        now = time.monotonic()
        # A pod seen stuck that has gone since (scaled away, evicted) is no longer due.
        for gone in first_seen.keys() - {pod["metadata"]["name"] for pod in pods.get("items") or []}:
            del first_seen[gone]
        for pod in pods.get("items") or []:
            name: str = pod["metadata"]["name"]
            annotations = pod["metadata"].get("annotations") or {}
            if request.deployment_id and annotations.get(manifests.ANNOTATION_DEPLOYMENT) != request.deployment_id:
                continue
            found = rollout.stuck_pod_reason(pod)
            if found is None:
                first_seen.pop(name, None)
                continue
            since = first_seen.setdefault(name, now)
            if now - since >= stuck_after:
                return f"pod {name}: {found[1]}"
        return None

    def _deployment_changes(self, request: RolloutInput) -> Iterator[dict[str, Any] | None]:
        """The Deployment as a dict now, then after each change; None when a
        watch slice passed without one."""
        apps = client.AppsV1Api(self.api)
        while True:
            try:
                obj = read_raw(apps.read_namespaced_deployment, request.name, request.namespace)
            except ApiException as exc:
                raise api_error(exc, f"reading Deployment {request.name}") from None
            yield obj
            version = obj["metadata"]["resourceVersion"]
            while version is not None:
                stream = DictWatch().stream(  # type: ignore[no-untyped-call]
                    apps.list_namespaced_deployment,
                    request.namespace,
                    field_selector=f"metadata.name={request.name}",
                    resource_version=version,
                    timeout_seconds=WATCH_SLICE_SECONDS,
                    _request_timeout=WATCH_SLICE_SECONDS + 10,
                )
                changed = False
                try:
                    for event in stream:
                        if event["type"] == "ERROR":
                            version = None  # too old (410 Gone): read again
                            break
                        obj = event["raw_object"]
                        version = obj["metadata"]["resourceVersion"]
                        changed = True
                        yield obj
                except ApiException as exc:
                    if exc.status == 410:
                        version = None
                    else:
                        raise api_error(exc, f"watching Deployment {request.name}") from None
                if not changed and version is not None:
                    yield None

    @activity.defn(name="wait_for_rollout")
    @concise_errors
    def wait_for_rollout(self, request: RolloutInput) -> RolloutResult:
        """Wait until the Deployment is rolled out, heartbeating its progress."""
        info = activity.info()
        if request.deadline_at is not None:
            # Fixed by the workflow: no retry, activity reset or new worker extends it.
            give_up_at = request.deadline_at.timestamp()
        else:
            # A retried attempt keeps the original start, so the deadline holds.
            started = float(info.heartbeat_details[0]) if info.heartbeat_details else time.time()
            give_up_at = started + request.deadline_seconds + 5
        stuck_after = min(request.stuck_seconds, request.deadline_seconds)
        # When the workflow began this wait: a progress deadline exceeded before is an earlier rollout's.
        since = datetime.fromtimestamp(give_up_at - request.deadline_seconds - 5, UTC)
        first_seen: dict[str, float] = {}
        state, last = None, None
        reported: tuple[int, int] | None = None
        next_pod_check = rollout.next_pod_look(time.monotonic(), first_seen, stuck_after, WATCH_SLICE_SECONDS)
        last_beat: tuple[str, int, int] | None = None
        next_beat = 0.0
        for obj in self._deployment_changes(request):
            if activity.is_cancelled():
                raise CancelledError("rollout wait cancelled")
            if obj is not None:
                state, last = rollout.deployment_state(obj, since), obj
            assert state is not None and last is not None
            process = ((last.get("metadata") or {}).get("labels") or {}).get(manifests.LABEL_PROCESS, WEB)
            # A process besides web says which it is; web's words are as they always were.
            whose = "" if process == WEB else f"process {process} (Deployment {request.name}): "
            # On a change, else every few seconds and before each look at the
            # pods: each one is encoded and encrypted on the worker's loop,
            # and Temporal hears of them at most every 80% of the heartbeat
            # timeout anyway.
            beat = (state.message, state.ready, state.desired)
            if beat != last_beat or time.monotonic() >= min(next_beat, next_pod_check):
                activity.heartbeat(give_up_at - request.deadline_seconds - 5, *beat)
                last_beat, next_beat = beat, time.monotonic() + HEARTBEAT_SECONDS
            # Not before the first pod is ready: the workflow's step already
            # says none is (a signal costs a workflow task and four history events).
            changed = (state.ready, state.desired) != reported and (state.ready > 0 or reported is not None)
            if request.report_progress and info.workflow_id and changed and not state.done:
                reported = (state.ready, state.desired)
                self._report(info.workflow_id, RolloutProgress(ready=state.ready, desired=state.desired, message=state.message, name=request.name))
            if state.done and process == WEB:
                self._drop_leftover_env_config_map(request, last)
            if state.done:
                return RolloutResult(ready_replicas=state.ready, desired_replicas=state.desired, message=state.message)
            if state.failed:
                # Say why, when a pod shows it.
                stuck = self._stuck_pod(request, first_seen, 0)
                message = f"{state.message}; {stuck}" if stuck else state.message
                raise errors.RolloutFailed(whose + message)
            if time.monotonic() >= next_pod_check:
                stuck = self._stuck_pod(request, first_seen, stuck_after)
                if stuck:
                    raise errors.RolloutFailed(whose + stuck)
                next_pod_check = rollout.next_pod_look(time.monotonic(), first_seen, stuck_after, WATCH_SLICE_SECONDS)
            # The Deployment's own deadline only counts while it makes no
            # progress; this one bounds the whole wait.
            if time.time() > give_up_at:
                raise errors.RolloutFailed(f"{whose}the rollout did not finish within {request.deadline_seconds}s: {state.message}")
        raise AssertionError("the change stream never ends")

    def _report(self, workflow_id: str, progress: RolloutProgress) -> None:
        # Best effort: the step catches up when the wait returns.
        if self.report_progress is None:
            return
        try:
            self.report_progress(workflow_id, progress)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not report rollout progress to %s: %s", workflow_id, exc)

    @activity.defn(name="scale_deployment")
    @concise_errors
    def scale_deployment(self, request: ScaleInput) -> int:
        self.guard(request.on_behalf_of)
        apps = client.AppsV1Api(self.api)
        try:
            scale = apps.patch_namespaced_deployment_scale(
                request.name, request.namespace, {"spec": {"replicas": request.replicas}}
            )
        except ApiException as exc:
            raise api_error(exc, f"scaling Deployment {request.name}") from None
        # The count the API server recorded (a webhook may have changed it).
        return scale.spec.replicas if scale.spec is not None and scale.spec.replicas is not None else request.replicas

    @staticmethod
    def _still_there(target: tuple[str, Any, Callable[..., Any], str], namespace: str) -> bool:
        """Whether the object of a delete's target exists (its body is read, not decoded into a model)."""
        kind, _delete, read, name = target
        try:
            read(name, namespace, _preload_content=False).read()
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"reading {kind} {name}") from None
            return False
        return True

    @activity.defn(name="delete_app_resources")
    @concise_errors
    def delete_app_resources(self, request: DeleteResourcesInput) -> list[str]:
        """Delete the app's objects (pods first, via foreground deletion) and wait until they are gone."""
        core, apps, net = client.CoreV1Api(self.api), client.AppsV1Api(self.api), client.NetworkingV1Api(self.api)
        scalers = client.AutoscalingV2Api(self.api)
        ns, slug = request.namespace, request.slug
        targets = [
            # The autoscaler first, so it does not scale what is being deleted.
            ("HorizontalPodAutoscaler", scalers.delete_namespaced_horizontal_pod_autoscaler, scalers.read_namespaced_horizontal_pod_autoscaler, slug),
            ("Deployment", apps.delete_namespaced_deployment, apps.read_namespaced_deployment, slug),
            ("Service", core.delete_namespaced_service, core.read_namespaced_service, slug),
            ("Ingress", net.delete_namespaced_ingress, net.read_namespaced_ingress, slug),
            ("Secret", core.delete_namespaced_secret, core.read_namespaced_secret, manifests.env_secret_name(slug)),
            # Apps last deployed before env moved to a Secret still have this one.
            ("ConfigMap", core.delete_namespaced_config_map, core.read_namespaced_config_map, manifests.env_config_map_name(slug)),
        ]
        if request.app_id is not None:
            # Each process other than web: its autoscaler, then its Deployment.
            for name in sorted(self._process_deployments(ns, request.app_id)):
                targets[1:1] = [
                    ("HorizontalPodAutoscaler", scalers.delete_namespaced_horizontal_pod_autoscaler, scalers.read_namespaced_horizontal_pod_autoscaler, name),
                    ("Deployment", apps.delete_namespaced_deployment, apps.read_namespaced_deployment, name),
                ]
        if request.app_id is not None:
            # The TLS Secrets of its domains, and the Ingress of uploaded certificates' domains.
            targets.append(("Ingress", net.delete_namespaced_ingress, net.read_namespaced_ingress, domains.uploaded_ingress_name(slug)))
            for name in sorted(self._tls_secrets_of(ns, slug)):
                targets.append(("Secret", core.delete_namespaced_secret, core.read_namespaced_secret, name))
        body = client.V1DeleteOptions(propagation_policy="Foreground")
        for kind, delete, _read, name in targets:
            try:
                delete(name, ns, body=body)
            except ApiException as exc:
                if exc.status != 404:
                    raise api_error(exc, f"deleting {kind} {name}") from None
        selectors = [f"{manifests.LABEL_APP}={slug}"]
        if request.app_id is not None:
            selectors.append(f"{manifests.LABEL_APP_ID}={request.app_id},{manifests.LABEL_APP}!={slug}")

        def pods_left() -> list[str]:
            found = (read_raw(core.list_namespaced_pod, ns, label_selector=selector).get("items") or [] for selector in selectors)
            return [f"Pod/{pod['metadata']['name']}" for pods in found for pod in pods]

        def still_there(among: list[tuple[str, Any, Any, str]]) -> list[tuple[str, Any, Any, str]]:
            return [target for target in among if self._still_there(target, ns)]

        deadline = time.monotonic() + request.timeout_seconds
        # Each look reads the objects in order up to the first still there:
        # the rest wait for a later look. When none is left, one last look
        # at them all and at the pods says they are gone.
        present = targets
        while True:
            while present and not self._still_there(present[0], ns):
                present = present[1:]
            # A Deployment deleted in the foreground goes only once its pods
            # have: while one is left, its pods need no look of their own.
            waiting_on_deployments = any(kind == "Deployment" for kind, *_ in present)
            remaining = [f"{kind}/{name}" for kind, _delete, _read, name in present] + ([] if waiting_on_deployments else pods_left())
            if not remaining:
                present = still_there(targets)
                remaining = [f"{kind}/{name}" for kind, _delete, _read, name in present] + pods_left()
            activity.heartbeat(remaining)
            if not remaining:
                return [f"{kind}/{name}" for kind, _d, _r, name in targets]
            if time.monotonic() > deadline:
                # What holds it, as it is now (the pods too, which may be what a Deployment waits on).
                stuck = [f"{kind}/{name}" for kind, _delete, _read, name in still_there(present)] + pods_left()
                if stuck:
                    # Waiting again would wait on the same finalizer: fail, so the app can be deleted again later.
                    raise errors.DeletionStuck(f"still present after {request.timeout_seconds}s: {', '.join(stuck)}")
            time.sleep(0.5)
