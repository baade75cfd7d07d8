"""Prometheus metrics on /metrics: API latency, deployments by outcome and
rollout durations (the latter two read from the database at scrape time, so
every API replica reports the same figures)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.clients.db.models import Deployment
from conveyor.clients.db.session import read_scope
from conveyor.settings import Settings

OUTCOMES = {"active": "succeeded", "superseded": "succeeded", "failed": "failed", "cancelled": "cancelled"}
ROLLOUT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class DeploymentCollector:
    def __init__(self, settings: Settings):
        self.url = settings.effective_database_url

    def collect(self):
        by_outcome = GaugeMetricFamily(
            "conveyor_deployments", "Deployments on record by outcome (in_flight: not finished yet)", labels=["outcome", "operation"]
        )
        durations = HistogramMetricFamily(
            "conveyor_rollout_duration_seconds", "Start to finish of finished deployments", labels=["outcome"]
        )
        with read_scope(self.url) as session:
            counts: dict[tuple[str, str], int] = {}
            for status, operation, count in session.execute(
                select(Deployment.status, Deployment.operation, func.count()).group_by(Deployment.status, Deployment.operation)
            ):
                key = (OUTCOMES.get(status, "in_flight"), operation)
                counts[key] = counts.get(key, 0) + count
            for (outcome, operation), count in sorted(counts.items()):
                by_outcome.add_metric([outcome, operation], count)
            finished: dict[str, list[float]] = {}
            for status, started, ended in session.execute(
                select(Deployment.status, Deployment.started_at, Deployment.finished_at).where(
                    Deployment.started_at.is_not(None), Deployment.finished_at.is_not(None)
                )
            ):
                finished.setdefault(OUTCOMES.get(status, status), []).append(max(0.0, (ended - started).total_seconds()))
        for outcome, values in sorted(finished.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in ROLLOUT_BUCKETS] + [("+Inf", len(values))]
            durations.add_metric([outcome], buckets, sum(values))
        yield by_outcome
        yield durations


class StreamCollector:
    """This process's long-lived responses, how often it polls for them, and its writes' turns."""

    def __init__(self, app: FastAPI):
        self.state = app.state

    def collect(self):
        streams = self.state.streams
        yield GaugeMetricFamily("conveyor_open_streams", "Progress streams and log follows held open", value=streams.open)
        yield GaugeMetricFamily("conveyor_max_streams", "Streams this process holds before it answers 503", value=streams.limit)
        turns = self.state.write_turns
        yield GaugeMetricFamily("conveyor_api_writes_running", "Writes of this process past their turn (api/admission.py)", value=turns.running)
        yield GaugeMetricFamily("conveyor_api_writes_waiting", "Writes of this process waiting for their turn", value=turns.waiting)
        yield CounterMetricFamily(
            "conveyor_progress_polls", "Polls of a followed deployment (one per interval, however many follow it)", value=self.state.progress.polls
        )


class LatencyMiddleware:
    """Times each HTTP request by its route template (a plain ASGI layer: no
    extra task or stream per request, as `@app.middleware` would add)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, prefix: str):
        self.app = app
        self.histogram = histogram
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            # Routes of included routers report their path without the router prefix.
            if route is not None and scope["path"].startswith(self.prefix) and not template.startswith(self.prefix):
                template = self.prefix + template
            self.histogram.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)


def install(app: FastAPI, settings: Settings, prefix: str) -> None:
    registry = CollectorRegistry()
    registry.register(StreamCollector(app))
    latency = Histogram(
        "conveyor_api_request_duration_seconds",
        "API request latency",
        ["method", "route", "status"],
        registry=registry,
    )
    registry.register(DeploymentCollector(settings))

    app.add_middleware(LatencyMiddleware, histogram=latency, prefix=prefix)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=True)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
