"""Fixtures for end-to-end tests through HTTP: API → Temporal → worker → Kubernetes."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from conveyor.clients.db import tokens
from conveyor.clients.db.models import Project
from conveyor.clients.db.queries import create_project
from conveyor.clients.db.session import session_scope
from conveyor.domain import vocabulary
from tests.helpers import eventually

TERMINAL = {str(status) for status in vocabulary.TERMINAL}
# The seeded demo app in this session's registry (CONVEYOR_REGISTRY may move it off 5000).
DEMO_IMAGE = f"{os.environ.get('CONVEYOR_REGISTRY', '127.0.0.1:5000')}/demo/web"


class Api:
    """A thin client that fails loudly with the response body on surprises."""

    def __init__(self, base_url: str, token: str, registry: str = "127.0.0.1:5000"):
        self.registry = registry
        self.http = httpx.Client(base_url=f"{base_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def call(self, method: str, path: str, expect: int | None = None, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def create_app(self, **fields) -> dict:
        body = {"name": f"app-{uuid.uuid4().hex[:8]}", "image_url": f"{DEMO_IMAGE}:v1", "port": 8080, **fields}
        return self.call("POST", "/apps", 201, json=body).json()

    def deployments(self, app_id: str) -> list[dict]:
        return self.call("GET", f"/apps/{app_id}/deployments", 200).json()

    def deployment(self, app_id: str, dep_id: str) -> dict:
        return self.call("GET", f"/apps/{app_id}/deployments/{dep_id}", 200).json()

    def wait_finished(self, app_id: str, dep_id: str, timeout: float = 90) -> dict:
        return eventually(
            lambda: (d := self.deployment(app_id, dep_id))["status"] in TERMINAL and d,
            timeout,
            what=f"deployment {dep_id} to finish",
        )

    def wait_active(self, app_id: str, dep_id: str, timeout: float = 90) -> dict:
        dep = self.wait_finished(app_id, dep_id, timeout)
        assert dep["status"] == "active", dep
        return dep

    def status(self, app_id: str) -> dict:
        return self.call("GET", f"/apps/{app_id}/status", 200).json()

    def wait_ready(self, app_id: str, replicas: int, timeout: float = 60) -> dict:
        def check():
            status = self.status(app_id)
            pods = status["pods"]
            ok = (
                status["desired_replicas"] == replicas
                and status["ready_replicas"] == replicas
                and len(pods) == replicas
                and all(p["ready"] for p in pods)
            )
            return ok and status

        return eventually(check, timeout, what=f"{replicas} ready replicas of {app_id}")


@pytest.fixture(scope="session")
def admin_token(platform, settings) -> str:
    return settings.admin_token_file.read_text().strip()


@pytest.fixture(scope="session")
def api(platform, settings, admin_token) -> Api:
    return Api(settings.api_url, admin_token, settings.registry)


@pytest.fixture(scope="session")
def make_token(platform, settings):
    def make(role: str, project_id: str = "proj_default", name: str | None = None) -> tuple[str, str]:
        name = name or f"{role}-{uuid.uuid4().hex[:6]}"
        with session_scope(settings.effective_database_url) as session:
            if session.get(Project, project_id) is None:
                create_project(session, settings, project_id.removeprefix("proj_"))
            return tokens.create_token(session, project_id, role, name), name

    return make


@pytest.fixture
def deployed_app(api: Api):
    """A new app with 2 replicas whose first deployment is active."""
    app = api.create_app(replicas=2, env={"GREETING": "hello"})
    first = api.deployments(app["id"])[-1]
    api.wait_active(app["id"], first["id"])
    return app, api.deployment(app["id"], first["id"])
