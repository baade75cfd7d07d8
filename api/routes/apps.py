"""/api/v1/apps: create, read, update, delete, deploy, restart, status, pods."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Admin, Caller, Deployer, SessionDep, SettingsDep, TemporalConnector, Viewer, read_off_loop
from api.operations import MutationDep, lane_id
from api.pagination import PageDep
from api.schemas import AppCreate, AppPublic, AppStatus, AppUpdate, DeploymentPublic, PodDetail, PodStatus, env_problem, slugify
from api.serializers import app_public
from conveyor import manifests, sources
from conveyor.db.models import App, Build, Deployment, Handoff, Project
from conveyor.db.records import active_deployment, add_audit, delete_workflow_id
from conveyor.ids import iso, new_id, utcnow
from conveyor.kube import api_client
from conveyor.payloads import Operation
from conveyor.settings import Settings
from conveyor.templates import catalogue

router = APIRouter(prefix="/apps", tags=["apps"])


def unprocessable(field: str, message: str, where: str = "body") -> HTTPException:
    return HTTPException(422, [{"loc": [where, field], "msg": message, "type": "value_error"}])


def load_app(session: Session, caller: Caller, app_id: str) -> App:
    app = session.get(App, app_id)
    # Another project's app is indistinguishable from a missing one.
    if app is None or app.project_id != caller.project_id:
        raise HTTPException(404, f"app {app_id} not found")
    return app


def mutable(app: App) -> None:
    if app.status == "deleting":
        raise HTTPException(409, f"app {app.id} is being deleted; nothing else can change until that ends")
    if app.status == "delete_failed":
        raise HTTPException(
            409, f"deleting app {app.id} failed (see status_reason); DELETE it again, nothing else can change"
        )


def check_replicas(settings: Settings, replicas: int | None) -> None:
    if replicas is not None and replicas > settings.max_replicas:
        raise unprocessable("replicas", f"must be at most {settings.max_replicas} (CONVEYOR_MAX_REPLICAS)")


def check_repo_url(settings: Settings, url: str | None) -> None:
    if url is None:
        return
    try:
        sources.check_repo_url(url, settings.repo_schemes)
    except sources.UnsafeSource as exc:
        raise unprocessable("repo_url", str(exc)) from exc


def new_upload_build(session: Session, app: App, source_ref: str | None, upload_path: str | None = None) -> Build:
    """A build of an uploaded source: `source_ref` in the registry (or a file of an older row)."""
    build = Build(
        id=new_id("bld"),
        app_id=app.id,
        source_type="upload",
        source_ref=source_ref,
        upload_path=upload_path,
        status="pending",
        created_at=utcnow(),
    )
    session.add(build)
    session.flush()
    return build


def source_release(session: Session, settings: Settings, app: App) -> dict | None:
    """How a new deployment of `app` gets its image; None when there is nothing to deploy yet."""
    if app.source_type == "image":
        return {"image": app.image_url}
    if app.source_type == "git":
        return {"image": None}  # the workflow resolves the branch head, then builds or reuses
    latest = session.scalars(
        select(Build)
        .where(Build.app_id == app.id, or_(Build.source_ref.is_not(None), Build.upload_path.is_not(None)))
        .order_by(Build.created_at.desc())
    ).first()
    if latest is None:
        return None
    return {"image": None, "build_id": new_upload_build(session, app, latest.source_ref, latest.upload_path).id}


def running_release(current: Deployment) -> dict:
    """A config change is a release of the image that runs now, pinned by
    digest: no tag is resolved again and nothing is rebuilt (only deploy, or
    a new image_url, does that). `image_from` lets the deployment take the
    image of whatever is active when it starts, should a release queued
    before it (a deploy, a revert) become active first."""
    return {
        "image": current.image,
        "image_ref": current.image_ref,
        "image_digest": current.image_digest,
        "source_commit": current.source_commit,
        "image_from": current.id,
    }


@router.get("", response_model=list[AppPublic], summary="List apps by name (paginated)")
def list_apps(
    session: SessionDep,
    caller: Viewer,
    page: PageDep,
) -> list[AppPublic]:
    query = select(App).where(App.project_id == caller.project_id)
    if (after := page.after(str)) is not None:
        query = query.where(App.name > after)
    apps = session.scalars(page.take(query.order_by(App.name))).all()
    return [app_public(app) for app in page.finish(apps, lambda app: app.name)]


@router.post(
    "",
    status_code=201,
    response_model=AppPublic,
    summary="Create an app",
    description="Creates the app and, for image apps, starts its first deployment.",
)
async def create_app(
    body: AppCreate,
    m: MutationDep,
    caller: Admin,
):
    settings = m.settings
    check_replicas(settings, body.replicas)
    check_repo_url(settings, body.repo_url)
    if body.template_id is not None:
        template = catalogue().get(body.template_id)
        if template is None:
            raise unprocessable("template_id", "not a template of the catalogue; GET /api/v1/templates lists them")
        # Fields given explicitly win over the template's.
        given = body.model_fields_set
        body = body.model_copy(
            update={
                "image_url": body.image_url if "image_url" in given else template.image_url,
                "port": body.port if "port" in given else template.port,
                "replicas": body.replicas if "replicas" in given else template.replicas,
                "env": {**template.env, **body.env},
            }
        )
        check_replicas(settings, body.replicas)

    def handle():
        session = m.session
        slug = slugify(body.name)
        taken = session.scalars(
            select(App).where(App.project_id == caller.project_id, (App.name == body.name) | (App.slug == slug))
        ).first()
        if taken is not None:
            raise HTTPException(409, f"an app named {taken.name!r} (slug {taken.slug}) already exists in this project")
        now = utcnow()
        app = App(
            id=new_id("app"),
            project_id=caller.project_id,
            name=body.name,
            slug=slug,
            source_type=body.source_type,
            image_url=body.image_url,
            repo_url=body.repo_url,
            repo_branch=body.repo_branch or ("main" if body.source_type == "git" else None),
            build_command=body.build_command,
            port=body.port,
            replicas=body.replicas,
            env=dict(body.env),
            progress_deadline_seconds=body.progress_deadline_seconds or settings.default_progress_deadline_seconds,
            status="created" if body.source_type == "upload" else "deploying",
            created_at=now,
            updated_at=now,
        )
        session.add(app)
        session.flush()
        add_audit(session, app, "create", caller.name, f"Created app {app.name} ({app.source_type})")
        if app.source_type != "upload":
            m.release(app, "deploy", env=app.env, port=app.port, **source_release(session, settings, app))
        return 201, app_public(app).model_dump()

    return await m.once(caller, handle)


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
async def update_app(
    app_id: str,
    body: AppUpdate,
    m: MutationDep,
    caller: Deployer,
):
    check_replicas(m.settings, body.replicas)
    given = body.model_dump(exclude_unset=True)
    if set(given) - {"replicas"} and caller.role != "admin":
        raise HTTPException(403, "changing anything but replicas needs the admin role; your token has deployer")
    for field in ("port", "replicas"):
        if field in given and given[field] is None:
            raise unprocessable(field, "may not be null")

    def handle():
        session = m.session
        app = load_app(session, caller, app_id)
        mutable(app)
        if given.get("image_url") is not None and app.source_type != "image":
            raise unprocessable("image_url", f"only image apps have one; this app builds from {app.source_type} sources")
        new_env = dict(app.env)
        for key, value in (given.get("env") or {}).items():
            if value is None:
                new_env.pop(key, None)
            else:
                new_env[key] = value
        # Each patch is checked on its own; the merged env must hold the limits too.
        if (problem := env_problem(new_env)) is not None:
            raise unprocessable("env", problem)
        image_changed = "image_url" in given and given["image_url"] != app.image_url
        release_changed = image_changed or ("port" in given and given["port"] != app.port) or new_env != app.env
        changed_keys = sorted(k for k in set(new_env) | set(app.env) if new_env.get(k) != app.env.get(k))
        previous_replicas = app.replicas
        for field in ("image_url", "port", "repo_branch", "build_command", "progress_deadline_seconds", "replicas"):
            if field in given and given[field] is not None:
                setattr(app, field, given[field])
        app.env = new_env
        app.updated_at = utcnow()
        started = False
        current = active_deployment(session, app.id)
        if release_changed and not image_changed and current is not None and current.image_ref:
            snapshot = running_release(current)
        elif release_changed:
            # A new image, or nothing runs yet: resolve (or build) the app's source.
            snapshot = source_release(session, m.settings, app)
        if release_changed and snapshot is not None:
            what = [f"env ({', '.join(changed_keys)})" if changed_keys else None]
            what += [f"{f}={given[f]}" for f in ("image_url", "port") if f in given]
            add_audit(session, app, "update", caller.name, "Changed " + ", ".join(w for w in what if w))
            m.release(app, "update", env=app.env, port=app.port, **snapshot)
            started = True
        elif release_changed or set(given) - {"replicas"}:
            add_audit(session, app, "update", caller.name, f"Changed {', '.join(sorted(set(given) - {'replicas'}))}")
        if "replicas" in given and given["replicas"] != previous_replicas and not started:
            m.queue(
                Operation(
                    kind="scale",
                    app_id=app.id,
                    project_id=app.project_id,
                    workflow_id=f"scale-{app.id}-{new_id('op')}",
                    summary=f"scale {app.name} {previous_replicas} → {app.replicas}",
                    replicas=app.replicas,
                    previous_replicas=previous_replicas,
                    user=caller.name,
                )
            )
            started = True
        session.flush()
        return (202 if started else 200), app_public(app).model_dump()

    return await m.once(caller, handle)


@router.put("/{app_id}", response_model=AppPublic, summary="Update an app (same as PATCH)", include_in_schema=True)
async def replace_app(
    app_id: str,
    body: AppUpdate,
    m: MutationDep,
    caller: Deployer,
):
    return await update_app(app_id, body, m, caller)


def _delete_state(session: Session, caller: Caller, app_id: str) -> tuple[str, int, bool]:
    """The app's status, its delete attempt, and whether that attempt still waits for its hand-off."""
    app = load_app(session, caller, app_id)
    waiting = session.get(Handoff, delete_workflow_id(app.id, app.delete_attempts)) is not None
    return app.status, app.delete_attempts, waiting


