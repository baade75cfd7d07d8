"""Roles, project isolation and input validation of the Apps API."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from api.main import ROUTERS, create_app
from conveyor.clients import telemetry
from conveyor.clients.db.models import App
from conveyor.clients.db.session import session_scope
from tests.api.conftest import DEMO_IMAGE, Api
from tests.git_https import GitHttpsServer
from tests.helpers import eventually


def count_apps(api: Api) -> int:
    return len(api.call("GET", "/apps", 200).json())


def test_every_route_needs_a_valid_bearer_token(api, settings):
    anonymous = httpx.get(f"{settings.api_url}/api/v1/apps")
    assert anonymous.status_code == 401 and "Bearer" in anonymous.text
    wrong = httpx.get(f"{settings.api_url}/api/v1/apps", headers={"Authorization": "Bearer cvy_not-a-token"})
    assert wrong.status_code == 401


def test_role_limits(api, settings, make_token, deployed_app):
    app, first = deployed_app
    viewer = Api(settings.api_url, make_token("viewer")[0])
    deployer_token, deployer_name = make_token("deployer")
    deployer = Api(settings.api_url, deployer_token)
    path = f"/apps/{app['id']}"

    # viewer: reads only
    for read in (path, f"{path}/status", f"{path}/pods", f"{path}/deployments", f"{path}/audit", "/apps"):
        viewer.call("GET", read, 200)
    for method, target, body in (
        ("POST", f"{path}/deploy", None),
        ("POST", f"{path}/restart", None),
        ("POST", f"{path}/deployments/{first['id']}/revert", None),
        ("PATCH", path, {"replicas": 3}),
        ("DELETE", path, None),
        ("POST", "/apps", {"name": "nope", "image_url": "127.0.0.1:5000/demo/web:v1"}),
    ):
        assert viewer.call(method, target, json=body).status_code == 403, (method, target)

    # deployer: deploy, restart, revert, scale; not config changes, create or delete
    dep = deployer.call("POST", f"{path}/deploy", 202).json()
    assert dep["created_by"] == deployer_name
    api.wait_finished(app["id"], dep["id"])
    deployer.call("PATCH", path, 202, json={"replicas": 3})
    assert deployer.call("PATCH", path, json={"env": {"A": "b"}}).status_code == 403
    assert deployer.call("DELETE", path).status_code == 403
    assert deployer.call("POST", "/apps", json={"name": "nope", "image_url": "127.0.0.1:5000/demo/web:v1"}).status_code == 403
    restart = deployer.call("POST", f"{path}/restart", 202).json()
    api.wait_finished(app["id"], restart["id"])
    revert = deployer.call("POST", f"{path}/deployments/{first['id']}/revert", 202).json()
    api.wait_finished(app["id"], revert["id"])

    users = {entry["user"] for entry in api.call("GET", f"{path}/audit", 200).json()}
    assert {"admin", deployer_name} <= users


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name!!", "image_url": None}, None),
        ({"name": "-", "image_url": "127.0.0.1:5000/demo/web:v1"}, "name"),
        ({"name": "x" * 64, "image_url": "127.0.0.1:5000/demo/web:v1"}, "name"),
        ({"name": "ok-name", "source_type": "ftp", "image_url": "127.0.0.1:5000/demo/web:v1"}, "source_type"),
        ({"name": "ok-name"}, None),
        ({"name": "ok-name", "image_url": "UPPER/Case:tag"}, "image_url"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "port": 0}, "port"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "port": 70000}, "port"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "replicas": -1}, "replicas"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "replicas": 10_000}, "replicas"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "env": {"1BAD": "x"}}, "env"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "env": {"PORT": 8080}}, "env"),
        ({"name": "ok-name", "image_url": "127.0.0.1:5000/demo/web:v1", "colour": "red"}, "colour"),
    ],
)
def test_bad_create_input_is_a_422_naming_the_field_and_writes_nothing(api, body, field):
    before = count_apps(api)
    response = api.call("POST", "/apps", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if field is not None:
        assert any(field in [str(part) for part in error["loc"]] for error in detail), detail
    assert all(error["msg"] for error in detail)
    assert count_apps(api) == before


def test_validation_errors_never_echo_secret_values(api):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    response = api.call(
        "POST", "/apps", json={"name": "leaky", "image_url": "127.0.0.1:5000/demo/web:v1", "env": {"DB PASSWORD": secret}}
    )
    assert response.status_code == 422
    assert secret not in response.text


def test_secret_env_values_are_masked_in_responses_and_absent_from_audit(api, deployed_app):
    app, first = deployed_app
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    updated = api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"API_TOKEN": secret}}).json()
    assert updated["env"]["API_TOKEN"] == "********"
    assert secret not in api.call("GET", f"/apps/{app['id']}", 200).text
    assert secret not in api.call("GET", f"/apps/{app['id']}/audit", 200).text
    assert secret not in api.call("GET", f"/apps/{app['id']}/deployments", 200).text


def test_duplicate_name_is_409_and_unknown_app_is_404(api, deployed_app):
    app, first = deployed_app
    before = count_apps(api)
    response = api.call("POST", "/apps", json={"name": app["name"], "image_url": "127.0.0.1:5000/demo/web:v1"})
    assert response.status_code == 409 and app["name"] in response.text
    assert count_apps(api) == before
    assert api.call("GET", "/apps/app_doesnotexist").status_code == 404
    assert api.call("POST", "/apps/app_doesnotexist/deploy").status_code == 404
    assert api.call("GET", f"/apps/{app['id']}/deployments/dep_nope").status_code == 404


def test_unknown_ids_are_a_404_that_does_not_repeat_them(api, deployed_app):
    app, first = deployed_app
    hostile = "ECHO_ID_<img src=x onerror=alert(1)>" + "z" * 5000
    for method, path, params in [
        ("GET", f"/apps/{hostile}", None),
        ("DELETE", f"/apps/{hostile}", None),
        ("GET", f"/apps/{app['id']}/deployments/{hostile}", None),
        ("GET", f"/apps/{app['id']}/deployments/{hostile}/progress", None),
        ("POST", f"/apps/{app['id']}/deployments/{hostile}/cancel", None),
        ("GET", f"/apps/{app['id']}/build-log", {"build_id": hostile}),
        ("GET", f"/apps/{app['id']}/logs", {"pod": hostile}),
    ]:
        response = api.call(method, path, params=params)
        assert response.status_code == 404, (method, path[:60], response.status_code, response.text[:200])
        assert "ECHO_ID" not in response.text and "onerror" not in response.text, (method, path[:60], response.text[:200])


def test_bad_update_input_is_a_422_and_changes_nothing(api, deployed_app):
    app, first = deployed_app
    for body, field in (({"port": 0}, "port"), ({"replicas": None}, "replicas"), ({"env": {"bad-key": "x"}}, "env"), ({"name": "x"}, "name")):
        response = api.call("PATCH", f"/apps/{app['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text
    assert api.call("GET", f"/apps/{app['id']}", 200).json() == api.call("GET", f"/apps/{app['id']}", 200).json()
    assert len(api.deployments(app["id"])) == 1


def test_openapi_documents_every_field(api, settings):
    spec = httpx.get(f"{settings.api_url}/openapi.json").json()
    create = spec["components"]["schemas"]["AppCreate"]["properties"]
    for field in ("name", "source_type", "image_url", "repo_url", "repo_branch", "build_command", "port", "replicas", "env", "template_id"):
        assert create[field].get("description"), field
    assert "/api/v1/apps/{app_id}/deployments/{deployment_id}/revert" in spec["paths"]
    assert httpx.get(f"{settings.api_url}/docs").status_code == 200


# --- projects ------------------------------------------------------------


def cli(*args: str) -> str:
    """The `conveyor` command as an operator runs it, on this session's platform."""
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli.main", *args], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def new_project(settings) -> tuple[str, Api]:
    """A project made by `conveyor project create`, and an admin token of it from `conveyor token create`."""
    project_id = cli("project", "create", f"team-{uuid.uuid4().hex[:8]}")
    token = cli("token", "create", "--project", project_id, "--role", "admin", "--name", "team-admin")
    return project_id, Api(settings.api_url, token)


