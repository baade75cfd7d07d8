"""/api/v1/apps: create, read, update, delete, deploy, restart, status, pods."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Admin, Caller, Deployer, SessionDep, SettingsDep, Viewer, read_off_loop
from api.operations import MutationDep
from api.pagination import PageDep
from api.schemas import AppCreate, AppPublic, AppStatus, AppUpdate, DeploymentPublic, PodDetail, PodStatus
from api.serializers import app_public
from api.services import apps as services
from conveyor.clients.db.models import App, Project
from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import api_client
from conveyor.domain import manifests, vocabulary
from conveyor.domain.ids import iso, utcnow
from conveyor.settings import Settings

router = APIRouter(prefix="/apps", tags=["apps"])


@router.get("", response_model=list[AppPublic], summary="List apps by name (paginated)")
def list_apps(
    session: SessionDep,
    caller: Viewer,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=63, description="Only the app with exactly this name (an empty list if none)")] = None,
) -> list[AppPublic]:
    # Rows of the table, not ORM objects: most of a long list's time went to
    # building those (and it holds the GIL, which the event loop waits for).
    apps = App.__table__.c
    query = select(App.__table__).where(apps.project_id == caller.project_id)
    if name is not None:
        query = query.where(apps.name == name)
    if (after := page.after(str)) is not None:
        query = query.where(apps.name > after)
    rows = session.execute(page.take(query.order_by(apps.name))).all()
    return [app_public(row) for row in page.finish(rows, lambda row: row.name)]


@router.post(
    "",
    status_code=201,
    response_model=AppPublic,
    summary="Create an app",
    description="Creates the app and, for image apps, starts its first deployment.",
)
async def create_app(body: AppCreate, m: MutationDep, caller: Admin) -> Any:
    body = services.with_template(m.settings, body)
    return await m.once(caller, partial(services.create, m, caller, body))


@router.get("/{app_id}", response_model=AppPublic, summary="Get an app")
def get_app(app_id: str, session: SessionDep, caller: Viewer) -> AppPublic:
    return app_public(load_app(session, caller, app_id))


@router.patch(
    "/{app_id}",
    response_model=AppPublic,
    summary="Update an app",
    description=(
        "A change of image, port or env is a new deployment; a change of replicas alone scales. "
        "Answers 202 when a workflow was started, 200 when nothing in the cluster changes. "
        "Scaling needs the deployer role; anything else needs admin."
    ),
    responses={202: {"model": AppPublic, "description": "the change was handed to a workflow"}},
)
async def update_app(app_id: str, body: AppUpdate, m: MutationDep, caller: Deployer) -> Any:
    services.check_replicas(m.settings, body.replicas)
    given = body.model_dump(exclude_unset=True)
    if set(given) - {"replicas"} and caller.role != "admin":
        raise HTTPException(403, "changing anything but replicas needs the admin role; your token has deployer")
    for field in ("port", "replicas"):
        if field in given and given[field] is None:
            raise services.unprocessable(field, "may not be null")
    return await m.once(caller, partial(services.update, m, caller, app_id, given))


@router.put("/{app_id}", response_model=AppPublic, summary="Update an app (same as PATCH)", include_in_schema=True)
async def replace_app(app_id: str, body: AppUpdate, m: MutationDep, caller: Deployer) -> Any:
    return await update_app(app_id, body, m, caller)


@router.delete(
    "/{app_id}",
    status_code=202,
    response_model=AppPublic,
    summary="Delete an app",
    description=(
        "Removes the Deployment, Service, Ingress and env Secret, waits until they are gone, then removes the app. "
        "A delete that fails leaves the app delete_failed with the reason in status_reason; DELETE again tries again."
    ),
)
async def delete_app(app_id: str, m: MutationDep, caller: Admin) -> Any:
    status, attempt, waiting = await read_off_loop(m.settings, services.delete_state, caller, app_id)
    ended = None
    if status == vocabulary.AppStatus.DELETING and not waiting and await services.delete_attempt_over(m.handoff.temporal, app_id, attempt):
        ended = attempt
    return await m.once(caller, partial(services.delete, m, caller, app_id, ended))


@router.post(
    "/{app_id}/deploy",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Deploy / redeploy",
    description=(
        "Image apps: resolves the image tag to the digest it names now and rolls it out. Git apps: resolves the head "
        "commit of repo_branch, builds it (or reuses the image built for that commit) and rolls it out. Upload apps: "
        "rebuilds the latest uploaded source."
    ),
)
async def deploy_app(app_id: str, m: MutationDep, caller: Deployer) -> Any:
    return await m.once(caller, partial(services.deploy, m, caller, app_id))


@router.post(
    "/{app_id}/restart", status_code=202, response_model=DeploymentPublic, summary="Restart all pods without redeploying"
)
async def restart_app(app_id: str, m: MutationDep, caller: Deployer) -> Any:
    return await m.once(caller, partial(services.restart, m, caller, app_id))


# Reads used by the other app routes (status, pods, logs, events, metrics).
load_app = services.load_app


def app_namespace(session: Session, app: App) -> str:
    return session.get(Project, app.project_id).namespace


def app_and_namespace(session: Session, caller: Caller, app_id: str) -> tuple[App, str]:
    app = load_app(session, caller, app_id)
    return app, app_namespace(session, app)


def get_app_target(app_id: str, settings: SettingsDep, caller: Viewer) -> tuple[App, str]:
    """The app and its namespace, read in a session closed before the route
    calls Kubernetes: no connection is held while the cluster answers."""
    with read_scope(settings.effective_database_url) as session:
        return app_and_namespace(session, caller, app_id)


AppTargetDep = Annotated[tuple[App, str], Depends(get_app_target)]


def pod_objects(settings: Settings, namespace: str, app: App) -> list[dict]:
    """The app's pods as API dicts, by name."""
    core = k8s.CoreV1Api(api_client(settings))
    pods = core.list_namespaced_pod(namespace, label_selector=f"{manifests.LABEL_APP}={app.slug}").items
    return sorted((api_client(settings).sanitize_for_serialization(p) for p in pods), key=lambda p: p["metadata"]["name"])


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


