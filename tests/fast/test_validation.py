"""Input the API refuses before it writes anything: a 422 that names the field
and the rule it breaks, and never repeats the value (it may be a secret pasted
in the wrong place); a 413 for a body over its limit, before the token is read."""

from __future__ import annotations

import uuid

import pytest

from api.limits import MULTIPART_MARGIN
from tests.support.api_client import DEMO_IMAGE, HOSTILE_IMAGES, assert_422_naming, upload_app
from tests.support.in_process import UPLOAD_MAX_BYTES, finish, rows

GOOD = {"name": "ok-name", "image_url": f"{DEMO_IMAGE}:v1"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name!!", "image_url": None}, None),
        ({"name": "-", "image_url": GOOD["image_url"]}, "name"),
        ({"name": "x" * 64, "image_url": GOOD["image_url"]}, "name"),
        ({"name": "", "image_url": GOOD["image_url"]}, "name"),
        ({"image_url": GOOD["image_url"]}, "name"),
        ({**GOOD, "source_type": "ftp"}, "source_type"),
        ({"name": "ok-name"}, None),
        ({"name": "ok-name", "source_type": "git"}, None),
        ({**GOOD, "image_url": "UPPER/Case:tag"}, "image_url"),
        ({**GOOD, "port": 0}, "port"),
        ({**GOOD, "port": 70000}, "port"),
        ({**GOOD, "port": "http"}, "port"),
        ({**GOOD, "replicas": -1}, "replicas"),
        ({**GOOD, "replicas": 10_000}, "replicas"),
        ({**GOOD, "replicas": 51}, "replicas"),
        ({**GOOD, "progress_deadline_seconds": 5}, "progress_deadline_seconds"),
        ({**GOOD, "env": {"1BAD": "x"}}, "env"),
        ({**GOOD, "env": {"PORT": 8080}}, "env"),
        ({**GOOD, "env": ["A=b"]}, "env"),
        ({**GOOD, "template_id": "no-such"}, "template_id"),
        ({**GOOD, "colour": "red"}, "colour"),
    ],
)
def test_bad_create_input_is_a_422_naming_the_field_and_writes_nothing(local, project, body, field):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if field is not None:
        assert any(field in [str(part) for part in error["loc"]] for error in detail), detail
    assert all(error["msg"] for error in detail)
    assert rows(local.settings) == before


def test_replicas_above_the_platforms_maximum_name_the_setting(local, project):
    response = project.admin.call("POST", "/apps", json={**GOOD, "replicas": local.settings.max_replicas + 1})
    assert_422_naming(response, "replicas")
    assert "CONVEYOR_MAX_REPLICAS" in response.text
    app = project.admin.create_app(replicas=local.settings.max_replicas)
    scaled = project.admin.call("PATCH", f"/apps/{app['id']}", json={"replicas": local.settings.max_replicas + 1})
    assert_422_naming(scaled, "replicas")


def test_validation_errors_never_echo_secret_values(project):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    response = project.admin.call("POST", "/apps", json={**GOOD, "env": {"DB PASSWORD": secret}})
    assert response.status_code == 422
    assert secret not in response.text and "DB PASSWORD" not in response.text


def test_bad_update_input_is_a_422_and_changes_nothing(local, project):
    app = project.admin.create_app(env={"GREETING": "hello"})
    path = f"/apps/{app['id']}"
    before = rows(local.settings)
    for body, field in (
        ({"port": 0}, "port"),
        ({"port": None}, "port"),
        ({"replicas": None}, "replicas"),
        ({"replicas": -1}, "replicas"),
        ({"env": {"bad-key": "x"}}, "env"),
        ({"name": "x"}, "name"),
        ({"source_type": "git"}, "source_type"),
        ({"progress_deadline_seconds": 7200}, "progress_deadline_seconds"),
    ):
        response = project.admin.call("PATCH", path, json=body)
        assert_422_naming(response, field)
    assert rows(local.settings) == before
    assert project.admin.call("GET", path, 200).json() == app
    assert len(project.admin.deployments(app["id"])) == 1


# --- image references ---------------------------------------------------------


