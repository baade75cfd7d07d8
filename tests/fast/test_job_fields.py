"""The release command and the scheduled jobs (`cron`) as the API takes
them: shown, recorded in each deployment, refused with a 422 naming the
field (never echoing the value) before anything is written; the jobs routes
over rows the worker would write. The cluster and Temporal side is
tests/api/test_jobs.py."""

from __future__ import annotations

import uuid

import pytest

from conveyor.clients.db.models import JobRun
from conveyor.clients.db.session import session_scope
from conveyor.domain.ids import utcnow
from tests.support.in_process import finish, rows

GOOD = {"image_url": "registry.test/web:1", "port": 8080}
NIGHTLY = {"name": "nightly", "schedule": "0 3 * * *", "command": ["python", "nightly.py"], "timezone": "Europe/Berlin"}
SECRET = "s3cr3t-value"


def named(response, loc: list) -> bool:
    return response.status_code == 422 and loc in [error["loc"] for error in response.json()["detail"]]


def test_release_command_and_cron_are_shown_and_recorded_in_the_deployment(project):
    app = project.admin.create_app(release_command="python manage.py migrate", cron=[NIGHTLY])
    shown = project.admin.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["release_command"] == "python manage.py migrate"
    assert shown["cron"] == [{**NIGHTLY, "deadline_seconds": 3600}]
    [first] = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert first["release_command"] == "python manage.py migrate" and first["cron"][0]["name"] == "nightly"


def test_a_change_of_cron_or_release_command_is_a_release_and_an_empty_cron_removes_it(local, project):
    app = project.admin.create_app(cron=[NIGHTLY])
    changed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"cron": [{**NIGHTLY, "schedule": "@hourly"}], "release_command": ["migrate", "--check"]})
    assert changed.json()["cron"][0]["schedule"] == "@hourly" and changed.json()["release_command"] == ["migrate", "--check"]
    removed = project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"cron": []}).json()
    assert removed["cron"] is None
    deployments = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert [d["operation"] for d in deployments] == ["update", "update", "deploy"]
    assert deployments[0]["cron"] is None and deployments[1]["cron"][0]["schedule"] == "@hourly"
    # Removed already: null or [] again is no change.
    assert project.admin.call("PATCH", f"/apps/{app['id']}", json={"cron": None}).status_code == 200
    assert project.admin.call("PATCH", f"/apps/{app['id']}", json={"cron": []}).status_code == 200


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"cron": [{**NIGHTLY, "schedule": f"61 3 * * * {SECRET}"}]}, ["body", "cron", 0, "schedule"]),
        ({"cron": [{**NIGHTLY, "schedule": "61 3 * * *"}]}, ["body", "cron", 0, "schedule"]),
        ({"cron": [{**NIGHTLY, "schedule": "0 3 * 13 *"}]}, ["body", "cron", 0, "schedule"]),
        ({"cron": [{**NIGHTLY, "schedule": "*/0 * * * *"}]}, ["body", "cron", 0, "schedule"]),
        ({"cron": [NIGHTLY, {**NIGHTLY, "name": "weekly", "schedule": "0 3 * * mon-" + SECRET}]}, ["body", "cron", 1, "schedule"]),
        ({"cron": [{**NIGHTLY, "timezone": f"Mars/{SECRET}"}]}, ["body", "cron", 0, "timezone"]),
        ({"cron": [{**NIGHTLY, "name": f"Bad_{SECRET}"}]}, ["body", "cron", 0, "name"]),
        ({"cron": [{**NIGHTLY, "name": "a" * 41}]}, ["body", "cron", 0, "name"]),
        ({"cron": [{**NIGHTLY, "deadline_seconds": 0}]}, ["body", "cron", 0, "deadline_seconds"]),
        ({"cron": [{**NIGHTLY, SECRET: 1}]}, ["body", "cron", 0]),
        ({"cron": [NIGHTLY, NIGHTLY]}, ["body", "cron"]),
        ({"cron": [{k: v for k, v in NIGHTLY.items() if k != "command"}]}, ["body", "cron", 0, "command"]),
        ({"release_command": ""}, ["body", "release_command"]),
        ({"release_command": []}, ["body", "release_command"]),
        ({"release_command": ["migrate", "a\0b"]}, ["body", "release_command"]),
    ],
)
def test_bad_cron_entries_and_release_commands_are_422s_naming_the_field(local, project, fields, loc):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={**GOOD, "name": f"bad-{uuid.uuid4().hex[:6]}", **fields})
    assert named(response, loc), response.text
    assert SECRET not in response.text
    assert rows(local.settings) == before
    app = project.admin.create_app()
    patched = project.admin.call("PATCH", f"/apps/{app['id']}", json=fields)
    assert named(patched, loc), patched.text


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 9-17 * * mon-fri", "0 0 1,15 * *", "30 4 1 jan,jul sun", "@daily", "0 0 * * 7"])
def test_good_schedules_are_taken(project, schedule):
    project.admin.create_app(cron=[{**NIGHTLY, "schedule": schedule}])


