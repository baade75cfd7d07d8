"""Lists follow the contract: without `limit` the whole list, with `limit` one
page; a cursor this API did not give out is a 422 naming `cursor`."""

from __future__ import annotations

import base64
import json

import pytest


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_without_limit_a_list_is_the_whole_list(api, deployed_app):
    app, _ = deployed_app
    for i in range(55):
        api.call("PATCH", f"/apps/{app['id']}", 200, json={"progress_deadline_seconds": 600 + i})
    audit = api.call("GET", f"/apps/{app['id']}/audit", 200)
    assert len(audit.json()) >= 56 and "X-Next-Cursor" not in audit.headers
    page = api.call("GET", f"/apps/{app['id']}/audit", 200, params={"limit": 50})
    assert len(page.json()) == 50 and page.headers["X-Next-Cursor"]
    rest = api.call("GET", f"/apps/{app['id']}/audit", 200, params={"limit": 200, "cursor": page.headers["X-Next-Cursor"]})
    assert page.json() + rest.json() == audit.json()
    # A name is the apps list's kind of cursor: apps after it, not an error.
    after = api.call("GET", "/apps", 200, params={"cursor": _cursor(app["name"]), "limit": 200}).json()
    assert all(a["name"] > app["name"] for a in after)


@pytest.mark.parametrize(
    "cursor",
    [_cursor({"a": 1}), _cursor([1, 2]), _cursor("abc"), _cursor(10**30), _cursor(-1), _cursor(True), _cursor(1.5), "%%%", "e30", "x" * 2000],
)
def test_a_malformed_cursor_is_a_422_naming_cursor_on_every_list(api, deployed_app, cursor):
    app, _ = deployed_app
    paths = [f"/apps/{app['id']}/deployments", f"/apps/{app['id']}/audit", f"/apps/{app['id']}/events"]
    if cursor != _cursor("abc"):
        paths.append("/apps")  # the apps list pages by name: a string is its kind of cursor
    for path in paths:
        response = api.call("GET", path, params={"cursor": cursor, "limit": 5})
        assert response.status_code == 422, (path, cursor, response.status_code, response.text)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["query", "cursor"], detail
        assert cursor not in response.text
