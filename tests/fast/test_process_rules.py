"""Processes besides web as the API takes them: what it shows and records,
what a PATCH of them means (a release, a scale, a removal), what it refuses
(a 422 naming the field, a 409 for a clash of Deployment names) before
anything is written. The cluster side is tests/api/test_processes.py."""

from __future__ import annotations

import uuid

import pytest

from conveyor.clients.db.queries import set_project_limits
from conveyor.clients.db.session import session_scope
from tests.support.in_process import rows

GOOD = {"image_url": "registry.test/web:1", "port": 8080}
WORKER = {"command": ["python", "worker.py"], "replicas": 2, "resources": {"cpu": "100m", "memory": "64Mi"}}
SECRET = "s3cr3t-VALUE"


def named(response, loc: list[str]) -> bool:
    return response.status_code == 422 and loc in [error["loc"] for error in response.json()["detail"]]


def deployments(project, app_id: str) -> list[dict]:
    return project.admin.call("GET", f"/apps/{app_id}/deployments", 200).json()


def test_processes_are_shown_and_recorded_in_each_deployment(project):
    app = project.admin.create_app(processes={"worker": WORKER, "clock": {"command": "python clock.py"}})
    shown = project.admin.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["processes"]["worker"]["command"] == ["python", "worker.py"] and shown["processes"]["worker"]["replicas"] == 2
    # A string runs in a shell; a process without a count has one pod.
    assert shown["processes"]["clock"]["command"] == "python clock.py" and shown["processes"]["clock"]["replicas"] == 1
    [first] = deployments(project, app["id"])
    assert sorted(first["processes"]) == ["clock", "worker"]


def test_a_patch_of_processes_is_merged_by_name(project):
    app = project.admin.create_app(processes={"worker": WORKER, "clock": {"command": "python clock.py"}})
    # A count alone is a scale: no new deployment, and a deployer may do it.
    scaled = project.deployer.call("PATCH", f"/apps/{app['id']}", json={"processes": {"worker": {"replicas": 5}}})
    assert scaled.status_code == 202, scaled.text
    assert scaled.json()["processes"]["worker"] == {**scaled.json()["processes"]["worker"], "replicas": 5, "command": ["python", "worker.py"]}
    assert len(deployments(project, app["id"])) == 1
    audit = project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json()
    assert all(entry["action"] != "update" or "Changed" not in entry["details"] for entry in audit[:1])
    # A new definition is a release, keeping the count; the other process stays.
    changed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"worker": {"command": ["python", "w2.py"]}}}).json()
    assert changed["processes"]["worker"]["replicas"] == 5 and changed["processes"]["worker"]["command"] == ["python", "w2.py"]
    assert "clock" in changed["processes"]
    latest = deployments(project, app["id"])[0]
    assert latest["operation"] == "update" and latest["processes"]["worker"]["command"] == ["python", "w2.py"]
    # null removes one (a release); a deployer may not change definitions.
    assert project.deployer.call("PATCH", f"/apps/{app['id']}", json={"processes": {"clock": {"command": "x"}}}).status_code == 403
    removed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"clock": None}}).json()
    assert sorted(removed["processes"]) == ["worker"]
    assert len(deployments(project, app["id"])) == 3


def test_a_revert_restores_the_targets_processes_at_todays_counts(local, project):
    from tests.support.in_process import finish

    app = project.admin.create_app(processes={"worker": WORKER})
    [first] = deployments(project, app["id"])
    finish(local.settings, first["id"])
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"worker": None, "clock": {"command": "c"}}})
    finish(local.settings, deployments(project, app["id"])[0]["id"])
    project.deployer.call("PATCH", f"/apps/{app['id']}", 202, json={"processes": {"clock": {"replicas": 3}}})
    reverted = project.admin.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    assert sorted(reverted["processes"]) == ["worker"]
    shown = project.admin.call("GET", f"/apps/{app['id']}", 200).json()
    assert sorted(shown["processes"]) == ["worker"] and shown["processes"]["worker"]["replicas"] == 2


@pytest.mark.parametrize(
    ("processes", "loc"),
    [
        ({"web": {"command": ["x"]}}, ["body", "processes"]),
        ({f"Worker_{SECRET}": {"command": ["x"]}}, ["body", "processes"]),
        ({"w" * 31: {"command": ["x"]}}, ["body", "processes"]),
        ({"worker": {"command": ["x"], "replicas": 1_000_000}}, ["body", "processes", "worker", "replicas"]),
        ({"worker": {"command": ["x"], "resources": {"cpu": SECRET}}}, ["body", "processes", "worker", "resources", "cpu"]),
        ({"worker": {"command": ["x"], "healthcheck": {"type": "http", "path": "/"}}}, ["body", "processes", "worker"]),
        ({"worker": {"command": f"a\0{SECRET}"}}, ["body", "processes", "worker", "command"]),
        ({"worker": {"command": ["x"], "port": 80}}, ["body", "processes", "worker"]),
        ({f"p{i}": {"command": ["x"]} for i in range(11)}, ["body", "processes"]),
    ],
)
def test_bad_processes_are_422s_naming_the_field(local, project, processes, loc):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={**GOOD, "name": f"bad-{uuid.uuid4().hex[:6]}", "processes": processes})
    assert named(response, loc), response.text
    assert SECRET not in response.text
    assert rows(local.settings) == before