async def _delete_attempt_over(temporal: TemporalConnector, app_id: str, attempt: int) -> bool:
    """Whether the delete attempt's workflow has ended without deleting the app
    (terminated, timed out, or failed before it could say so): then DELETE
    starts a new attempt. When Temporal cannot tell, the attempt is still on."""
    try:
        client = await temporal.client()
        try:
            described = await client.get_workflow_handle(delete_workflow_id(app_id, attempt)).describe()
            return described.status != WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        # Not started: the app's lane holds it while it runs earlier operations.
        lane = await client.get_workflow_handle(lane_id(app_id)).describe()
        return lane.status != WorkflowExecutionStatus.RUNNING
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True
        return False
    except Exception:  # noqa: BLE001 - Temporal away: do not start a second attempt blind
        return False


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
async def delete_app(
    app_id: str,
    m: MutationDep,
    caller: Admin,
):
    status, attempt, waiting = await read_off_loop(m.settings, _delete_state, caller, app_id)
    ended = None
    if status == "deleting" and not waiting and await _delete_attempt_over(m.handoff.temporal, app_id, attempt):
        ended = attempt

    def handle():
        session = m.session
        app = load_app(session, caller, app_id)
        # Deleting already: a repeat changes nothing, unless that attempt ended without a word.
        if app.status != "deleting" or app.delete_attempts == ended:
            app.delete_attempts = (app.delete_attempts or 0) + 1
            again = f" (attempt {app.delete_attempts})" if app.delete_attempts > 1 else ""
            app.status, app.status_reason = "deleting", None
            add_audit(session, app, "delete_requested", caller.name, f"Requested deletion of {app.name}{again}")
            m.queue(
                Operation(
                    kind="delete",
                    app_id=app.id,
                    project_id=app.project_id,
                    workflow_id=delete_workflow_id(app.id, app.delete_attempts),
                    summary=f"delete {app.name} and its Kubernetes objects{again}",
                    user=caller.name,
                )
            )
        session.flush()
        return 202, app_public(app).model_dump()

    return await m.once(caller, handle)


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
async def deploy_app(
    app_id: str,
    m: MutationDep,
    caller: Deployer,
):
    def handle():
        app = load_app(m.session, caller, app_id)
        mutable(app)
        snapshot = source_release(m.session, m.settings, app)
        if snapshot is None:
            raise HTTPException(409, f"app {app.id} has no uploaded source yet: POST a tarball to /apps/{app.id}/build")
        return m.release(app, "deploy", env=app.env, port=app.port, **snapshot)

    return await m.once(caller, handle)


