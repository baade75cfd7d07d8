"""Fixtures for end-to-end tests through HTTP: API → Temporal → worker → Kubernetes."""

from __future__ import annotations

import uuid

import pytest

from conveyor.clients.db import tokens
from conveyor.clients.db.models import Project
from conveyor.clients.db.queries import create_project
from conveyor.clients.db.session import session_scope
from tests.support.api_client import Api


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
