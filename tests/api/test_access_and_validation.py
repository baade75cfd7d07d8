"""Project isolation and input validation of the Apps API on the platform: what
reaches Temporal, Kubernetes, the worker and a real HTTP server. The rules that
need no platform are tested in process (tests/fast)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from conveyor.clients.db.models import App
from conveyor.clients.db.session import session_scope
from tests.support.api_client import DEMO_IMAGE, HOSTILE_IMAGES, VALID_BODIES, Api, app_routes, app_routes_with_a_body, assert_422_naming
from tests.support.git_https import GitHttpsServer
from tests.support.waiting import eventually


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


def test_a_token_of_another_project_gets_404_on_every_route_of_an_app(api, settings, kube_api, deployed_app):
    app, first = deployed_app
    project_b, b = new_project(settings)
    routes = app_routes()
    assert len(routes) >= 20, routes
    with_body = app_routes_with_a_body()
    assert with_body <= set(VALID_BODIES), f"give these routes a valid body in VALID_BODIES: {with_body - set(VALID_BODIES)}"

    for method, template in routes:
        path = template.format(app_id=app["id"], deployment_id=first["id"], domain="shop.example.com", run_id="run_000000000000", name="nightly").removeprefix("/api/v1")
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
        # Streamed without a Content-Length: the write's turn waits for its
        # whole body, and the bound still cuts it off on the way.
        streamed = http.post("/api/v1/apps", content=iter([b"{"] + [b" " * (256 * 1024)] * 8 + [b"}"]), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        # Within the limit, the route answers as before (here: no token).
        assert http.post("/api/v1/apps", json={"name": "x"}).status_code == 401
