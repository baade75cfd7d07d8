"""Record intent and hand it to the app's lane workflow.

The API never touches the cluster: it writes the deployment row, starts (or
signals) the lane, and commits only when Temporal has accepted the operation,
so a rejected request leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Awaitable, Callable

from fastapi import Depends, Header, HTTPException, Request, status
from opentelemetry import propagate
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from api.deps import Caller, SessionDep, SettingsDep, TemporalDep
from api.serializers import deployment_public
from conveyor.db.models import App, Deployment, IdempotencyRecord
from conveyor.db.records import in_flight
from conveyor.ids import new_id, utcnow
from conveyor.payloads import LaneInput, Operation
from conveyor.settings import Settings
from workflows.lane import AppLaneWorkflow


def lane_id(app_id: str) -> str:
    return f"app-{app_id}"


def new_deployment(
    session: Session,
    app: App,
    caller: Caller,
    operation: str,
    *,
    image: str | None,
    env: dict[str, str],
    port: int,
    image_ref: str | None = None,
    image_digest: str | None = None,
    rollback_of: str | None = None,
    retry_of: str | None = None,
    restarted_at: str | None = None,
    build_id: str | None = None,
) -> Deployment:
    number = (session.scalar(select(func.max(Deployment.number)).where(Deployment.app_id == app.id)) or 0) + 1
    dep_id = new_id("dep")
    dep = Deployment(
        id=dep_id,
        app_id=app.id,
        number=number,
        operation=operation,
        # Earlier requests still running or waiting: this one waits its turn.
        status="queued" if in_flight(session, app.id) else "pending",
        image=image,
        image_ref=image_ref,
        image_digest=image_digest,
        env=dict(env),
        port=port,
        rollback_of=rollback_of,
        retry_of=retry_of,
        restarted_at=restarted_at,
        build_id=build_id,
        workflow_id=f"{operation}-{dep_id}",
        created_by=caller.name,
        created_at=utcnow(),
    )
    session.add(dep)
    session.flush()
    return dep


def release_summary(app: App, dep: Deployment) -> str:
    return f"{dep.operation} {app.name} → {dep.image_ref or dep.image} ×{app.replicas}"


def deployment_operation(app: App, dep: Deployment, caller: Caller) -> Operation:
    return Operation(
        kind=dep.operation,
        app_id=app.id,
        project_id=app.project_id,
        workflow_id=dep.workflow_id,
        deployment_id=dep.id,
        summary=release_summary(app, dep),
        user=caller.name,
    )


async def enqueue(client: Client, settings: Settings, app: App, op: Operation) -> None:
    """Signal-with-start the app's lane: it runs operations one at a time, in order."""
    propagate.inject(op.trace_context)
    try:
        await client.start_workflow(
            AppLaneWorkflow.run,
            LaneInput(app_id=app.id, project_id=app.project_id),
            id=lane_id(app.id),
            task_queue=settings.temporal_task_queue,
            start_signal="enqueue",
            start_signal_args=[op],
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword("AppId"), app.id),
                    SearchAttributePair(SearchAttributeKey.for_keyword("ProjectId"), app.project_id),
                    SearchAttributePair(SearchAttributeKey.for_keyword("Operation"), "lane"),
                ]
            ),
            static_summary=f"operations of app {app.name} ({app.id}), one at a time",
        )
    except Exception as exc:  # noqa: BLE001 - any failure here means nothing was started
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"could not hand the operation to Temporal, nothing was changed: {exc}"
        ) from exc


async def idempotent(
    request: Request,
    session: Session,
    caller: Caller,
    key: str | None,
    handler: Callable[[], Awaitable[tuple[int, Any]]],
    body_digest: str | None = None,
) -> JSONResponse:
    """Run `handler` once per Idempotency-Key; a repeat returns the first answer.

    `body_digest` stands for the body when it was consumed already (uploads)."""
    if key is not None and not (1 <= len(key) <= 255):
        raise HTTPException(422, [{"loc": ["header", "Idempotency-Key"], "msg": "must be 1 to 255 characters", "type": "value_error"}])
    body = body_digest.encode() if body_digest is not None else await request.body()
    fingerprint = hashlib.sha256(b"\n".join([request.method.encode(), request.url.path.encode(), body])).hexdigest()
    if key is not None:
        found = session.scalars(
            select(IdempotencyRecord).where(IdempotencyRecord.project_id == caller.project_id, IdempotencyRecord.key == key)
        ).first()
        if found is not None:
            if found.request_fingerprint != fingerprint:
                raise HTTPException(
                    422,
                    [{"loc": ["header", "Idempotency-Key"], "msg": "this key was used for a different request", "type": "value_error"}],
                )
            return JSONResponse(found.body, status_code=found.status_code, headers={"Idempotent-Replayed": "true"})
    try:
        record = None
        if key is not None:
            # Claim the key before doing anything: a concurrent twin blocks or fails here.
            record = IdempotencyRecord(
                project_id=caller.project_id, key=key, request_fingerprint=fingerprint, status_code=0, body={}, created_at=utcnow()
            )
            session.add(record)
            session.flush()
        code, body = await handler()
        if record is not None:
            record.status_code, record.body = code, body
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(409, "a concurrent request with the same Idempotency-Key or name won the race; retry") from exc
    except BaseException:
        session.rollback()
        raise
    return JSONResponse(json.loads(json.dumps(body)), status_code=code)


IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="Repeat-safe key: a repeat returns the first answer")
]


@dataclass
class Mutation:
    """What every mutating route needs: the request, a session, Temporal and the key."""

    request: Request
    session: Session
    settings: Settings
    temporal: Client
    idempotency_key: str | None

    async def once(
        self, caller: Caller, handler: Callable[[], Awaitable[tuple[int, Any]]], body_digest: str | None = None
    ) -> JSONResponse:
        return await idempotent(self.request, self.session, caller, self.idempotency_key, handler, body_digest)

    async def start(self, app: App, op: Operation) -> None:
        await enqueue(self.temporal, self.settings, app, op)

    async def release(self, app: App, caller: Caller, operation: str, **snapshot: Any) -> tuple[int, dict]:
        """Record a new deployment and queue it on the app's lane: (202, its record)."""
        dep = new_deployment(self.session, app, caller, operation, **snapshot)
        await self.start(app, deployment_operation(app, dep, caller))
        return 202, deployment_public(dep).model_dump()


def get_mutation(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Mutation:
    return Mutation(request, session, settings, temporal, idempotency_key)


MutationDep = Annotated[Mutation, Depends(get_mutation)]