def workflows_of_project(settings, project_id: str) -> list:
    async def listing():
        temporal = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        return [w async for w in temporal.list_workflows(f"ProjectId = '{project_id}'")]

    return asyncio.run(listing())


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route about one app, read from the routers the API mounts."""
    routes = []
    for router in ROUTERS:
        for route in router.routes:
            assert hasattr(route, "methods"), f"{route!r}: teach this test about nested routers"
            if "{app_id}" in route.path:
                routes += [(method, "/api/v1" + route.path) for method in sorted(route.methods)]
    # Routes declared on the app itself must not be about apps, or they would be missed above.
    mounted = {(m, r.path) for r in create_app().routes if hasattr(r, "methods") for m in r.methods}
    assert not {(m, p) for m, p in mounted if "{app_id}" in p} - set(routes)
    return routes


def source_tarball() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        content = b"FROM scratch\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return data.getvalue()


# A valid request body for every app route that takes one: an invalid body would
# be a 422 before the app is even looked up, proving nothing about isolation.
VALID_BODIES = {
    ("PATCH", "/api/v1/apps/{app_id}"): {"json": {"replicas": 1}},
    ("PUT", "/api/v1/apps/{app_id}"): {"json": {"replicas": 1}},
    ("POST", "/api/v1/apps/{app_id}/build"): {"files": {"file": ("src.tar.gz", source_tarball())}},
}


def test_a_token_of_another_project_gets_404_on_every_route_of_an_app(api, settings, kube_api, deployed_app):
    app, first = deployed_app
    project_b, b = new_project(settings)
    routes = app_routes()
    assert len(routes) >= 20, routes
    with_body = {
        (method, "/api/v1" + route.path)
        for router in ROUTERS
        for route in router.routes
        if "{app_id}" in route.path and route.dependant.body_params
        for method in route.methods
    }
    assert with_body <= set(VALID_BODIES), f"give these routes a valid body in VALID_BODIES: {with_body - set(VALID_BODIES)}"

    for method, template in routes:
        path = template.format(app_id=app["id"], deployment_id=first["id"]).removeprefix("/api/v1")
        response = b.call(method, path, **VALID_BODIES.get((method, template), {}))
        assert response.status_code == 404, (method, template, response.status_code, response.text)
        # The app check answered, not some later one (the deployment exists in A).
        assert response.json()["detail"] == "app not found", (method, template, response.text)

    # Nothing happened to A's app, and B's list does not show it.
    assert [d["id"] for d in api.deployments(app["id"])] == [first["id"]]
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["status"] == "running"
    assert app["id"] not in {a["id"] for a in b.call("GET", "/apps", 200).json()}

    # The same name in B is another app, in B's own namespace.
    twin = b.create_app(name=app["name"], image_url=f"{DEMO_IMAGE}:v2")
    assert twin["project_id"] == project_b and twin["id"] != app["id"]
    b.wait_active(twin["id"], b.deployments(twin["id"])[-1]["id"])
    assert {a["id"] for a in b.call("GET", "/apps", 200).json()} == {twin["id"]}
    kube = k8s.AppsV1Api(kube_api)
    namespace_a, namespace_b = settings.project_namespace("proj_default"), settings.project_namespace(project_b)
    assert namespace_a != namespace_b
    in_b = kube.read_namespaced_deployment(twin["slug"], namespace_b)
    in_a = kube.read_namespaced_deployment(app["slug"], namespace_a)
    assert in_b.spec.template.spec.containers[0].image.startswith(f"{DEMO_IMAGE}:v2@sha256:")
    assert in_a.spec.template.spec.containers[0].image.startswith(f"{DEMO_IMAGE}:v1@sha256:")
    assert in_b.metadata.uid != in_a.metadata.uid
    # And A's token cannot reach B's app either.
    assert api.call("GET", f"/apps/{twin['id']}").status_code == 404


# --- image references ----------------------------------------------------

HOSTILE_IMAGES = [
    "-127.0.0.1:5000/x:v1",  # a host that reads as an option, and made the worker look it up
    "127.0.0.1:99999/x:v1",
    "127.0.0.1:0/x:v1",
    "127.0.0.1:/x:v1",
    "127.0.0.999:5000/x:v1",
    "reg_istry.example.com/x:v1",
    "[::1:5000/x:v1",
    "127.0.0.1:5000/Demo/web:v1",
    "127.0.0.1:5000//web:v1",
    "127.0.0.1:5000/demo/web/:v1",
    "127.0.0.1:5000/demo/web:",
    "127.0.0.1:5000/demo/web:.v1",
    "127.0.0.1:5000/demo/web:v1@sha256:abc",
    "127.0.0.1:5000/demo/web:v1\n",
    "127.0.0.1:5000/" + "a" * 300 + ":v1",
]


def assert_422_naming(response: httpx.Response, field: str, refused: str | None = None) -> None:
    assert response.status_code == 422, response.text
    assert any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"]), response.text
    if refused is not None:
        assert refused.strip() not in response.text


def test_hostile_image_references_are_refused_before_anything_is_written(settings):
    project, b = new_project(settings)
    for image in HOSTILE_IMAGES:
        assert_422_naming(b.call("POST", "/apps", json={"name": f"h-{uuid.uuid4().hex[:6]}", "image_url": image}), "image_url", image)
    assert b.call("GET", "/apps", 200).json() == []

    good = b.create_app()
    dep = b.deployments(good["id"])[-1]
    b.wait_active(good["id"], dep["id"])
    for image in HOSTILE_IMAGES:
        assert_422_naming(b.call("PATCH", f"/apps/{good['id']}", json={"image_url": image}), "image_url", image)
    assert b.call("GET", f"/apps/{good['id']}", 200).json()["image_url"] == good["image_url"]
    assert [d["id"] for d in b.deployments(good["id"])] == [dep["id"]]
    # Visibility shows the good app's workflows, so it would show any other.
    found = eventually(lambda: workflows_of_project(settings, project), 20, what="the good app's workflows")
    app_ids = {w.typed_search_attributes.get(SearchAttributeKey.for_keyword("AppId")) for w in found}
    assert app_ids == {good["id"]}, found
    with session_scope(settings.effective_database_url) as session:
        assert [a.id for a in session.query(App).filter(App.project_id == project)] == [good["id"]]


# --- env -----------------------------------------------------------------


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
    ],
    ids=["254-chars", "10000-chars", "dash", "newline", "empty", "value-too-big", "nul", "total-too-big"],
)
def test_bad_env_is_a_422_on_create(api, env):
    before = count_apps(api)
    response = api.call("POST", "/apps", json={"name": f"e-{uuid.uuid4().hex[:6]}", "image_url": f"{DEMO_IMAGE}:v1", "env": env})
    assert_422_naming(response, "env")
    assert count_apps(api) == before


def test_bad_env_keys_on_update_leave_the_app_updatable(api, deployed_app):
    app, first = deployed_app
    path = f"/apps/{app['id']}"
    assert_422_naming(api.call("PATCH", path, json={"env": {"K" * 300: "x"}}), "env")
    assert_422_naming(api.call("PATCH", path, json={"env": {"K" * 10_000: "x"}}), "env")
    assert api.call("GET", path, 200).json()["env"] == {"GREETING": "hello"}
    # Each patch within the limits, the merged env beyond them: refused as well.
    halves = [{f"A{i}": "x" * 30_000 for i in range(5)}, {f"B{i}": "x" * 30_000 for i in range(5)}]
    big = api.call("PATCH", path, 202, json={"env": halves[0]}).json()
    api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert_422_naming(api.call("PATCH", path, json={"env": halves[1]}), "env")
    assert set(api.call("GET", path, 200).json()["env"]) == set(big["env"])
    # A valid update afterwards deploys.
    api.call("PATCH", path, 202, json={"env": {"LATER_KEY": "fine", **{k: None for k in halves[0]}}})
    latest = api.deployments(app["id"])[0]
    assert api.wait_active(app["id"], latest["id"])["env_keys"] == ["GREETING", "LATER_KEY"]


# --- one-line fields -----------------------------------------------------


@pytest.mark.parametrize("command", ["npm ci\nrm -rf /", "make\r", "make\x00", "make\u2028x"])
def test_build_command_is_one_line(api, command):
    before = count_apps(api)
    body = {"name": f"b-{uuid.uuid4().hex[:6]}", "source_type": "upload", "build_command": command}
    assert_422_naming(api.call("POST", "/apps", json=body), "build_command")
    assert count_apps(api) == before
    app = api.call("POST", "/apps", 201, json={**body, "build_command": "make"}).json()
    assert_422_naming(api.call("PATCH", f"/apps/{app['id']}", json={"build_command": command}), "build_command")
    assert api.call("PATCH", f"/apps/{app['id']}", 200, json={"build_command": "make all"}).json()["build_command"] == "make all"


@pytest.mark.parametrize("branch", ["-upload-pack=touch", "a..b", "a b", "main.lock", "x~1", "a\nb"])
def test_repo_branch_must_be_a_branch_name(api, branch):
    body = {"name": f"g-{uuid.uuid4().hex[:6]}", "source_type": "git", "repo_url": "https://example.com/r.git", "repo_branch": branch}
    assert_422_naming(api.call("POST", "/apps", json=body), "repo_branch")


# --- credentials in repository URLs --------------------------------------


@pytest.fixture
def missing_repo(tmp_path, settings):
    """A real git server over HTTPS that has no such repository: the deploy
    fails at once (a permanent error), with the URL in its reason."""
    (tmp_path / "repos").mkdir()
    with GitHttpsServer(tmp_path / "repos", tmp_path, settings.effective_git_ca_dir) as server:
        yield server.port


def test_repo_url_credentials_are_masked_in_every_answer_and_the_audit(api, settings, missing_repo):
    secret = f"pw-{uuid.uuid4().hex}"
    url = f"https://alice:{secret}@127.0.0.1:{missing_repo}/team/app.git"
    shown = f"https://alice:***@127.0.0.1:{missing_repo}/team/app.git"
    body = {"name": f"git-{uuid.uuid4().hex[:6]}", "source_type": "git", "repo_url": url}
    created = api.call("POST", "/apps", 201, json=body).json()
    assert created["repo_url"] == shown
    app_id = created["id"]
    patched = api.call("PATCH", f"/apps/{app_id}", json={"repo_branch": "develop"})
    assert patched.status_code in (200, 202) and patched.json()["repo_url"] == shown
    dep = api.deployments(app_id)[-1]
    failed = api.wait_finished(app_id, dep["id"], timeout=120)
    assert failed["status"] == "failed" and "127.0.0.1" in failed["reason"], failed
    for path in (f"/apps/{app_id}", f"/apps/{app_id}/audit", f"/apps/{app_id}/deployments", f"/apps/{app_id}/deployments/{dep['id']}", f"/apps/{app_id}/build-log"):
        response = api.call("GET", path)
        assert response.status_code in (200, 404), (path, response.text)
        assert secret not in response.text, path
    listed = api.call("GET", "/apps", 200).json()
    assert {a["repo_url"] for a in listed if a["id"] == app_id} == {shown}
    assert secret not in str(listed)
    # The worker still has the URL as given.
    with session_scope(settings.effective_database_url) as session:
        assert session.get(App, app_id).repo_url == url


# --- the access log ------------------------------------------------------


def test_the_access_log_has_no_query_strings_and_no_tokens(api, platform, settings, admin_token):
    log = platform.table.log_path("api")
    assert log.exists(), "this test reads the log of the API the platform runs"
    offset = log.stat().st_size
    secret = f"SECRET-{uuid.uuid4().hex}"
    missing = f"app_{uuid.uuid4().hex[:12]}"
    api.call("GET", "/apps", 200, params={"token": secret})
    httpx.get(f"{settings.api_url}/api/v1/apps", params={"token": secret}, headers={"Authorization": f"Bearer {secret}"})
    api.call("GET", f"/apps/{missing}", 404, params={"token": secret, "access_token": secret})  # the last line

    def new_lines() -> str:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return f"GET /api/v1/apps/{missing} 404" in text and text

    written = eventually(new_lines, 10, interval=0.2, what="the access log lines of these requests")
    assert "GET /api/v1/apps 200" in written and "GET /api/v1/apps 401" in written, written
    assert secret not in written and "token=" not in written
    whole = log.read_text(errors="replace")
    assert admin_token not in whole and "Bearer" not in whole


def test_request_spans_hold_no_query_strings(platform, settings, admin_token):
    exporter = InMemorySpanExporter()
    tracer = telemetry.tracer_provider("conveyor-test", settings, exporter)
    secret = f"SECRET-{uuid.uuid4().hex}"
    with TestClient(create_app(settings, tracer)) as http:
        response = http.get("/api/v1/apps", params={"token": secret}, headers={"Authorization": f"Bearer {admin_token}"})
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    assert any(s.name.startswith("GET /api/v1/apps") for s in spans), [s.name for s in spans]
    recorded = str([(s.name, dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]) for s in spans])
    assert secret not in recorded and admin_token not in recorded


# --- 422s never repeat what they refuse ----------------------------------


def test_no_422_repeats_the_value_it_refuses(api, deployed_app):
    app, first = deployed_app
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
    ]
    for fields, field, marker in create_cases:
        response = api.call("POST", "/apps", json={**good, **fields})
        assert_422_naming(response, field)
        assert marker not in response.text, (field, response.text)
    for fields, field, marker in [
        ({"image_url": "ECHO_IMAGE_14-:5000/x"}, "image_url", "ECHO_IMAGE_14"),
        ({"env": {"ECHO KEY 15": "x"}}, "env", "ECHO KEY 15"),
        ({"port": "ECHO_PORT_16"}, "port", "ECHO_PORT_16"),
    ]:
        response = api.call("PATCH", path, json=fields)
        assert_422_naming(response, field)
        assert marker not in response.text, (field, response.text)
    for params, field, marker in [
        ({"cursor": "ECHO_CURSOR_17!"}, "cursor", "ECHO_CURSOR_17"),
        ({"limit": "ECHO_LIMIT_18"}, "limit", "ECHO_LIMIT_18"),
    ]:
        response = api.call("GET", "/apps", params=params)
        assert_422_naming(response, field)
        assert marker not in response.text
    response = api.call("GET", f"{path}/logs", params={"since": "ECHO_SINCE_19"})
    assert_422_naming(response, "since")
    assert "ECHO_SINCE_19" not in response.text
    response = api.call("POST", f"{path}/restart", headers={"Idempotency-Key": "ECHO_KEY_20" * 30})
    assert_422_naming(response, "Idempotency-Key")
    assert "ECHO_KEY_20" not in response.text


# --- bodies are bounded before anything reads them ---------------------------


def test_bodies_over_their_limit_are_refused_before_auth_with_a_413(settings):
    """FastAPI reads a whole form before any dependency: without this bound a
    caller with no token could fill the API's disk through the upload route."""
    chunk = b"x" * (1024 * 1024)
    sent = 0

    def endless():
        nonlocal sent
        # A well-formed form whose file part never ends: the parser writes it out.
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="src.tar"\r\nContent-Type: application/octet-stream\r\n\r\n'
        while sent < settings.upload_max_bytes + 4 * len(chunk):
            sent += len(chunk)
            yield chunk

    with httpx.Client(base_url=settings.api_url, timeout=60) as http:
        # Streamed without a Content-Length, and no Authorization at all.
        upload = http.post(
            "/api/v1/apps/app_nobody/build", content=endless(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert upload.status_code == 413, upload.text
        assert "body" in upload.json()["detail"]
        # Declared too large: refused at once, nothing read.
        big = http.post("/api/v1/apps", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413, big.text
        # Within the limit, the route answers as before (here: no token).
        assert http.post("/api/v1/apps", json={"name": "x"}).status_code == 401
