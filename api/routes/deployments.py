"""/api/v1/apps/{id}/deployments: history, one deployment with its progress, revert."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from temporalio.client import Client

from api.deps import Deployer, SessionDep, TemporalDep, Viewer
from api.operations import MutationDep
from api.routes.apps import load_app, mutable
from api.schemas import DeploymentPublic
from api.serializers import deployment_public
from conveyor.db.models import Deployment
from workflows.deploy import DeployWorkflow

router = APIRouter(prefix="/apps/{app_id}/deployments", tags=["deployments"])


@router.get("", response_model=list[DeploymentPublic], summary="Deployment history, newest first")
def list_deployments(app_id: str, session: SessionDep, caller: Viewer) -> list[DeploymentPublic]:
    app = load_app(session, caller, app_id)
    deps = session.scalars(select(Deployment).where(Deployment.app_id == app.id).order_by(Deployment.number.desc()))
    return [deployment_public(dep) for dep in deps]


def _load(session, app, deployment_id: str) -> Deployment:
    dep = session.get(Deployment, deployment_id)
    if dep is None or dep.app_id != app.id:
        raise HTTPException(404, f"deployment {deployment_id} not found for app {app.id}")
    return dep


async def workflow_progress(temporal: Client, dep: Deployment) -> list[dict]:
    """The steps as the deployment's workflow reports them (empty before it starts)."""
    try:
        return await temporal.get_workflow_handle(dep.workflow_id).query(DeployWorkflow.progress)
    except Exception:  # noqa: BLE001 - not started yet (queued) or no worker to answer
        return []


@router.get("/{deployment_id}", response_model=DeploymentPublic, summary="One deployment with its progress")
async def get_deployment(
    app_id: str, deployment_id: str, session: SessionDep, temporal: TemporalDep, caller: Viewer
) -> DeploymentPublic:
    app = load_app(session, caller, app_id)
    dep = _load(session, app, deployment_id)
    return deployment_public(dep, await workflow_progress(temporal, dep))


@router.post(
    "/{deployment_id}/revert",
    status_code=202,
    response_model=DeploymentPublic,
    summary="Roll back to a previous deployment",
    description=(
        "A new deployment with the target's image digest, env and port; the replica count stays. "
        "The app's env and port become the target's."
    ),
)
async def revert(
    app_id: str,
    deployment_id: str,
    m: MutationDep,
    caller: Deployer,
):
    app = load_app(m.session, caller, app_id)
    mutable(app)
    target = _load(m.session, app, deployment_id)

    async def handle():
        if target.status not in ("active", "superseded") or not target.image_ref:
            raise HTTPException(409, f"deployment {target.id} is {target.status}: only a deployment that once ran can be restored")
        app.env, app.port = dict(target.env), target.port
        return await m.release(
            app,
            caller,
            "rollback",
            image=target.image,
            image_ref=target.image_ref,
            image_digest=target.image_digest,
            env=target.env,
            port=target.port,
            rollback_of=target.id,
        )

    return await m.once(caller, handle)
