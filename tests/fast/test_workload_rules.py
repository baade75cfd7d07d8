"""Health checks, resources and project limits as the API takes them: what
it shows, what it records in each deployment, what it refuses (a 422 naming
the field or the limit, never echoing a value) and that nothing is written
then. The cluster side is tests/api/test_workloads.py."""

from __future__ import annotations

import uuid

import pytest

from conveyor.clients.db.queries import set_project_limits
from conveyor.clients.db.session import session_scope
from tests.support.in_process import rows

GOOD = {"image_url": "registry.test/web:1", "port": 8080}
HEALTHCHECK = {"type": "http", "path": "/healthz", "period_seconds": 3}
RESOURCES = {"cpu": "250m", "memory": "256Mi", "cpu_limit": "1", "memory_limit": "512Mi"}
SECRET = "s3cr3t-not-a-quantity"


def named(response, loc: list[str]) -> bool:
    return response.status_code == 422 and loc in [error["loc"] for error in response.json()["detail"]]


def test_checks_and_resources_are_shown_and_recorded_in_the_deployment(project):
    app = project.admin.create_app(healthcheck=HEALTHCHECK, liveness={"type": "tcp"}, resources=RESOURCES)
    shown = project.admin.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["healthcheck"] == {**HEALTHCHECK, "port": None, "command": None, "initial_delay_seconds": 0, "timeout_seconds": 1, "failure_threshold": 3}
    assert shown["liveness"]["type"] == "tcp" and shown["startup"] is None and shown["resources"] == RESOURCES
    [first] = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert first["resources"] == RESOURCES and first["healthcheck"]["path"] == "/healthz"
    listed = [a for a in project.admin.call("GET", "/apps", 200).json() if a["id"] == app["id"]]
    assert listed[0]["resources"] == RESOURCES


def test_a_change_of_checks_or_resources_is_a_new_deployment_and_null_removes_one(project):
    app = project.admin.create_app(healthcheck=HEALTHCHECK, resources=RESOURCES)
    changed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"healthcheck": None, "resources": {"cpu": "500m"}}).json()
    assert changed["healthcheck"] is None and changed["resources"] == {"cpu": "500m", "memory": None, "cpu_limit": None, "memory_limit": None}
    deployments = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert [d["operation"] for d in deployments] == ["update", "deploy"]
    assert deployments[0]["resources"]["cpu"] == "500m" and deployments[0]["healthcheck"] is None
    # The same values again change nothing.
    same = project.admin.call("PATCH", f"/apps/{app['id']}", json={"resources": {"cpu": "500m"}})
    assert same.status_code == 200
    assert len(project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()) == 2
    # A deployer may scale, not change checks or resources.
    refused = project.deployer.call("PATCH", f"/apps/{app['id']}", json={"resources": {"cpu": "1"}})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"resources": {"cpu": SECRET}}, ["body", "resources", "cpu"]),
        ({"resources": {"memory_limit": f"1{SECRET}"}}, ["body", "resources", "memory_limit"]),
        ({"resources": {"memory": "1Gi", "memory_limit": "1Mi"}}, ["body", "resources"]),
        ({"resources": {SECRET: "1"}}, ["body", "resources"]),
        ({"healthcheck": {"type": "grpc"}}, ["body", "healthcheck", "type"]),
        ({"startup": {"type": "exec"}}, ["body", "startup"]),
        ({"liveness": {"type": "http", "path": SECRET}}, ["body", "liveness", "path"]),
        ({"liveness": {"type": "http", "path": "/a\nb"}}, ["body", "liveness", "path"]),
        ({"healthcheck": {"type": "tcp", "port": 70000}}, ["body", "healthcheck", "port"]),
        ({"healthcheck": "tcp"}, ["body", "healthcheck"]),
        ({"replicas": 1_000_000}, ["body", "replicas"]),
    ],
)
def test_bad_checks_resources_and_replicas_are_422s_naming_the_field(local, project, fields, loc):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={**GOOD, "name": f"bad-{uuid.uuid4().hex[:6]}", **fields})
    assert named(response, loc), response.text
    assert SECRET not in response.text
    assert rows(local.settings) == before
    app = project.admin.create_app()
    patched = project.admin.call("PATCH", f"/apps/{app['id']}", json=fields)
    assert named(patched, loc), patched.text
    assert SECRET not in patched.text


def limit(local, project, **limits) -> None:
    with session_scope(local.settings.effective_database_url) as session:
        set_project_limits(session, local.settings, project.id, limits)


