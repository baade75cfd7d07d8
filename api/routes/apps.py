"""/api/v1/apps: create, read, update, delete, deploy, restart, status, pods."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import Admin, Deployer, SessionDep, SettingsDep, TemporalConnectorDep, Viewer, read_off_loop
from api.pagination import PageDep
from api.schemas import AppCreate, AppPublic, AppStatusPublic, AppUpdate, DeploymentPublic, PodDetail, ProcessQuery
from api.serializers import app_body, app_public, app_rows
from api.services import apps as services
from api.services import cluster
from api.unit_of_work import MutationDep
from conveyor.clients.db.models import App
from conveyor.domain.planning import only_counts
from conveyor.domain.vocabulary import AppStatus

router = APIRouter(prefix="/apps", tags=["apps"])


@router.get("", response_model=list[AppPublic], summary="List apps by name (paginated)")
async def list_apps(
    settings: SettingsDep,
    caller: Viewer,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=63, description="Only the app with exactly this name (an empty list if none)")] = None,
) -> Response:
    def read(session: Session) -> bytes:
        # Rows of the body's columns, not ORM objects: most of a long list's
        # time went to building those (and it holds the GIL, which the event
        # loop waits for). Encoded at once, without a model per app
        # (app_body's values are AppPublic's, as the list test checks
        # against GET /apps/{id}).
        apps = App.__table__.c
        query = app_rows().where(apps.project_id == caller.project_id)
        if name is not None:
            query = query.where(apps.name == name)
        if (after := page.after(str)) is not None:
            query = query.where(apps.name > after)
        rows = session.execute(page.take(query.order_by(apps.name))).all()
        return orjson.dumps([app_body(row) for row in page.finish(rows, lambda row: row.name)])

    # One trip to the thread pool for the read and the encoding (a `def`
    # route with a session dependency takes three): the most polled list
    # waits less for the event loop when the API is busy.
    return Response(await read_off_loop(settings, read), media_type="application/json", headers=dict(page.response.headers))


@router.post(
    "",
    status_code=201,
    response_model=AppPublic,
    summary="Create an app",
    description="Creates the app and, for image apps, starts its first deployment.",
)
async def create_app(body: AppCreate, m: MutationDep, caller: Admin) -> Any:
    # What the caller named (a template's image is the operator's choice; the worker checks it too).
    await run_in_threadpool(services.check_outbound, m.settings, body.image_url, body.repo_url)
    body = services.with_template(m.settings, body)
    return await m.run(caller, services.create, m.settings, body)


@router.get("/{app_id}", response_model=AppPublic, summary="Get an app")
def get_app(app_id: str, session: SessionDep, caller: Viewer) -> AppPublic:
    return app_public(services.load_app(session, caller, app_id))


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
    given = body.model_dump(exclude_unset=True)
    scales_only = not set(given) - {"replicas", "processes"} and only_counts(given.get("processes"))
    if not scales_only and caller.role != "admin":
        raise HTTPException(403, "changing anything but replica counts needs the admin role; your token has deployer")
    for field in ("port", "replicas"):
        if field in given and given[field] is None:
            raise services.unprocessable(field, "may not be null")
    await run_in_threadpool(services.check_outbound, m.settings, given.get("image_url"), None)
    return await m.run(caller, services.update, m.settings, app_id, given)


@router.put("/{app_id}", response_model=AppPublic, summary="Update an app (same as PATCH)", include_in_schema=True)
async def replace_app(app_id: str, body: AppUpdate, m: MutationDep, caller: Deployer) -> Any:
    return await update_app(app_id, body, m, caller)


@router.delete(
    "/{app_id}",
    status_code=202,
    response_model=AppPublic,
    summary="Delete an app",
    description=(
        "Removes the Deployment, Service, Ingress, env Secret and TLS Secrets, waits until they are gone, then removes the app "
        "(its custom domains are free again). "
        "A delete that fails leaves the app delete_failed with the reason in status_reason; DELETE again tries again."
    ),
)
async def delete_app(app_id: str, m: MutationDep, caller: Admin, temporal: TemporalConnectorDep) -> Any:
    status, attempt, waiting = await read_off_loop(m.settings, services.delete_state, caller, app_id)
    ended = None
    if status == AppStatus.DELETING and not waiting and await services.delete_attempt_over(temporal, app_id, attempt):
        ended = attempt
    return await m.run(caller, services.delete, app_id, ended)


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
    return await m.run(caller, services.deploy, app_id)


@router.post(
    "/{app_id}/restart", status_code=202, response_model=DeploymentPublic, summary="Restart all pods without redeploying"
)
async def restart_app(app_id: str, m: MutationDep, caller: Deployer) -> Any:
    return await m.run(caller, services.restart, app_id)


@router.get("/{app_id}/status", response_model=AppStatusPublic, summary="Runtime status: ready replicas and pod phases")
def app_status(app_id: str, settings: SettingsDep, caller: Viewer, process: ProcessQuery = None) -> AppStatusPublic:
    return cluster.status(settings, caller, app_id, process)


@router.get("/{app_id}/pods", response_model=list[PodDetail], summary="List the app's pods")
def app_pods(app_id: str, settings: SettingsDep, caller: Viewer, process: ProcessQuery = None) -> list[PodDetail]:
    return cluster.pods(settings, caller, app_id, process)
