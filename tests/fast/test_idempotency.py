"""Idempotency-Key: a repeat returns the first answer and starts nothing; the
same key on another request is a 422; keys are per project and expire."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from api.idempotency import idempotency_cutoff, prune_idempotency_keys
from conveyor.clients.db.models import IdempotencyRecord
from conveyor.clients.db.session import read_scope, session_scope
from tests.support.api_client import DEMO_IMAGE, assert_422_naming
from tests.support.in_process import finish, new_project, rows


def key() -> str:
    return f"key-{uuid.uuid4()}"


def records(settings, key: str) -> int:
    with read_scope(settings.effective_database_url) as session:
        return session.scalar(select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.key == key)) or 0


def test_a_repeated_key_replays_the_first_answer_and_starts_nothing(local, project):
    k = key()
    body = {"name": "once", "image_url": f"{DEMO_IMAGE}:v1"}
    created = project.admin.call("POST", "/apps", 201, json=body, headers={"Idempotency-Key": k})
    assert "Idempotent-Replayed" not in created.headers
    before = rows(local.settings)
    again = project.admin.call("POST", "/apps", 201, json=body, headers={"Idempotency-Key": k})
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == created.json()
    assert rows(local.settings) == before

    app = created.json()
    d = key()
    first = project.deployer.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": d})
    before = rows(local.settings)
    repeat = project.deployer.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": d})
    assert repeat.json() == first.json() and repeat.headers["Idempotent-Replayed"] == "true"
    assert rows(local.settings) == before
    assert len(project.admin.deployments(app["id"])) == 2


def test_the_same_key_on_another_request_is_a_422(local, project):
    app = project.admin.create_app()
    k = key()
    project.admin.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": k})
    before = rows(local.settings)
    for method, path, kwargs in (
        ("POST", f"/apps/{app['id']}/restart", {}),
        ("PATCH", f"/apps/{app['id']}", {"json": {"replicas": 2}}),
        ("POST", "/apps", {"json": {"name": "other", "image_url": f"{DEMO_IMAGE}:v1"}}),
    ):
        other = project.admin.call(method, path, headers={"Idempotency-Key": k}, **kwargs)
        assert_422_naming(other, "Idempotency-Key")
        assert "different request" in other.text
    assert rows(local.settings) == before
    # The same route with another body is another request too.
    scale = key()
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 2}, headers={"Idempotency-Key": scale})
    before = rows(local.settings)
    assert_422_naming(project.admin.call("PATCH", f"/apps/{app['id']}", json={"replicas": 3}, headers={"Idempotency-Key": scale}), "Idempotency-Key")
    assert rows(local.settings) == before


def test_keys_are_1_to_255_characters(local, project):
    app = project.admin.create_app()
    before = rows(local.settings)
    for bad in ("", "k" * 256):
        assert_422_naming(project.admin.call("POST", f"/apps/{app['id']}/deploy", headers={"Idempotency-Key": bad}), "Idempotency-Key")
    assert rows(local.settings) == before
    project.admin.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": "k" * 255})


def test_keys_are_per_project(local, project):
    other = new_project(local.settings, local.app)
    k = key()
    mine = project.admin.call("POST", "/apps", 201, json={"name": "shared-key", "image_url": f"{DEMO_IMAGE}:v1"}, headers={"Idempotency-Key": k})
    theirs = other.admin.call("POST", "/apps", 201, json={"name": "shared-key", "image_url": f"{DEMO_IMAGE}:v1"}, headers={"Idempotency-Key": k})
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"] and theirs.json()["project_id"] == other.id
    assert records(local.settings, k) == 2


def test_a_refused_request_leaves_its_key_unused(local, project):
    app = project.admin.create_app()
    k = key()
    refused = project.admin.call("POST", f"/apps/{app['id']}/restart", headers={"Idempotency-Key": k})
    assert refused.status_code == 409, refused.text
    assert records(local.settings, k) == 0
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    restarted = project.admin.call("POST", f"/apps/{app['id']}/restart", 202, headers={"Idempotency-Key": k})
    assert "Idempotent-Replayed" not in restarted.headers and restarted.json()["operation"] == "restart"


def test_an_idempotency_key_expires_and_its_record_is_pruned(local, project):
    settings = local.settings
    app = project.admin.create_app()
    k = key()

    def age(key: str) -> None:
        # As if the key had been used just over its lifetime ago.
        with session_scope(settings.effective_database_url) as session:
            session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == key)
                .values(created_at=idempotency_cutoff(settings) - timedelta(minutes=1))
            )

    a = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": k})
    age(k)
    # Expired: the key starts a new deployment instead of replaying the first answer.
    b = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": k})
    assert "Idempotent-Replayed" not in b.headers and b.json()["id"] != a.json()["id"]
    assert [d["id"] for d in project.admin.deployments(app["id"])][:2] == [b.json()["id"], a.json()["id"]]
    # Within its lifetime it replays as before.
    c = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202, headers={"Idempotency-Key": k})
    assert c.headers.get("Idempotent-Replayed") == "true" and c.json() == b.json()
    assert records(settings, k) == 1

    age(k)
    assert prune_idempotency_keys(settings.effective_database_url, idempotency_cutoff(settings)) >= 1
    assert records(settings, k) == 0