def test_a_project_quota_refuses_what_would_exceed_it_before_anything_is_written(local, project):
    limit(local, project, default_cpu="100m", default_memory="64Mi", quota_pods=6, quota_cpu="1", quota_memory="1Gi", max_replicas_per_app=5)
    first = project.admin.create_app(replicas=4)
    before = rows(local.settings)
    # 4 pods, and 2 more with a rollout's surge of 1: over 6.
    second = project.admin.call("POST", "/apps", json={**GOOD, "name": "second", "replicas": 2})
    assert named(second, ["body", "replicas"]) and "quota of 6" in second.text, second.text
    # The project's own ceiling of replicas per app.
    six = project.admin.call("PATCH", f"/apps/{first['id']}", json={"replicas": 6})
    assert named(six, ["body", "replicas"]) and "5 replicas" in six.text, six.text
    # CPU: 5 pods (4 and 1 surge) at 300m is 1.5, over a quota of 1; the value itself is not repeated.
    cpu = project.admin.call("PATCH", f"/apps/{first['id']}", json={"resources": {"cpu": "300m"}})
    assert named(cpu, ["body", "resources", "cpu"]) and "quota of 1" in cpu.text and "300m" not in cpu.text, cpu.text
    assert rows(local.settings) == before
    # What fits is taken: 4 → 1 replica frees room for a second app of 2.
    project.admin.call("PATCH", f"/apps/{first['id']}", 202, json={"replicas": 1})
    project.admin.create_app(name="second", replicas=2)


def test_apps_of_other_projects_do_not_count_against_a_quota(local, project):
    limit(local, project, quota_pods=3)
    from tests.support.in_process import new_project

    other = new_project(local.settings, local.app)
    other.admin.create_app(replicas=5)
    assert project.admin.create_app(replicas=2)["replicas"] == 2


AUTOSCALING = {"min_replicas": 2, "max_replicas": 6, "target_cpu_percent": 60}


def test_autoscaling_needs_a_cpu_request_and_sane_bounds(local, project):
    before = rows(local.settings)
    no_cpu = project.admin.call("POST", "/apps", json={**GOOD, "name": "scaled", "autoscaling": AUTOSCALING})
    assert named(no_cpu, ["body", "autoscaling"]) and "CPU request" in no_cpu.text, no_cpu.text
    upside_down = project.admin.call("POST", "/apps", json={**GOOD, "name": "scaled", "autoscaling": {"min_replicas": 5, "max_replicas": 2}, "resources": {"cpu": "100m"}})
    assert named(upside_down, ["body", "autoscaling"]), upside_down.text
    too_many = project.admin.call("POST", "/apps", json={**GOOD, "name": "scaled", "autoscaling": {"min_replicas": 1, "max_replicas": 500}, "resources": {"cpu": "100m"}})
    assert named(too_many, ["body", "autoscaling", "max_replicas"]), too_many.text
    assert rows(local.settings) == before
    # The project's default CPU request is enough.
    limit(local, project, default_cpu="100m")
    assert project.admin.create_app(autoscaling=AUTOSCALING)["autoscaling"]["max_replicas"] == 6


def test_with_autoscaling_on_a_replicas_patch_is_the_starting_count_and_no_scale(local, project):
    app = project.admin.create_app(autoscaling=AUTOSCALING, resources={"cpu": "100m"})
    patched = project.deployer.call("PATCH", f"/apps/{app['id']}", json={"replicas": 4})
    assert patched.status_code == 200 and patched.json()["replicas"] == 4, patched.text
    assert len(project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()) == 1
    audit = project.admin.call("GET", f"/apps/{app['id']}/audit", 200).json()
    assert "starting count" in audit[0]["details"]
    # Changing the bounds is a release.
    bounds = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"autoscaling": {**AUTOSCALING, "max_replicas": 8}})
    assert bounds.json()["autoscaling"]["max_replicas"] == 8
    assert project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()[0]["autoscaling"]["max_replicas"] == 8


def test_a_project_over_a_lowered_quota_can_still_shrink_but_not_grow(local, project):
    app = project.admin.create_app(replicas=8)
    limit(local, project, quota_pods=4)
    assert named(project.admin.call("PATCH", f"/apps/{app['id']}", json={"replicas": 9}), ["body", "replicas"])
    assert project.admin.call("PATCH", f"/apps/{app['id']}", json={"replicas": 3}).status_code == 202


def test_a_request_above_the_projects_default_limit_is_refused(local, project):
    limit(local, project, default_cpu_limit="500m")
    refused = project.admin.call("POST", "/apps", json={**GOOD, "name": "greedy", "resources": {"cpu": "2"}})
    assert named(refused, ["body", "resources", "cpu"]) and "cpu_limit" in refused.text, refused.text
    assert project.admin.create_app(resources={"cpu": "2", "cpu_limit": "2"})["resources"]["cpu"] == "2"


def test_a_crowd_of_creates_cannot_overfill_a_quota_together(local, project):
    """Each create fits alone; together only as many as the quota holds get
    in (the project's row is locked while each one is checked)."""
    from concurrent.futures import ThreadPoolExecutor

    # Each app of 1 replica needs 2 pods while it rolls out and 1 after: 5 fit in 6.
    limit(local, project, quota_pods=6)

    def create(i: int) -> int:
        return project.admin.call("POST", "/apps", json={**GOOD, "name": f"crowd-{i}", "replicas": 1}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(create, range(8)))
    assert codes == [201] * 5 + [422] * 3, codes
    assert len(project.admin.call("GET", "/apps", 200).json()) == 5
