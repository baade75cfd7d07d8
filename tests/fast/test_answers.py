"""What answers show and what they keep to themselves: secret env values and
repository credentials masked in every answer (the database keeps them for the
worker), the OpenAPI document, and request spans without query strings."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.main import create_app
from conveyor.clients import telemetry
from conveyor.clients.db.models import App
from conveyor.clients.db.session import read_scope
from tests.support.in_process import BASE_URL, finish


def stored(settings, app_id: str) -> App:
    with read_scope(settings.effective_database_url) as session:
        return session.get(App, app_id)


def test_secret_env_values_are_masked_in_responses_and_absent_from_audit(local, project):
    secret, other = f"s3cr3t-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    app = project.admin.create_app(env={"GREETING": "hello", "DB_PASSWORD": other})
    assert app["env"] == {"DB_PASSWORD": "********", "GREETING": "hello"}
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    updated = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"API_TOKEN": secret}}).json()
    assert updated["env"]["API_TOKEN"] == "********" and updated["env"]["GREETING"] == "hello"
    for path in (f"/apps/{app['id']}", "/apps", f"/apps/{app['id']}/audit", f"/apps/{app['id']}/deployments"):
        text = project.viewer.call("GET", path, 200).text
        assert secret not in text and other not in text, path
    assert stored(local.settings, app["id"]).env["API_TOKEN"] == secret


def test_repo_url_credentials_are_masked_in_every_answer(local, project):
    secret = f"pw-{uuid.uuid4().hex}"
    url, shown = f"https://alice:{secret}@git.test/team/app.git", "https://alice:***@git.test/team/app.git"
    created = project.admin.call("POST", "/apps", 201, json={"name": "git-creds", "source_type": "git", "repo_url": url}).json()
    assert created["repo_url"] == shown
    patched = project.admin.call("PATCH", f"/apps/{created['id']}", json={"repo_branch": "develop"})
    assert patched.status_code in (200, 202) and patched.json()["repo_url"] == shown
    token_only = project.admin.call("POST", "/apps", 201, json={"name": "git-token", "source_type": "git", "repo_url": f"https://{secret}@git.test/x.git"}).json()
    assert token_only["repo_url"] == "https://***@git.test/x.git"
    for path in ("/apps", f"/apps/{created['id']}", f"/apps/{created['id']}/audit", f"/apps/{created['id']}/deployments"):
        assert secret not in project.viewer.call("GET", path, 200).text, path
    # The worker fetches with the URL as given.
    assert stored(local.settings, created["id"]).repo_url == url


def test_openapi_documents_every_field(local):
    spec = local.http.get("/openapi.json").json()
    create = spec["components"]["schemas"]["AppCreate"]["properties"]
    for field in ("name", "source_type", "image_url", "repo_url", "repo_branch", "build_command", "port", "replicas", "env", "template_id"):
        assert create[field].get("description"), field
    assert "/api/v1/apps/{app_id}/deployments/{deployment_id}/revert" in spec["paths"]
    assert local.http.get("/docs").status_code == 200


def test_every_answer_carries_its_trace_id(project):
    for response in (project.viewer.call("GET", "/apps", 200), project.viewer.call("GET", "/apps/app_nope", 404)):
        assert len(response.headers["X-Trace-Id"]) == 32 and int(response.headers["X-Trace-Id"], 16)


def test_request_spans_hold_no_query_strings(local, project):
    exporter = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("conveyor-test", local.settings, exporter)
    secret, token = f"SECRET-{uuid.uuid4().hex}", project.tokens["viewer"]
    with TestClient(create_app(local.settings, tracer), base_url=BASE_URL) as http:
        response = http.get("/api/v1/apps", params={"token": secret}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    assert any(s.name.startswith("GET /api/v1/apps") for s in spans), [s.name for s in spans]
    recorded = str([(s.name, dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]) for s in spans])
    assert secret not in recorded and token not in recorded