@router.get("/{app_id}/status", response_model=AppStatus, summary="Runtime status: ready replicas and pod phases")
def app_status(target: AppTargetDep, settings: SettingsDep) -> AppStatus:
    app, namespace = target
    try:
        obj = k8s.AppsV1Api(api_client(settings)).read_namespaced_deployment(app.slug, namespace)
        desired, ready = obj.spec.replicas or 0, obj.status.ready_replicas or 0
    except ApiException as exc:
        if exc.status != 404:
            raise HTTPException(502, f"Kubernetes answered {exc.status} {exc.reason}") from exc
        desired, ready = 0, 0
    pods = [
        PodStatus(name=p["metadata"]["name"], phase=p.get("status", {}).get("phase", "Unknown"), ready=_ready(p))
        for p in pod_objects(settings, namespace, app)
        if not p["metadata"].get("deletionTimestamp")
    ]
    return AppStatus(desired_replicas=desired, ready_replicas=ready, pods=pods)


@router.get("/{app_id}/pods", response_model=list[PodDetail], summary="List the app's pods")
def app_pods(target: AppTargetDep, settings: SettingsDep) -> list[PodDetail]:
    app, namespace = target
    out = []
    for pod in pod_objects(settings, namespace, app):
        statuses = pod.get("status", {}).get("containerStatuses") or []
        container = statuses[0] if statuses else {}
        waiting = (container.get("state") or {}).get("waiting") or {}
        ready = _ready(pod)
        image = container.get("image") or pod["spec"]["containers"][0]["image"]
        image_id = container.get("imageID") or image
        created = pod["metadata"].get("creationTimestamp")
        out.append(
            PodDetail(
                name=pod["metadata"]["name"],
                phase=pod.get("status", {}).get("phase", "Unknown"),
                ready=ready,
                restarts=sum(c.get("restartCount", 0) for c in statuses),
                node=pod.get("spec", {}).get("nodeName"),
                image=image,
                image_digest=image_id.split("@", 1)[1] if "@" in image_id else None,
                created_at=iso(created),
                age_seconds=int((utcnow() - datetime.fromisoformat(created)).total_seconds()) if created else None,
                reason=None if ready else (waiting.get("reason") or "not ready"),
            )
        )
    return out

