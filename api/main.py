"""The Conveyor API (FastAPI), mounted under /api/v1."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from api import metrics
from api.deps import TemporalConnector
from api.routes import apps, audit, builds, codec, deployments, observe
from conveyor.codec import EncryptionCodec, load_keyring
from conveyor.db.records import ensure_default_project
from conveyor.db.session import migrate, session_scope
from conveyor import telemetry
from conveyor.settings import Settings, get_settings


API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, tracer: TracerProvider | None = None) -> FastAPI:
    settings = settings or get_settings()
    tracer = tracer or telemetry.tracer_provider("conveyor-api", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(settings.effective_database_url)
        with session_scope(settings.effective_database_url) as session:
            ensure_default_project(session, settings)
        app.state.codec = EncryptionCodec(await asyncio.to_thread(load_keyring, settings))
        yield

    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        description="Deploy containers to Kubernetes; every change is a durable Temporal workflow.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.temporal = TemporalConnector(settings, [telemetry.temporal_interceptor(tracer)])
    metrics.install(app, settings, API_PREFIX)

    @app.middleware("http")
    async def trace_id_header(request: Request, call_next):
        response = await call_next(request)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            response.headers["X-Trace-Id"] = format(context.trace_id, "032x")
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem; never echo the input (it may hold secrets).
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"].removeprefix("Value error, "), "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict:
        return {"status": "ok"}

    for router in (apps.router, deployments.router, audit.router, observe.router, builds.router, codec.router):
        app.include_router(router, prefix=API_PREFIX)
    codec.install_cors(app, settings, API_PREFIX + codec.PREFIX)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer, excluded_urls="healthz,metrics")
    return app

