"""The Conveyor API (FastAPI), mounted under /api/v1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.access_log import AccessLogMiddleware, install_logging, span_without_query
from api.admission import WriteTurns, WriteTurnsMiddleware
from api.deps import TemporalConnector
from api.idempotency import KeyPruner
from api.limits import BodyLimitMiddleware
from api.outbox import HandoffReconciler
from api.routes import apps, audit, builds, codec, deployments, domains, jobs, observe, registry_credentials
from api.streams import ProgressHub, StreamSlots
from conveyor.clients import telemetry
from conveyor.clients.db import sealed
from conveyor.clients.db.queries import ensure_default_project, handoff_backlog
from conveyor.clients.db.session import SchemaOutdated, check_schema, configure_pool, session_scope
from conveyor.clients.payload_codec import EncryptionCodec, load_keyring
from conveyor.domain.commands import CronEntry
from conveyor.domain.workload import PROCESS_NAME, Autoscaling, Probe, Process, Resources
from conveyor.heap import freeze_startup_heap
from conveyor.settings import Settings, get_settings

API_PREFIX = "/api/v1"
# Every router mounted under API_PREFIX (the project-isolation test walks them).
ROUTERS = (
    apps.router, deployments.router, audit.router, observe.router, builds.router, domains.router, codec.router, jobs.router,
    registry_credentials.router,
)


# Fields whose parts are named by the schema, never by the caller: a 422
# names the part (`resources.cpu`, `healthcheck.type`).
NAMED_PARTS = {name: set(Probe.model_fields) for name in ("healthcheck", "liveness", "startup")} | {
    "resources": set(Resources.model_fields),
    "autoscaling": set(Autoscaling.model_fields),
}
# Lists of such parts: a 422 names the entry and its part (`cron.0.schedule`).
NAMED_ITEM_PARTS = {"cron": set(CronEntry.model_fields)}


def public_loc(loc: tuple) -> list:
    """Where a validation error is, down to the field, or to the part of a
    field whose parts the schema names; never deeper, where pydantic puts a
    key the caller chose (an env key) or a union branch. A process is named
    once its name is a valid one (`processes.worker.resources.cpu`), an item
    of a list by its position (`cron.0.schedule`)."""
    if len(loc) > 2 and loc[1] == "processes" and loc[3:4] != ("[key]",) and PROCESS_NAME.fullmatch(str(loc[2])):
        part = loc[3:] if loc[3:4] and loc[3] in Process.model_fields else ()
        return [*loc[:3], *_named(part)]
    if len(loc) > 2 and loc[1] in NAMED_ITEM_PARTS and isinstance(loc[2], int):
        return list(loc[:4]) if len(loc) > 3 and loc[3] in NAMED_ITEM_PARTS[loc[1]] else list(loc[:3])
    return [loc[0], *_named(loc[1:])]


def _named(loc: tuple) -> list:
    """The field, and its part when the schema names its parts."""
    if len(loc) > 1 and loc[0] in NAMED_PARTS and loc[1] in NAMED_PARTS[loc[0]]:
        return list(loc[:2])
    return list(loc[:1])


# How long a thread may hold the GIL while another waits for it (Python's
# default is 5 ms). A request's thread gives the GIL up at every database
# read and waits to get it back; behind a thread that computes (a long list
# being encoded) each wait was up to 5 ms, so a short request that reads a
# few times took 100 ms under load. Threads take turns every 1 ms instead.
GIL_SWITCH_SECONDS = 0.001


def create_app(settings: Settings | None = None, tracer: TracerProvider | None = None) -> FastAPI:
    settings = settings or get_settings()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    tracer = tracer or telemetry.tracer_provider("conveyor-api", settings)

    def prepare_database() -> None:
        configure_pool(settings.db_pool_size, settings.db_max_overflow)
        # Migrations are one step of their own (`conveyor db upgrade`), never a race between replicas.
        try:
            check_schema(settings.effective_database_url)
        except SchemaOutdated as exc:
            logging.getLogger("conveyor").error("%s", exc)
            raise
        with session_scope(settings.effective_database_url) as session:
            ensure_default_project(session, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        await to_thread.run_sync(prepare_database)
        app.state.codec = EncryptionCodec(await to_thread.run_sync(load_keyring, settings))
        # The same ring seals env values and registry passwords at rest.
        sealed.use_keyring(app.state.codec.keyring)
        background = [
            asyncio.create_task(app.state.handoff.run_forever(), name="handoff-reconciler"),
            asyncio.create_task(KeyPruner(settings).run_forever(), name="idempotency-key-pruner"),
        ]
        freeze_startup_heap()
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        description="Deploy containers to Kubernetes; every change is a durable Temporal workflow.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.temporal = TemporalConnector(settings, [telemetry.temporal_interceptor(tracer)])
    app.state.handoff = HandoffReconciler(settings, app.state.temporal)
    app.state.streams = StreamSlots(settings.max_streams, settings.max_streams_per_token)
    app.state.progress = ProgressHub(settings)
    metrics.install(app, settings, API_PREFIX)

    app.add_middleware(TraceIdMiddleware)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem; never echo the input (it may hold secrets):
        # no `input`, and no location below the field, where pydantic puts the
        # offending dict key (an env key) or union branch.
        errors = [
            {"loc": public_loc(err["loc"]), "msg": err["msg"].removeprefix("Value error, "), "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["health"], summary="Liveness: answers from the event loop alone")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the database answers, Temporal is reachable, and how many operations wait for hand-off",
        responses={503: {"description": "the database or Temporal is unreachable"}},
    )
    async def readyz() -> JSONResponse:
        checks: dict = {}
        try:
            checks["handoff_backlog"] = await to_thread.run_sync(handoff_backlog, settings)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            await app.state.temporal.client()
            checks["temporal"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["temporal"] = f"unreachable: {type(exc).__name__}"
        ready = checks["database"] == "ok" and checks["temporal"] == "ok"
        return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503)

    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    codec.install_cors(app, settings, API_PREFIX + codec.PREFIX)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer,
        excluded_urls="healthz,metrics",
        server_request_hook=span_without_query,
        # One span per request, not one more per ASGI message.
        exclude_spans=["receive", "send"],
    )
    install_logging()
    app.add_middleware(AccessLogMiddleware)
    # Outermost: liveness is answered before any other layer (tracing,
    # metrics, access log), so it stays fast while the API is busy.
    app.state.write_turns = WriteTurns(settings.api_concurrent_writes)
    app.add_middleware(WriteTurnsMiddleware, turns=app.state.write_turns)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(LivenessMiddleware)
    return app


class TraceIdMiddleware:
    """`X-Trace-Id` on every answer: the request's trace, to look up in a tracing backend."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                context = trace.get_current_span().get_span_context()
                if context.is_valid:
                    message = {**message, "headers": [*message.get("headers", []), (b"x-trace-id", format(context.trace_id, "032x").encode())]}
            await send(message)

        await self.app(scope, receive, with_trace_id)


class LivenessMiddleware:
    """`GET /healthz` answered by the event loop alone, ahead of every other middleware."""

    BODY = b'{"status":"ok"}'

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.BODY)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self.BODY})
            return
        await self.app(scope, receive, send)