def test_hostile_image_references_are_refused_before_anything_is_written(local, project):
    before = rows(local.settings)
    for image in HOSTILE_IMAGES:
        response = project.admin.call("POST", "/apps", json={"name": unique("h"), "image_url": image})
        assert_422_naming(response, "image_url", image)
    assert rows(local.settings) == before

    good = project.admin.create_app()
    before = rows(local.settings)
    for image in HOSTILE_IMAGES:
        assert_422_naming(project.admin.call("PATCH", f"/apps/{good['id']}", json={"image_url": image}), "image_url", image)
    assert rows(local.settings) == before
    assert project.admin.call("GET", f"/apps/{good['id']}", 200).json()["image_url"] == good["image_url"]


@pytest.mark.parametrize(
    "image",
    [
        "web",
        "registry.test/demo/web",
        "registry.test:5000/team_a/web-app.v2__x:1.0-rc_1",
        DEMO_IMAGE + ":v1",  # the platform's registry, on loopback: allowed
        "8.8.4.4:5000/demo/web:v1",
        "[2606:4700::1111]:5000/demo/web:v1",
        "registry.test/demo/web@sha256:" + "a" * 64,
        "registry.test/demo/web:v1@sha512:" + "b" * 128,
        "registry.test/" + "a" * 240 + ":" + "t" * 128,
    ],
)
def test_well_formed_image_references_are_taken(project, image):
    assert project.admin.call("POST", "/apps", 201, json={"name": unique("i"), "image_url": image}).json()["image_url"] == image


# --- env --------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"K" * 254: "x"},
        {"K" * 10_000: "x"},
        {"bad-key": "x"},
        {"KEY\n": "x"},
        {"": "x"},
        {"BIG": "x" * (32 * 1024 + 1)},
        {"NUL": "a\x00b"},
        {f"V{i}": "x" * 30_000 for i in range(9)},
        {f"K{i}": "x" for i in range(201)},
    ],
    ids=["254-chars", "10000-chars", "dash", "newline", "empty", "value-too-big", "nul", "total-too-big", "201-keys"],
)
def test_bad_env_is_a_422_on_create(local, project, env):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={"name": unique("e"), "image_url": GOOD["image_url"], "env": env})
    assert_422_naming(response, "env")
    for key in env:
        if len(key) >= 5:
            assert key not in response.text
    assert rows(local.settings) == before


def test_env_at_its_limits_is_taken(project):
    at_limits = {"K" * 253: "x" * (32 * 1024), **{f"K{i}": "v" for i in range(199)}}
    app = project.admin.create_app(env=at_limits)
    assert set(app["env"]) == set(at_limits)


def test_bad_env_keys_on_update_leave_the_app_updatable(local, project):
    app = project.admin.create_app(env={"GREETING": "hello"})
    finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    path = f"/apps/{app['id']}"
    assert_422_naming(project.admin.call("PATCH", path, json={"env": {"K" * 300: "x"}}), "env")
    assert_422_naming(project.admin.call("PATCH", path, json={"env": {"K" * 10_000: "x"}}), "env")
    assert project.admin.call("GET", path, 200).json()["env"] == {"GREETING": "hello"}
    # Each patch within the limits, the merged env beyond them: refused as well.
    halves = [{f"A{i}": "x" * 30_000 for i in range(5)}, {f"B{i}": "x" * 30_000 for i in range(5)}]
    big = project.admin.call("PATCH", path, 202, json={"env": halves[0]}).json()
    before = rows(local.settings)
    merged = project.admin.call("PATCH", path, json={"env": halves[1]})
    assert_422_naming(merged, "env")
    assert "together" in merged.text
    assert rows(local.settings) == before
    assert set(project.admin.call("GET", path, 200).json()["env"]) == set(big["env"])
    # A valid update afterwards deploys; a key set to null is removed.
    project.admin.call("PATCH", path, 202, json={"env": {"LATER_KEY": "fine", **dict.fromkeys(halves[0])}})
    latest = project.admin.deployments(app["id"])[0]
    assert latest["operation"] == "update" and latest["env_keys"] == ["GREETING", "LATER_KEY"]


# --- one-line fields, branches, repository URLs -------------------------------


