"""The real API app (`api.main.create_app`) in this process, with no platform.

Its database is a SQLite file in a temporary directory, migrated as
`conveyor db upgrade` does. Temporal, the registry and Kubernetes are
unreachable: their addresses are closed ports on loopback and a kubeconfig
that does not exist. So a mutation still answers as it does on the platform
(its operation waits in the hand-off outbox, as when Temporal is away), and a
test can never reach the shared platform by mistake.

What the worker would write (a deployment that became active or failed) is
written by the worker's own activity, `finish_deployment`, run here without
Temporal.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from api.main import create_app
from conveyor.clients.db import tokens
from conveyor.clients.db.models import ApiToken, App, Base, Deployment
from conveyor.clients.db.queries import create_project, delete_workflow_id
from conveyor.clients.db.session import migrate, read_scope, session_scope
from conveyor.domain.ids import utcnow
from conveyor.domain.payloads import DeleteFailedInput, FinishDeploymentInput, RemoveAppInput
from conveyor.domain.vocabulary import DeploymentStatus
from conveyor.settings import Settings
from tests.support.api_client import DEMO_IMAGE, Api

# The host the app sees in TestClient's requests (sign-in checks the Origin against it).
BASE_URL = "http://testserver"
# Small enough that a test sends a body over it in milliseconds.
UPLOAD_MAX_BYTES = 256 * 1024


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(home: Path) -> Settings:
    """Settings of an API that has a database and nothing else. Explicit values
    win over CONVEYOR_* variables, so a run against PostgreSQL (CI) or another
    platform changes nothing here."""
    key = base64.b64encode(os.urandom(32)).decode()
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'conveyor.sqlite'}",
        temporal_address=f"127.0.0.1:{closed_port()}",
        registry=f"127.0.0.1:{closed_port()}",
        kubeconfig=home / "no-cluster" / "kubeconfig",
        payload_keys=SecretStr(f"fast:{key}"),
        # The tests' images name the platform's registry (DEMO_IMAGE), a loopback address.
        outbound_allow=DEMO_IMAGE.rsplit("/", 2)[0],
        otlp_endpoint=None,
        upload_max_bytes=UPLOAD_MAX_BYTES,
        # Only the hand-off right after a request is tried (and fails at once);
        # the background reconciler does not run during a test.
        handoff_interval_seconds=3600,
    )


@dataclass
class Local:
    """The app, its settings, and a client without a token."""

    settings: Settings
    app: FastAPI
    http: TestClient


@contextmanager
def running_app(home: Path) -> Iterator[Local]:
    """Migrate a new database under `home`, then run the app's lifespan (the
    schema check, the default project, the payload keys) while in the block."""
    settings = settings_for(home)
    migrate(settings.effective_database_url)
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as http:
        yield Local(settings, app, http)


@dataclass
class Project:
    """A project of its own for one test, with a token of each role."""

    id: str
    admin: Api
    deployer: Api
    viewer: Api
    names: dict[str, str]  # role -> token name (what the audit log shows as `user`)
    tokens: dict[str, str]  # role -> token


def new_project(settings: Settings, app: FastAPI) -> Project:
    name = f"t{uuid.uuid4().hex[:10]}"
    made: dict[str, str] = {}
    names = {role: f"{role}-{name}" for role in tokens.ROLES}
    with session_scope(settings.effective_database_url) as session:
        project = create_project(session, settings, name)
        for role in tokens.ROLES:
            made[role] = tokens.create_token(session, project.id, role, names[role])
    clients = {role: Api(BASE_URL, token, settings.registry, app=app) for role, token in made.items()}
    return Project(project.id, clients["admin"], clients["deployer"], clients["viewer"], names, made)


def revoke(settings: Settings, token: str) -> None:
    with session_scope(settings.effective_database_url) as session:
        found = session.scalars(select(ApiToken).where(ApiToken.token_hash == tokens.hash_token(token))).one()
        found.revoked_at = utcnow()


def rows(settings: Settings) -> dict[str, int]:
    """How many rows each table holds: what "nothing was written" is checked against."""
    with read_scope(settings.effective_database_url) as session:
        return {table.name: session.scalar(select(func.count()).select_from(table)) or 0 for table in Base.metadata.sorted_tables}


def _activity(workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


def finish(settings: Settings, deployment_id: str, status: DeploymentStatus = DeploymentStatus.ACTIVE, reason: str | None = None) -> dict:
    """End a deployment as its workflow would (the worker's `finish_deployment`
    activity): active with its image pinned by a digest, or failed/cancelled."""
    with read_scope(settings.effective_database_url) as session:
        dep = session.get(Deployment, deployment_id)
        assert dep is not None, deployment_id
        image = dep.image
    digest = "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, deployment_id).hex * 2
    resolved = {"image_ref": f"{image}@{digest}", "image_digest": digest} if status == DeploymentStatus.ACTIVE and image else {}
    request = FinishDeploymentInput(deployment_id=deployment_id, status=status, reason=reason, **resolved)
    _activity(f"fast-{deployment_id}").run(RecordActivities(settings).finish_deployment, request)
    with read_scope(settings.effective_database_url) as session:
        done = session.get(Deployment, deployment_id)
        return {"id": done.id, "status": done.status, "image_ref": done.image_ref}


def fail_delete(settings: Settings, app_id: str, reason: str) -> None:
    """The app's delete attempt fails, as its workflow records it (`record_delete_failed`)."""
    with read_scope(settings.effective_database_url) as session:
        app = session.get(App, app_id)
        assert app is not None, app_id
        workflow_id = delete_workflow_id(app.id, app.delete_attempts)
    request = DeleteFailedInput(app_id=app_id, workflow_id=workflow_id, reason=reason, user="system")
    assert _activity(workflow_id).run(RecordActivities(settings).record_delete_failed, request)


def remove(settings: Settings, app_id: str) -> None:
    """The app's delete attempt succeeds, as its workflow records it (`remove_app`)."""
    with read_scope(settings.effective_database_url) as session:
        app = session.get(App, app_id)
        assert app is not None, app_id
        workflow_id = delete_workflow_id(app.id, app.delete_attempts)
    assert _activity(workflow_id).run(RecordActivities(settings).remove_app, RemoveAppInput(app_id=app_id, user="system"))
