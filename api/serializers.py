"""Database rows to response bodies."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from api.schemas import AppPublic, DeploymentPublic, DeploymentStep, masked_env
from conveyor.clients.db.models import App, Deployment
from conveyor.domain.ids import iso
from conveyor.domain.redact import mask_url_credentials
from conveyor.domain.workload import Workload


def workload_fields(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The health checks and resources a row holds, as the response fields."""
    workload = Workload.of(stored)
    return {name: getattr(workload, name) for name in Workload.FIELDS}


# An app that sets none of the workload fields (most apps): every one null.
NO_WORKLOAD: dict[str, Any] = dict.fromkeys(Workload.FIELDS)


def app_body(app: App | Row[Any]) -> dict[str, Any]:
    """An app as the API shows it, as JSON-ready values: from an App, or a
    row of the apps table (the same names). `AppPublic` is its schema; a
    long list is encoded from these directly, without a model per app."""
    workload = Workload.of(app.workload).model_dump(mode="json", include=set(Workload.FIELDS)) if app.workload else NO_WORKLOAD
    return {
        **workload,
        "id": app.id,
        "project_id": app.project_id,
        "name": app.name,
        "slug": app.slug,
        "source_type": app.source_type,
        "image_url": app.image_url,
        "repo_url": mask_url_credentials(app.repo_url),
        "repo_branch": app.repo_branch,
        "build_command": app.build_command,
        "replicas": app.replicas,
        "port": app.port,
        "env": masked_env(app.env or {}),
        "status": app.status,
        "progress_deadline_seconds": app.progress_deadline_seconds,
        "last_deploy_at": iso(app.last_deploy_at),
        "created_at": iso(app.created_at),
        "running_image": app.running_image,
        "status_reason": app.status_reason,
    }


def app_public(app: App | Row[Any]) -> AppPublic:
    """From an App, or a row of the apps table (the same names)."""
    return AppPublic.model_validate(app_body(app))


def deployment_public(dep: Deployment, progress: list[dict] | None = None) -> DeploymentPublic:
    return DeploymentPublic(
        id=dep.id,
        app_id=dep.app_id,
        number=dep.number,
        operation=dep.operation,
        status=dep.status,
        image=dep.image,
        image_ref=dep.image_ref,
        image_digest=dep.image_digest,
        port=dep.port,
        replicas=dep.replicas,
        env_keys=sorted(dep.env or {}),
        rollback_of=dep.rollback_of,
        retry_of=dep.retry_of,
        build_id=dep.build_id,
        source_commit=dep.source_commit,
        reason=dep.reason,
        workflow_id=dep.workflow_id,
        created_by=dep.created_by,
        created_at=iso(dep.created_at),
        started_at=iso(dep.started_at),
        finished_at=iso(dep.finished_at),
        progress=[DeploymentStep(**step) for step in progress] if progress is not None else None,
        **workload_fields(dep.workload),
    )