def test_an_image_apps_process_needs_a_command(local, project):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={**GOOD, "name": "nocmd", "processes": {"worker": {"replicas": 2}}})
    assert named(response, ["body", "processes", "worker", "command"]), response.text
    assert rows(local.settings) == before
    app = project.admin.create_app()
    # Scaling a process the app does not have would create one without a command.
    scaled = project.admin.call("PATCH", f"/apps/{app['id']}", json={"processes": {"ghost": {"replicas": 2}}})
    assert named(scaled, ["body", "processes", "ghost", "command"]), scaled.text


def test_a_process_deployment_may_not_be_another_apps(project):
    project.admin.create_app(name="shop-worker")
    clash = project.admin.call("POST", "/apps", json={**GOOD, "name": "shop", "processes": {"worker": {"command": ["w"]}}})
    assert clash.status_code == 409 and "worker" in clash.text, clash.text
    shop = project.admin.create_app(name="shop", processes={"queue": {"command": ["q"]}})
    # The other way round: an app named like shop's process Deployment.
    taken = project.admin.call("POST", "/apps", json={**GOOD, "name": "shop-queue"})
    assert taken.status_code == 409, taken.text
    renamed = project.admin.call("PATCH", f"/apps/{shop['id']}", json={"processes": {"worker": {"command": ["w"]}}})
    assert renamed.status_code == 409, renamed.text


def test_every_process_counts_against_the_project_quota(local, project):
    with session_scope(local.settings.effective_database_url) as session:
        set_project_limits(session, local.settings, project.id, {"quota_pods": 8, "max_replicas_per_app": 5})
    app = project.admin.create_app(replicas=2, processes={"worker": {"command": ["w"], "replicas": 2}})
    # 6 is over the project's 5 replicas per app (each process counts on its own).
    grown = project.admin.call("PATCH", f"/apps/{app['id']}", json={"processes": {"worker": {"replicas": 6}}})
    assert named(grown, ["body", "processes", "worker", "replicas"]) and "5 replicas" in grown.text, grown.text
    # web 2 (+1 surge) and worker 5 (+2 surge) is 10, over 8.
    over = project.admin.call("PATCH", f"/apps/{app['id']}", json={"processes": {"worker": {"replicas": 5}}})
    assert named(over, ["body", "processes", "worker", "replicas"]) and "quota of 8" in over.text, over.text
    # Another app sees this one's processes too: 2 + 2 running leave room for 4 with surge.
    assert project.admin.call("POST", "/apps", json={**GOOD, "name": "third", "replicas": 3}).status_code == 201
    assert named(project.admin.call("POST", "/apps", json={**GOOD, "name": "fourth", "replicas": 1}), ["body", "replicas"])


def test_the_web_with_worker_template_makes_an_app_with_a_worker(project):
    app = project.admin.call("POST", "/apps", 201, json={"name": "from-template", "template_id": "web-with-worker"}).json()
    assert app["processes"]["worker"]["resources"]["cpu"] == "50m" and app["healthcheck"]["type"] == "http"
    # A field given explicitly wins over the template's.
    mine = project.admin.call("POST", "/apps", 201, json={"name": "mine", "template_id": "web-with-worker", "processes": {"jobs": {"command": ["j"]}}}).json()
    assert sorted(mine["processes"]) == ["jobs"]


def test_the_app_list_shows_each_app_as_get_shows_it(project):
    """The list is encoded straight from the rows; each item is exactly what
    GET /apps/{id} answers, for apps with and without workload fields."""
    plain = project.admin.create_app(name="plain", env={"API_TOKEN": "s3cret", "MODE": "x"})
    rich = project.admin.create_app(
        name="rich", processes={"worker": WORKER}, healthcheck={"type": "http", "path": "/h"}, resources={"cpu": "100m"},
        autoscaling={"min_replicas": 1, "max_replicas": 3}, domains=["rich.example.com"],
    )
    listed = {a["id"]: a for a in project.admin.call("GET", "/apps", 200).json()}
    for app in (plain, rich):
        assert listed[app["id"]] == project.admin.call("GET", f"/apps/{app['id']}", 200).json()
    assert listed[plain["id"]]["env"]["API_TOKEN"] != "s3cret"
    page = project.admin.call("GET", "/apps", 200, params={"limit": 1})
    assert len(page.json()) == 1 and page.headers["X-Next-Cursor"]
