"""The registry credential routes in process: admin only for changes, the
password in no answer, one credential per registry (a second save replaces
it), 422s naming the field without echoing it, and project isolation."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from conveyor.clients.db.session import read_scope
from tests.support.api_client import DEMO_IMAGE, assert_422_naming
from tests.support.in_process import new_project, rows

# Fixed: parameter ids must be the same in every xdist worker.
PASSWORD = "correct-horse-battery-staple-4b1d"


def body(registry: str = "ghcr.io", username: str = "ci-bot", password: str = PASSWORD) -> dict:
    return {"registry": registry, "username": username, "password": password}


def test_an_admin_saves_lists_replaces_and_deletes_a_credential_and_never_sees_the_password(local, project):
    created = project.admin.call("POST", "/registry-credentials", 201, json=body())
    saved = created.json()
    assert saved["id"].startswith("rc_") and saved["registry"] == "ghcr.io" and saved["username"] == "ci-bot"
    assert saved["created_by"] == project.names["admin"]
    replaced = project.admin.call("POST", "/registry-credentials", 200, json=body("GHCR.io", "other", PASSWORD + "2"))
    assert replaced.json()["id"] == saved["id"] and replaced.json()["username"] == "other"
    project.admin.call("POST", "/registry-credentials", 201, json=body("docker.io"))
    listed = project.viewer.call("GET", "/registry-credentials", 200)
    assert [(c["registry"], c["username"]) for c in listed.json()] == [("docker.io", "ci-bot"), ("ghcr.io", "other")]
    for answer in (created, replaced, listed):
        assert PASSWORD not in answer.text and "password" not in answer.text
    with read_scope(local.settings.effective_database_url) as session:
        stored = " ".join(str(v) for v in session.execute(text("SELECT password FROM registry_credentials")).scalars())
    assert PASSWORD not in stored and "$sealed" in stored
    project.admin.call("DELETE", f"/registry-credentials/{saved['id']}", 204)
    project.admin.call("DELETE", "/registry-credentials/docker.io", 204)
    assert project.admin.call("GET", "/registry-credentials", 200).json() == []
    assert project.admin.call("DELETE", "/registry-credentials/ghcr.io").status_code == 404


@pytest.mark.parametrize("role", ["deployer", "viewer"])
def test_only_an_admin_changes_credentials(local, project, role):
    caller = getattr(project, role)
    before = rows(local.settings)
    assert caller.call("POST", "/registry-credentials", json=body()).status_code == 403
    project.admin.call("POST", "/registry-credentials", 201, json=body("quay.io"))
    after = rows(local.settings)
    assert after["registry_credentials"] == before["registry_credentials"] + 1
    assert caller.call("DELETE", "/registry-credentials/quay.io").status_code == 403
    assert rows(local.settings) == after


def test_another_project_neither_sees_nor_deletes_a_credential(local, project):
    mine = project.admin.call("POST", "/registry-credentials", 201, json=body("registry.example.com")).json()
    other = new_project(local.settings, local.app)
    assert other.admin.call("GET", "/registry-credentials", 200).json() == []
    for which in (mine["id"], "registry.example.com"):
        assert other.admin.call("DELETE", f"/registry-credentials/{which}").status_code == 404
    # Each project has its own credential for the same registry.
    other.admin.call("POST", "/registry-credentials", 201, json=body("registry.example.com", "theirs"))
    assert [c["username"] for c in project.admin.call("GET", "/registry-credentials", 200).json()] == ["ci-bot"]


@pytest.mark.parametrize(
    ("given", "field", "value"),
    [
        (body(registry="ghcr.io/team"), "registry", "ghcr.io/team"),
        (body(registry="not a host"), "registry", "not a host"),
        (body(registry="10.0.0.1:5000"), "registry", "10.0.0.1"),
        (body(registry="169.254.169.254"), "registry", "169.254.169.254"),
        (body(registry="localhost:5000"), "registry", "localhost"),
        (body(username="a:b"), "username", "a:b"),
        (body(username=""), "username", None),
        (body(password="line\nbreak-" + PASSWORD), "password", PASSWORD),
        (body(password=""), "password", None),
        (body(password="x" * 9000), "password", "x" * 100),
        ({"registry": "ghcr.io", "username": "u"}, "password", None),
        ({**body(), "extra": "x"}, "extra", None),
    ],
    ids=lambda value: "" if isinstance(value, dict) or value is None else str(value)[:20],
)
def test_bad_input_is_a_422_naming_the_field_without_echoing_it(local, project, given, field, value):
    before = rows(local.settings)
    answer = project.admin.call("POST", "/registry-credentials", json=given)
    assert_422_naming(answer, field, refused=value)
    assert PASSWORD not in answer.text
    assert rows(local.settings) == before


def test_env_values_and_replayed_answers_are_sealed_in_the_database(local, project):
    value = "plain-looking-value-7c1e"
    app = project.admin.call("POST", "/apps", 201, json={"name": "sealed-env", "image_url": f"{DEMO_IMAGE}:v1", "env": {"REGION_HINT": value}},
                             headers={"Idempotency-Key": "sealed-1"}).json()
    assert app["env"] == {"REGION_HINT": value}
    with read_scope(local.settings.effective_database_url) as session:
        stored = [str(v) for q in ("SELECT env FROM apps", "SELECT env FROM deployments", "SELECT body FROM idempotency_keys")
                  for v in session.execute(text(q)).scalars()]
    assert stored and not any(value in v for v in stored)
    replay = project.admin.call("POST", "/apps", 201, json={"name": "sealed-env", "image_url": f"{DEMO_IMAGE}:v1", "env": {"REGION_HINT": value}},
                                headers={"Idempotency-Key": "sealed-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json()["env"] == {"REGION_HINT": value}
    assert project.viewer.call("GET", f"/apps/{app['id']}", 200).json()["env"] == {"REGION_HINT": value}


def test_an_idempotent_save_keeps_no_fingerprint_a_password_guess_can_be_checked_against(local, project):
    """The Idempotency-Key record of a save holds a keyed fingerprint of the
    body: hashing a guessed body (registry and username are listed to
    viewers) does not find it. A repeat still replays."""
    import hashlib
    import json

    import httpx

    headers = {"Idempotency-Key": "save-once"}
    first = project.admin.call("POST", "/registry-credentials", 201, json=body("quay.io"), headers=headers)
    again = project.admin.call("POST", "/registry-credentials", 201, json=body("quay.io"), headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    guess = httpx.Request("POST", "http://x/api/v1/registry-credentials", json=body("quay.io")).content
    unkeyed = hashlib.sha256(b"\n".join([b"POST", b"/api/v1/registry-credentials", guess])).hexdigest()
    with read_scope(local.settings.effective_database_url) as session:
        stored = session.execute(text("SELECT request_fingerprint FROM idempotency_keys WHERE key = 'save-once'")).scalar_one()
    assert stored != unkeyed and len(stored) == 64
    assert json.dumps(body("quay.io")) not in str(stored)


def test_a_crowd_saving_one_registry_leaves_one_credential(local, project):
    from concurrent.futures import ThreadPoolExecutor

    def save(i: int) -> int:
        return project.admin.call("POST", "/registry-credentials", json=body("crowd.example.com", f"user-{i}")).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(save, range(8)))
    assert set(codes) <= {200, 201, 409} and 201 in codes, codes
    listed = [c for c in project.admin.call("GET", "/registry-credentials", 200).json() if c["registry"] == "crowd.example.com"]
    assert len(listed) == 1
