"""Lists follow the contract: without `limit` the whole list, with `limit` one
page (the next page's cursor in `X-Next-Cursor` and a `Link: rel="next"`); a
cursor this API did not give out is a 422 naming `cursor`."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.in_process import Project, finish, new_project


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def busy(local) -> tuple[Project, dict]:
    """A project (for this module's reads) with an app of 5 deployments and a
    long audit log, and 4 other apps beside it."""
    project = new_project(local.settings, local.app)
    app = project.admin.create_app(name="m-app")
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    for _ in range(4):
        finish(local.settings, project.admin.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"])
    for i in range(55):
        project.admin.call("PATCH", f"/apps/{app['id']}", 200, json={"progress_deadline_seconds": 600 + i})
    for name in ("a-app", "b-app", "y-app", "z-app"):
        project.admin.create_app(name=name)
    return project, app


@pytest.fixture
def project(busy) -> Project:
    return busy[0]


@pytest.fixture
def busy_app(busy) -> dict:
    return busy[1]


def test_without_limit_a_list_is_the_whole_list(project, busy_app):
    app = busy_app
    audit = project.viewer.call("GET", f"/apps/{app['id']}/audit", 200)
    assert len(audit.json()) >= 56 and "X-Next-Cursor" not in audit.headers and "Link" not in audit.headers
    page = project.viewer.call("GET", f"/apps/{app['id']}/audit", 200, params={"limit": 50})
    assert len(page.json()) == 50 and page.headers["X-Next-Cursor"]
    rest = project.viewer.call("GET", f"/apps/{app['id']}/audit", 200, params={"limit": 200, "cursor": page.headers["X-Next-Cursor"]})
    assert "X-Next-Cursor" not in rest.headers
    assert page.json() + rest.json() == audit.json()
    # A name is the apps list's kind of cursor: apps after it, not an error.
    after = project.viewer.call("GET", "/apps", 200, params={"cursor": _cursor(app["name"]), "limit": 200}).json()
    assert [a["name"] for a in after] == ["y-app", "z-app"]


@pytest.mark.parametrize("path", ["/apps/{app_id}/deployments", "/apps/{app_id}/audit", "/apps"])
def test_lists_page_with_limit_and_cursor(project, busy_app, path):
    path = path.format(app_id=busy_app["id"])
    whole = project.viewer.call("GET", path, 200).json()
    assert len(whole) >= 5
    seen, cursor, pages = [], None, 0
    while True:
        response = project.viewer.call("GET", path, 200, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert 1 <= len(response.json()) <= 2
        seen += response.json()
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            assert "Link" not in response.headers
            break
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"'), link
        query = parse_qs(urlsplit(link.removeprefix("<").split(">")[0]).query)
        assert query == {"cursor": [cursor], "limit": ["2"]}, link
    assert seen == whole and pages == (len(whole) + 1) // 2


def test_apps_are_listed_by_name_and_deployments_and_audit_newest_first(project, busy_app):
    names = [a["name"] for a in project.viewer.call("GET", "/apps", 200).json()]
    assert names == sorted(names) == ["a-app", "b-app", "m-app", "y-app", "z-app"]
    numbers = [d["number"] for d in project.viewer.deployments(busy_app["id"])]
    assert numbers == [5, 4, 3, 2, 1]
    times = [e["created_at"] for e in project.viewer.call("GET", f"/apps/{busy_app['id']}/audit", 200).json()]
    assert times == sorted(times, reverse=True)


def test_an_app_in_the_list_is_exactly_the_app_as_get_shows_it(local):
    """The list encodes rows itself (not through AppPublic): each item is the
    app's GET body, for every kind of value a row holds (env sealed at rest
    and masked, health checks and resources, none of them)."""
    project = new_project(local.settings, local.app)
    plain = project.admin.create_app(name="a-plain")
    rich = project.admin.create_app(
        name="b-rich",
        env={"DATABASE_PASSWORD": "s3cr3t-value", "LOG_LEVEL": "debug"},
        healthcheck={"type": "http", "path": "/healthz", "period_seconds": 5},
        resources={"cpu": "250m", "memory": "128Mi"},
    )
    finish(local.settings, project.admin.deployments(rich["id"])[0]["id"])
    listed = project.viewer.call("GET", "/apps", 200)
    assert [a["name"] for a in listed.json()] == ["a-plain", "b-rich"]
    for item in listed.json():
        assert item == project.viewer.call("GET", f"/apps/{item['id']}", 200).json()
    shown = listed.json()[1]
    assert shown["env"] == {"DATABASE_PASSWORD": "********", "LOG_LEVEL": "debug"} and "s3cr3t-value" not in listed.text
    assert shown["healthcheck"]["path"] == "/healthz" and shown["resources"]["cpu"] == "250m"
    assert shown["last_deploy_at"] and shown["created_at"].endswith("Z") and listed.json()[0]["healthcheck"] is None
    assert plain["env"] == {} and listed.json()[0]["env"] == {}
    # One page is the same items.
    assert project.viewer.call("GET", "/apps", 200, params={"limit": 1}).json() == listed.json()[:1]


@pytest.mark.parametrize("limit", [0, -1, 201, "ten", 1.5])
def test_limit_is_1_to_200(project, busy_app, limit):
    app = busy_app
    for path in ("/apps", f"/apps/{app['id']}/deployments", f"/apps/{app['id']}/audit", f"/apps/{app['id']}/events"):
        response = project.viewer.call("GET", path, params={"limit": limit})
        assert response.status_code == 422, (path, limit, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize(
    "cursor",
    [_cursor({"a": 1}), _cursor([1, 2]), _cursor("abc"), _cursor(10**30), _cursor(-1), _cursor(True), _cursor(1.5), _cursor(None), _cursor(""), "%%%", "e30", "x" * 2000],
)
def test_a_malformed_cursor_is_a_422_naming_cursor_on_every_list(project, busy_app, cursor):
    app = busy_app
    paths = [f"/apps/{app['id']}/deployments", f"/apps/{app['id']}/audit"]
    if cursor != _cursor("abc"):
        paths.append("/apps")  # the apps list pages by name: a string is its kind of cursor
    for path in paths:
        response = project.viewer.call("GET", path, params={"cursor": cursor, "limit": 5})
        if cursor == _cursor(None):
            # No cursor at all: the first page.
            assert response.status_code == 200, (path, response.text)
            continue
        assert response.status_code == 422, (path, cursor, response.status_code, response.text)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["query", "cursor"], detail
        assert cursor not in response.text


@pytest.mark.parametrize("cursor", ["%%%", "e30x", "x" * 2000])
def test_a_cursor_that_does_not_decode_is_a_422_on_the_events_list_too(project, busy_app, cursor):
    """(Answered before Kubernetes is asked; a cursor of the wrong kind needs the
    events themselves: tests/api covers it.)"""
    response = project.viewer.call("GET", f"/apps/{busy_app['id']}/events", params={"cursor": cursor, "limit": 5})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
