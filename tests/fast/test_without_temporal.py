"""The API starts and takes changes while Temporal is away: a change is
committed with its operation in the hand-off outbox, and answers as usual."""

from __future__ import annotations

from sqlalchemy import select

from conveyor.clients.db.models import Handoff
from conveyor.clients.db.session import read_scope
from tests.support.in_process import rows


def handoffs(settings, app_id: str) -> list[str]:
    with read_scope(settings.effective_database_url) as session:
        return list(session.scalars(select(Handoff.workflow_id).where(Handoff.app_id == app_id).order_by(Handoff.created_at)))


def test_the_api_answers_health_and_readiness_without_temporal(local):
    assert local.http.get("/healthz").json() == {"status": "ok"}
    ready = local.http.get("/readyz")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["temporal"].startswith("unreachable")


def test_changes_are_committed_with_their_operation_waiting_in_the_outbox(local, project):
    backlog = local.http.get("/readyz").json()["handoff_backlog"]
    app = project.admin.create_app(replicas=2)
    assert app["status"] == "deploying"
    [first] = project.admin.deployments(app["id"])
    assert first["status"] == "pending" and first["operation"] == "deploy"
    assert handoffs(local.settings, app["id"]) == [first["workflow_id"]]

    deploy = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    assert deploy["status"] == "queued", "the first deployment is still on its way"
    scale = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 3}).json()
    assert scale["replicas"] == 3
    waiting = handoffs(local.settings, app["id"])
    assert waiting[:2] == [first["workflow_id"], deploy["workflow_id"]] and waiting[2].startswith(f"scale-{app['id']}-")
    assert local.http.get("/readyz").json()["handoff_backlog"] == backlog + 3


def test_a_read_changes_nothing(local, project):
    app = project.admin.create_app()
    before = rows(local.settings)
    for path in ("/apps", f"/apps/{app['id']}", f"/apps/{app['id']}/deployments", f"/apps/{app['id']}/audit", "/templates"):
        project.viewer.call("GET", path, 200)
    assert rows(local.settings) == before