@pytest.mark.parametrize("command", ["npm ci\nrm -rf /", "make\r", "make\x00", "make\u2028x", "make\u2029", "make\x85"])
def test_build_command_is_one_line(local, project, command):
    before = rows(local.settings)
    body = {"name": unique("b"), "source_type": "upload", "build_command": command}
    assert_422_naming(project.admin.call("POST", "/apps", json=body), "build_command")
    assert rows(local.settings) == before
    app = project.admin.call("POST", "/apps", 201, json={**body, "build_command": "make"}).json()
    assert_422_naming(project.admin.call("PATCH", f"/apps/{app['id']}", json={"build_command": command}), "build_command")
    changed = project.admin.call("PATCH", f"/apps/{app['id']}", 200, json={"build_command": "make all"}).json()
    assert changed["build_command"] == "make all"


@pytest.mark.parametrize("field", ["name", "template_id"])
def test_name_and_template_id_are_one_line(project, field):
    body = {**GOOD, "name": unique("n"), field: "hello-web\nx"}
    assert_422_naming(project.admin.call("POST", "/apps", json=body), field)


@pytest.mark.parametrize(
    "branch", ["-upload-pack=touch", "a..b", "a b", "main.lock", "x~1", "a\nb", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "/main", "main/", "a//b", "a@{1}", ".hidden", "\x7f"]
)
def test_repo_branch_must_be_a_branch_name(local, project, branch):
    before = rows(local.settings)
    body = {"name": unique("g"), "source_type": "git", "repo_url": "https://git.test/r.git", "repo_branch": branch}
    response = project.admin.call("POST", "/apps", json=body)
    assert_422_naming(response, "repo_branch")
    assert rows(local.settings) == before
    app = project.admin.call("POST", "/apps", 201, json={**body, "repo_branch": "feature/x-1.2"}).json()
    assert_422_naming(project.admin.call("PATCH", f"/apps/{app['id']}", json={"repo_branch": branch}), "repo_branch")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://git.test/r.git",
        "ftp://git.test/r.git",
        "git://git.test/r.git",
        "ext::sh -c touch% /tmp/pwned",
        "/srv/git/r.git",
        "https://git.test/r .git",
        "https://git.test/r\n.git",
        "https://git.test/r\x00.git",
        "https://git.test/" + "r" * 1100,
    ],
)
def test_repo_url_must_use_an_allowed_scheme(local, project, url):
    before = rows(local.settings)
    response = project.admin.call("POST", "/apps", json={"name": unique("r"), "source_type": "git", "repo_url": url, "port": 8080})
    assert_422_naming(response, "repo_url")
    assert rows(local.settings) == before


@pytest.mark.parametrize("url", ["https://git.test/team/r.git", "ssh://git@git.test/team/r.git"])
def test_allowed_repo_url_schemes_are_taken(project, url):
    app = project.admin.call("POST", "/apps", 201, json={"name": unique("r"), "source_type": "git", "repo_url": url}).json()
    assert app["repo_url"] == url and app["repo_branch"] == "main"


def test_only_image_apps_take_an_image(local, project):
    app = upload_app(project.admin)
    before = rows(local.settings)
    response = project.admin.call("PATCH", f"/apps/{app['id']}", json={"image_url": f"{DEMO_IMAGE}:v1"})
    assert_422_naming(response, "image_url")
    assert rows(local.settings) == before


# --- 422s never repeat what they refuse -----------------------------------------