@router.post(
    "/{app_id}/restart", status_code=202, response_model=DeploymentPublic, summary="Restart all pods without redeploying"
)
async def restart_app(
    app_id: str,
    m: MutationDep,
    caller: Deployer,
):
    def handle():
        app = load_app(m.session, caller, app_id)
        mutable(app)
        current = active_deployment(m.session, app.id)
        if current is None:
            raise HTTPException(409, f"app {app.id} has no active deployment to restart")
        return m.release(
            app,
            "restart",
            image=current.image,
            image_ref=current.image_ref,
            image_digest=current.image_digest,
            source_commit=current.source_commit,
            env=current.env,
            port=current.port,
            restarted_at=iso(utcnow()),
        )

    return await m.once(caller, handle)


def app_namespace(session: Session, app: App) -> str:
    return session.get(Project, app.project_id).namespace


def app_and_namespace(session: Session, caller: Caller, app_id: str) -> tuple[App, str]:
    app = load_app(session, caller, app_id)
    return app, app_namespace(session, app)


def pod_objects(settings: Settings, namespace: str, app: App) -> list[dict]:
    """The app's pods as API dicts, by name."""
    core = k8s.CoreV1Api(api_client(settings))
    pods = core.list_namespaced_pod(namespace, label_selector=f"{manifests.LABEL_APP}={app.slug}").items
    return sorted((api_client(settings).sanitize_for_serialization(p) for p in pods), key=lambda p: p["metadata"]["name"])


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


@router.get("/{app_id}/status", response_model=AppStatus, summary="Runtime status: ready replicas and pod phases")
def app_status(app_id: str, session: SessionDep, settings: SettingsDep, caller: Viewer) -> AppStatus:
    app = load_app(session, caller, app_id)
    namespace = app_namespace(session, app)
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
def app_pods(app_id: str, session: SessionDep, settings: SettingsDep, caller: Viewer) -> list[PodDetail]:
    app, namespace = app_and_namespace(session, caller, app_id)
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

