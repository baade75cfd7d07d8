"""Unknown ids are a 404 that does not repeat them; a duplicate name, an app
being deleted and a change that does not fit the app's state are a 409; and
none of them writes anything."""

from __future__ import annotations

import pytest

from conveyor.domain.vocabulary import DeploymentStatus
from tests.support.api_client import DEMO_IMAGE, VALID_BODIES, upload_app
from tests.support.in_process import fail_delete, finish, rows

HOSTILE_ID = "ECHO_ID_<img src=x onerror=alert(1)>" + "z" * 5000


def test_duplicate_name_is_409_and_unknown_app_is_404(local, project):
    app = project.admin.create_app()
    before = rows(local.settings)
    for name in (app["name"], app["name"].upper(), app["name"].replace("-", " ")):
        response = project.admin.call("POST", "/apps", json={"name": name, "image_url": f"{DEMO_IMAGE}:v2"})
        assert response.status_code == 409 and app["name"] in response.text, (name, response.text)
    assert rows(local.settings) == before
    assert project.admin.call("GET", "/apps/app_doesnotexist").status_code == 404
    assert project.admin.call("POST", "/apps/app_doesnotexist/deploy").status_code == 404
    for action in ("revert", "retry"):
        missing = project.admin.call("POST", f"/apps/{app['id']}/deployments/dep_nope/{action}")
        assert missing.status_code == 404 and missing.json()["detail"] == "deployment not found for this app", missing.text
    assert rows(local.settings) == before


def hostile_requests(app_id: str, dep_id: str) -> list[tuple[str, str, dict]]:
    """Every request that names an id, with a hostile one in its place (the routes
    that answer without Temporal or Kubernetes; tests/api covers the others)."""
    app, dep = f"/apps/{HOSTILE_ID}", f"/apps/{app_id}/deployments/{HOSTILE_ID}"
    return [
        ("GET", app, {}),
        ("DELETE", app, {}),
        ("PATCH", app, {"json": {"replicas": 1}}),
        ("PUT", app, {"json": {"replicas": 1}}),
        ("POST", f"{app}/deploy", {}),
        ("POST", f"{app}/restart", {}),
        ("GET", f"{app}/deployments", {}),
        ("GET", f"{app}/audit", {}),
        ("GET", f"{app}/status", {}),
        ("GET", f"{app}/pods", {}),
        ("GET", f"{app}/events", {}),
        ("GET", f"{app}/metrics", {}),
        ("GET", f"{app}/logs", {}),
        ("GET", f"{app}/build-log", {}),
        ("POST", f"{app}/build", VALID_BODIES[("POST", "/api/v1/apps/{app_id}/build")]),
        ("POST", f"{dep}/revert", {}),
        ("POST", f"{dep}/retry", {}),
        ("GET", f"/apps/{app_id}/build-log", {"params": {"build_id": HOSTILE_ID}}),
    ]


def test_unknown_ids_are_a_404_that_does_not_repeat_them(local, project):
    upload = upload_app(project.admin)
    before = rows(local.settings)
    for method, path, kwargs in hostile_requests(upload["id"], "dep_unused"):
        response = project.admin.call(method, path, **kwargs)
        assert response.status_code == 404, (method, path[:60], response.status_code, response.text[:200])
        assert "ECHO_ID" not in response.text and "onerror" not in response.text, (method, path[:60], response.text[:200])
    assert rows(local.settings) == before


# --- an app being deleted -----------------------------------------------------


def changes(app: dict, first: dict, failed: dict) -> list[tuple[str, str, dict]]:
    path = f"/apps/{app['id']}"
    return [
        ("PATCH", path, {"json": {"env": {"X": "1"}}}),
        ("PATCH", path, {"json": {"replicas": 3}}),
        ("PUT", path, {"json": {"port": 9090}}),
        ("POST", f"{path}/deploy", {}),
        ("POST", f"{path}/restart", {}),
        ("POST", f"{path}/deployments/{first['id']}/revert", {}),
        ("POST", f"{path}/deployments/{failed['id']}/retry", {}),
        ("POST", f"{path}/build", VALID_BODIES[("POST", "/api/v1/apps/{app_id}/build")]),
    ]