def test_no_422_repeats_the_value_it_refuses(project):
    app = project.admin.create_app()
    path = f"/apps/{app['id']}"
    good = {"name": "echo-test", "image_url": f"{DEMO_IMAGE}:v1"}
    create_cases = [
        ({"name": "ECHO_NAME_1\nx"}, "name", "ECHO_NAME_1"),
        ({"image_url": "127.0.0.1:5000/ECHO_IMAGE_2:v1"}, "image_url", "ECHO_IMAGE_2"),
        ({"image_url": "127.0.0.1:5000/x:ECHO_TAG_3!"}, "image_url", "ECHO_TAG_3"),
        ({"env": {"ECHO-KEY-4": "x"}}, "env", "ECHO-KEY-4"),
        ({"env": {"ECHO_KEY_5": 12345}}, "env", "ECHO_KEY_5"),
        ({"env": {"OK": "ECHO_VALUE_6" + "x" * 40_000}}, "env", "ECHO_VALUE_6"),
        ({"port": "ECHO_PORT_7"}, "port", "ECHO_PORT_7"),
        ({"replicas": 987_654_321}, "replicas", "987654321"),
        ({"template_id": "ECHO_TEMPLATE_8"}, "template_id", "ECHO_TEMPLATE_8"),
        ({"source_type": "ECHO_SOURCE_9"}, "source_type", "ECHO_SOURCE_9"),
        ({"source_type": "git", "repo_url": "ftpx://ECHO_REPO_10/x"}, "repo_url", "ECHO_REPO_10"),
        ({"source_type": "git", "repo_url": "https://example.com/x", "repo_branch": "-ECHO_BRANCH_11"}, "repo_branch", "ECHO_BRANCH_11"),
        ({"source_type": "upload", "build_command": "ECHO_BUILD_12\nx"}, "build_command", "ECHO_BUILD_12"),
        ({"progress_deadline_seconds": "ECHO_DEADLINE_13"}, "progress_deadline_seconds", "ECHO_DEADLINE_13"),
        ({"ECHO_FIELD_21": "ECHO_EXTRA_22"}, "ECHO_FIELD_21", "ECHO_EXTRA_22"),
    ]
    for fields, field, marker in create_cases:
        response = project.admin.call("POST", "/apps", json={**good, **fields})
        assert_422_naming(response, field)
        assert marker not in response.text, (field, response.text)
    for fields, field, marker in [
        ({"image_url": "ECHO_IMAGE_14-:5000/x"}, "image_url", "ECHO_IMAGE_14"),
        ({"env": {"ECHO KEY 15": "x"}}, "env", "ECHO KEY 15"),
        ({"port": "ECHO_PORT_16"}, "port", "ECHO_PORT_16"),
    ]:
        response = project.admin.call("PATCH", path, json=fields)
        assert_422_naming(response, field)
        assert marker not in response.text, (field, response.text)
    for params, field, marker in [
        ({"cursor": "ECHO_CURSOR_17!"}, "cursor", "ECHO_CURSOR_17"),
        ({"limit": "ECHO_LIMIT_18"}, "limit", "ECHO_LIMIT_18"),
    ]:
        response = project.admin.call("GET", "/apps", params=params)
        assert_422_naming(response, field)
        assert marker not in response.text
    response = project.admin.call("GET", f"{path}/logs", params={"since": "ECHO_SINCE_19"})
    assert_422_naming(response, "since")
    assert "ECHO_SINCE_19" not in response.text
    response = project.admin.call("POST", f"{path}/restart", headers={"Idempotency-Key": "ECHO_KEY_20" * 30})
    assert_422_naming(response, "Idempotency-Key")
    assert "ECHO_KEY_20" not in response.text


# --- bodies are bounded before anything reads them ---------------------------------


def test_bodies_over_their_limit_are_a_413_before_the_token_is_read(local, project):
    """By their Content-Length, each route's limit: JSON bodies 1 MiB, uploads
    CONVEYOR_UPLOAD_MAX_BYTES. (A body streamed past its limit is refused as it
    streams: tests/api/test_access_and_validation.py, through a real server.)"""
    app = upload_app(project.admin)
    before = rows(local.settings)
    big = local.http.post("/api/v1/apps", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413 and "body" in big.json()["detail"], big.text
    form = b'--b\r\nContent-Disposition: form-data; name="file"; filename="src.tar"\r\n\r\n' + b"x" * (2 * UPLOAD_MAX_BYTES) + b"\r\n--b--\r\n"
    for headers in ({}, {"Authorization": f"Bearer {project.tokens['deployer']}"}):
        upload = local.http.post(
            f"/api/v1/apps/{app['id']}/build", content=form, headers={"content-type": "multipart/form-data; boundary=b", **headers}
        )
        assert upload.status_code == 413 and str(UPLOAD_MAX_BYTES + MULTIPART_MARGIN) in upload.text, upload.text
    assert rows(local.settings) == before
    # Within the limit, the route answers as before (here: no token).
    assert local.http.post("/api/v1/apps", json={"name": "x"}).status_code == 401
    small = local.http.post(f"/api/v1/apps/{app['id']}/build", content=form[: UPLOAD_MAX_BYTES // 2], headers={"content-type": "multipart/form-data; boundary=b"})
    assert small.status_code == 401, small.text
