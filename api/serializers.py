"""Database rows to response bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Select, Text, cast, select

from api.schemas import AppPublic, DeploymentPublic, DeploymentStep, masked_env
from conveyor.clients.db.models import ENV, App, Deployment
from conveyor.clients.db.sealed import open_sealed
from conveyor.domain.ids import iso
from conveyor.domain.redact import mask_url_credentials
from conveyor.domain.workload import Workload


def workload_fields(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The health checks and resources a row holds, as the response fields."""
    workload = Workload.of(stored)
    return {name: getattr(workload, name) for name in Workload.FIELDS}


# An app that sets none of the workload fields (most apps): every one null.
NO_WORKLOAD: dict[str, Any] = dict.fromkeys(Workload.FIELDS)


# What an app's body is made of: these columns of the apps table, in this
# order. A list reads them as rows (`app_rows`), with env and workload as the
# JSON text they are stored as: a row's attributes by name, and the JSON
# columns' decoders run for every row (most apps' `{}` and NULL), cost more
# than everything else a list of 10,000 apps does.
APP_COLUMNS = (
    "id", "project_id", "name", "slug", "source_type", "image_url", "repo_url", "repo_branch", "build_command", "replicas", "port",
    "env", "status", "progress_deadline_seconds", "last_deploy_at", "created_at", "running_image", "status_reason", "workload",
)  # fmt: skip
_STORED_AS_TEXT = {"env", "workload"}


def app_rows() -> Select[Any]:
    """SELECT of an app's body's columns (APP_COLUMNS), for `app_body`."""
    columns = App.__table__.c
    return select(*(cast(columns[name], Text) if name in _STORED_AS_TEXT else columns[name] for name in APP_COLUMNS))


def _stored(value: Any, purpose: str | None = None) -> Any:
    """A JSON column's value as the ORM reads it, from its stored text (a
    row of `app_rows`) or already read (an App); `purpose`: sealed at rest."""
    if not isinstance(value, str):
        return value
    if value == "{}":
        return {}
    decoded = orjson.loads(value)
    return open_sealed(decoded, purpose) if purpose else decoded


def app_body(app: App | Sequence[Any]) -> dict[str, Any]:
    """An app as the API shows it, as JSON-ready values: from an App, or a
    row of `app_rows`. `AppPublic` is its schema; a long list is encoded
    from these directly, without a model per app."""
    values = [getattr(app, name) for name in APP_COLUMNS] if isinstance(app, App) else app
    (
        id_, project_id, name, slug, source_type, image_url, repo_url, repo_branch, build_command, replicas, port,
        env, status, progress_deadline_seconds, last_deploy_at, created_at, running_image, status_reason, workload,
    ) = values  # fmt: skip
    env, workload = _stored(env, ENV), _stored(workload)
    return {
        **(Workload.of(workload).model_dump(mode="json", include=set(Workload.FIELDS)) if workload else NO_WORKLOAD),
        "id": id_,
        "project_id": project_id,
        "name": name,
        "slug": slug,
        "source_type": source_type,
        "image_url": image_url,
        "repo_url": mask_url_credentials(repo_url),
        "repo_branch": repo_branch,
        "build_command": build_command,
        "replicas": replicas,
        "port": port,
        "env": masked_env(env) if env else {},
        "status": status,
        "progress_deadline_seconds": progress_deadline_seconds,
        "last_deploy_at": iso(last_deploy_at),
        "created_at": iso(created_at),
        "running_image": running_image,
        "status_reason": status_reason,
    }


def app_public(app: App | Sequence[Any]) -> AppPublic:
    """From an App, or a row of `app_rows`."""
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
