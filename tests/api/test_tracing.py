"""One trace id spans the API request, the workflows, their activities and the
Kubernetes calls; Prometheus metrics are served.

The API and a worker run in this process (on a task queue of their own, so the
platform's worker does not take the work) with an in-memory span exporter; the
Temporal server, Kubernetes and the registry are the real ones."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.main import create_app
from conveyor.clients import telemetry
from conveyor.clients.temporal_client import connect
from worker import build_worker


async def test_one_trace_spans_api_workflow_activities_and_kubernetes(platform, settings, admin_token):
    exporter = InMemorySpanExporter()
    local = settings.model_copy(update={"temporal_task_queue": f"trace-{uuid.uuid4().hex}"})
    tracer = telemetry.tracer_provider("conveyor-test", local, exporter)
    client = await connect(local, [telemetry.temporal_interceptor(tracer)])
    headers = {"Authorization": f"Bearer {admin_token}"}

    def create_and_wait() -> tuple[str, dict]:
        with TestClient(create_app(local, tracer)) as http:
            response = http.post(
                "/api/v1/apps",
                headers=headers,
                json={"name": f"traced-{uuid.uuid4().hex[:6]}", "image_url": f"{settings.registry}/demo/web:v1"},
            )
            assert response.status_code == 201, response.text
            trace_id = response.headers["X-Trace-Id"]
            app_id = response.json()["id"]
            first = wait_finished(http, app_id)
            # A second operation on the app's running lane joins its own request's trace.
            again = http.post(f"/api/v1/apps/{app_id}/deploy", headers=headers)
            assert again.status_code == 202, again.text
            second = wait_finished(http, app_id, again.json()["id"])
            return trace_id, first, again.headers["X-Trace-Id"], second

    def wait_finished(http, app_id: str, dep_id: str | None = None) -> dict:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            deps = http.get(f"/api/v1/apps/{app_id}/deployments", headers=headers).json()
            dep = next(d for d in deps if dep_id in (None, d["id"]))
            if dep["status"] in ("active", "failed"):
                return dep
            time.sleep(0.5)
        raise AssertionError("the deployment did not finish")

    with ThreadPoolExecutor(max_workers=local.max_concurrent_activities) as executor:
        async with build_worker(client, local, executor):
            trace_id, dep, second_trace_id, second = await asyncio.to_thread(create_and_wait)
    assert dep["status"] == "active" and second["status"] == "active"
    assert second_trace_id != trace_id
    second_spans = {s.name for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == second_trace_id}
    assert {"RunWorkflow:DeployWorkflow", "RunActivity:apply_manifests", "RunActivity:wait_for_rollout"} <= second_spans, second_spans

    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    names = {s.name for s in spans}
    assert any(n.startswith("POST /api/v1/apps") for n in names), names
    # The app had no operation in flight: the release started at once, with no lane.
    assert "StartWorkflow:DeployWorkflow" in names, names
    assert "RunWorkflow:DeployWorkflow" in names, names
    # begin_deployment (a local activity) resolves the image's digest too.
    for activity in ("begin_deployment", "apply_manifests", "wait_for_rollout", "finish_deployment"):
        assert f"RunActivity:{activity}" in names, (activity, names)
    # One span per run: the client's interceptor is the worker's, not given twice.
    assert [s.name for s in spans].count("RunActivity:apply_manifests") == 1, sorted(s.name for s in spans)
    kube_calls = [s for s in spans if s.attributes.get("server.port") == settings.kube_apiserver_port or "PATCH" in s.name]
    assert kube_calls, "the Kubernetes API calls of apply_manifests should be spans of the same trace"


def test_prometheus_metrics_report_deployments_rollouts_and_latency(api, settings, deployed_app):
    text = httpx.get(f"{settings.api_url}/metrics").text
    assert 'conveyor_deployments{operation="deploy",outcome="succeeded"}' in text
    assert 'conveyor_rollout_duration_seconds_count{outcome="succeeded"}' in text
    assert 'conveyor_api_request_duration_seconds_count{method="GET",route="/api/v1/apps/{app_id}/deployments/{deployment_id}"' in text