@pytest.fixture
def running(local, project):
    """An app whose first deployment is active and whose second failed."""
    app = project.admin.create_app()
    first = finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    failed = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    finish(local.settings, failed["id"], DeploymentStatus.FAILED, "would not start")
    return app, first, failed


def test_while_an_app_is_deleted_every_change_is_a_409_and_delete_again_starts_nothing(local, project, running):
    app, first, failed = running
    path = f"/apps/{app['id']}"
    deleting = project.admin.call("DELETE", path, 202).json()
    assert deleting["status"] == "deleting"
    before = rows(local.settings)
    for method, target, kwargs in changes(app, first, failed):
        refused = project.admin.call(method, target, **kwargs)
        assert refused.status_code == 409 and "being deleted" in refused.text, (method, target, refused.text)
    again = project.admin.call("DELETE", path, 202).json()
    assert again["status"] == "deleting"
    assert rows(local.settings) == before
    assert project.viewer.call("GET", path, 200).json()["status"] == "deleting"


def test_after_a_failed_delete_only_delete_is_taken_and_it_tries_again(local, project, running):
    app, first, failed = running
    path = f"/apps/{app['id']}"
    project.admin.call("DELETE", path, 202)
    fail_delete(local.settings, app["id"], "the Service has a finalizer that never ends")
    shown = project.viewer.call("GET", path, 200).json()
    assert shown["status"] == "delete_failed" and "finalizer" in shown["status_reason"]
    before = rows(local.settings)
    for method, target, kwargs in changes(app, first, failed):
        refused = project.admin.call(method, target, **kwargs)
        assert refused.status_code == 409 and "DELETE it again" in refused.text, (method, target, refused.text)
    assert rows(local.settings) == before
    retried = project.admin.call("DELETE", path, 202).json()
    assert retried["status"] == "deleting" and retried["status_reason"] is None
    audit = [entry["action"] for entry in project.viewer.call("GET", f"{path}/audit", 200).json()]
    assert audit[:3] == ["delete_requested", "delete_failed", "delete_requested"], audit


# --- changes that do not fit the app's state --------------------------------------


def test_upload_app_deploy_without_source_is_409(local, project):
    app = upload_app(project.admin)
    before = rows(local.settings)
    response = project.admin.call("POST", f"/apps/{app['id']}/deploy")
    assert response.status_code == 409 and "/build" in response.text
    assert rows(local.settings) == before


def test_restart_needs_an_active_deployment_and_revert_one_that_ran(local, project):
    app = project.admin.create_app()
    [first] = project.admin.deployments(app["id"])
    before = rows(local.settings)
    restart = project.admin.call("POST", f"/apps/{app['id']}/restart")
    assert restart.status_code == 409 and "no active deployment" in restart.text, restart.text
    revert = project.admin.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert")
    assert revert.status_code == 409 and "once ran" in revert.text, revert.text
    retry = project.admin.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/retry")
    assert retry.status_code == 409 and "failed or cancelled" in retry.text, retry.text
    assert rows(local.settings) == before


def test_a_delete_cancels_the_deployments_that_wait_and_says_so_in_the_audit(local, project):
    app = project.admin.create_app()
    # No worker here: the first deployment waits (pending), the next behind it (queued).
    second = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    assert second["status"] == "queued"
    project.admin.call("DELETE", f"/apps/{app['id']}", 202)
    deployments = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert {d["status"] for d in deployments} == {"cancelled"}
    assert all("deleted the app" in d["reason"] and d["finished_at"] for d in deployments)
    [entry] = [e for e in project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json() if e["action"] == "delete_requested"]
    assert all(f"({d['id']})" in entry["details"] for d in deployments), entry
    assert entry["details"].count("cancelled v") == 1