def add_run(settings, app_id: str, project_id: str, **fields) -> JobRun:
    run = JobRun(
        id=f"run_{uuid.uuid4().hex[:12]}",
        app_id=app_id,
        project_id=project_id,
        kind=fields.pop("kind", "cron"),
        name=fields.pop("name", "nightly"),
        job_name=f"job-{uuid.uuid4().hex[:12]}",
        trigger="schedule",
        status=fields.pop("status", "succeeded"),
        command={"argv": ["python", "nightly.py"]},
        created_at=fields.pop("created_at", utcnow()),
        **fields,
    )
    with session_scope(settings.effective_database_url) as session:
        session.add(run)
    return run


def test_runs_are_listed_newest_first_in_pages_with_their_logs(local, project):
    app = project.admin.create_app(cron=[NIGHTLY], release_command="migrate")
    [first] = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    made = [add_run(local.settings, app["id"], project.id, output=f"line {i}") for i in range(5)]
    release = add_run(local.settings, app["id"], project.id, kind="release", name="release", deployment_id=first["id"], output="migrated")
    listed = project.viewer.call("GET", f"/apps/{app['id']}/jobs", 200).json()
    assert [r["id"] for r in listed] == [release.id, *[r.id for r in reversed(made)]]
    assert listed[1]["command"] == ["python", "nightly.py"] and listed[1]["status"] == "succeeded"
    pages, cursor = [], None
    while True:
        answer = project.viewer.call("GET", f"/apps/{app['id']}/jobs", 200, params={"limit": 2, "kind": "cron", **({"cursor": cursor} if cursor else {})})
        pages.append([r["id"] for r in answer.json()])
        cursor = answer.headers.get("X-Next-Cursor")
        if not cursor:
            break
    assert [run for page in pages for run in page] == [r.id for r in reversed(made)] and len(pages) == 3
    assert project.viewer.call("GET", f"/apps/{app['id']}/jobs/{made[2].id}/log", 200).text == "line 2\n"
    assert project.viewer.call("GET", f"/apps/{app['id']}/deployments/{first['id']}/release-log", 200).text == "migrated\n"
    assert project.viewer.call("GET", f"/apps/{app['id']}/jobs", params={"cursor": "bm90LWEtY3Vyc29y"}).status_code == 422


def test_logs_of_other_apps_and_deployments_without_a_release_command_are_404s(local, project):
    mine = project.admin.create_app(release_command="migrate")
    other = project.admin.create_app()
    [plain] = project.admin.call("GET", f"/apps/{other['id']}/deployments", 200).json()
    [waiting] = project.admin.call("GET", f"/apps/{mine['id']}/deployments", 200).json()
    run = add_run(local.settings, other["id"], project.id, output="theirs")
    assert project.viewer.call("GET", f"/apps/{mine['id']}/jobs/{run.id}/log").status_code == 404
    no_command = project.viewer.call("GET", f"/apps/{other['id']}/deployments/{plain['id']}/release-log")
    assert no_command.status_code == 404 and "no release command" in no_command.text
    not_yet = project.viewer.call("GET", f"/apps/{mine['id']}/deployments/{waiting['id']}/release-log")
    assert not_yet.status_code == 404 and "not run yet" in not_yet.text
    # Another deployment's id under this app is not found either.
    assert project.viewer.call("GET", f"/apps/{mine['id']}/deployments/{plain['id']}/release-log").status_code == 404


def test_a_trigger_needs_a_deployer_and_an_entry_of_the_active_release(local, project):
    app = project.admin.create_app(cron=[NIGHTLY])
    [first] = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    assert project.viewer.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger").status_code == 403
    # Nothing is active yet: no schedule to trigger.
    assert project.deployer.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger").status_code == 404
    finish(local.settings, first["id"])
    unknown = project.deployer.call("POST", f"/apps/{app['id']}/jobs/weekly/trigger")
    assert unknown.status_code == 404 and "weekly" not in unknown.text
    # The entry is there; Temporal is not (in this suite): a 503 that says so.
    away = project.deployer.call("POST", f"/apps/{app['id']}/jobs/nightly/trigger")
    assert away.status_code == 503 and "unreachable" in away.text


def test_a_revert_restores_the_targets_release_command_and_cron(local, project):
    app = project.admin.create_app(release_command="migrate-v1", cron=[NIGHTLY])
    [first] = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()
    finish(local.settings, first["id"])
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"release_command": None, "cron": [{**NIGHTLY, "name": "weekly", "schedule": "@weekly"}]})
    second = project.admin.call("GET", f"/apps/{app['id']}/deployments", 200).json()[0]
    finish(local.settings, second["id"])
    reverted = project.deployer.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    assert reverted["release_command"] == "migrate-v1" and [e["name"] for e in reverted["cron"]] == ["nightly"]
    shown = project.viewer.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["release_command"] == "migrate-v1" and [e["name"] for e in shown["cron"]] == ["nightly"]
