"""The Apps API as the tests call it: a client that fails loudly, the requests
they send (app bodies, source tarballs) and what they expect of a refusal.

The same client talks to the platform's API over HTTP (tests/api) or to an app
in this process through FastAPI's TestClient (tests/fast)."""

from __future__ import annotations

import io
import os
import tarfile
import uuid

import httpx
from fastapi import FastAPI

from conveyor.domain import vocabulary
from tests.support.waiting import eventually

TERMINAL = {str(status) for status in vocabulary.TERMINAL}
# The seeded demo app in this session's registry (CONVEYOR_REGISTRY may move it off 5000).
DEMO_IMAGE = f"{os.environ.get('CONVEYOR_REGISTRY', '127.0.0.1:5000')}/demo/web"


class Api:
    """A thin client that fails loudly with the response body on surprises.

    With `app`, requests go to that ASGI app in this process (`base_url` is then
    only the host the app sees, e.g. http://testserver)."""

    def __init__(self, base_url: str, token: str, registry: str = "127.0.0.1:5000", app: FastAPI | None = None):
        self.registry = registry
        headers = {"Authorization": f"Bearer {token}"}
        if app is None:
            self.http = httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=30)
        else:
            from fastapi.testclient import TestClient

            self.http = TestClient(app, base_url=f"{base_url}/api/v1", headers=headers, follow_redirects=False)

    def call(self, method: str, path: str, expect: int | None = None, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def create_app(self, **fields) -> dict:
        body = {"name": f"app-{uuid.uuid4().hex[:8]}", "image_url": f"{DEMO_IMAGE}:v1", "port": 8080, **fields}
        return self.call("POST", "/apps", 201, json=body).json()

    def deployments(self, app_id: str) -> list[dict]:
        return self.call("GET", f"/apps/{app_id}/deployments", 200).json()

    def deployment(self, app_id: str, dep_id: str) -> dict:
        return self.call("GET", f"/apps/{app_id}/deployments/{dep_id}", 200).json()

    def wait_finished(self, app_id: str, dep_id: str, timeout: float = 90) -> dict:
        return eventually(
            lambda: (d := self.deployment(app_id, dep_id))["status"] in TERMINAL and d,
            timeout,
            what=f"deployment {dep_id} to finish",
        )

    def wait_active(self, app_id: str, dep_id: str, timeout: float = 90) -> dict:
        dep = self.wait_finished(app_id, dep_id, timeout)
        assert dep["status"] == "active", dep
        return dep

    def status(self, app_id: str) -> dict:
        return self.call("GET", f"/apps/{app_id}/status", 200).json()

    def wait_ready(self, app_id: str, replicas: int, timeout: float = 60) -> dict:
        def check():
            status = self.status(app_id)
            pods = status["pods"]
            ok = (
                status["desired_replicas"] == replicas
                and status["ready_replicas"] == replicas
                and len(pods) == replicas
                and all(p["ready"] for p in pods)
            )
            return ok and status

        return eventually(check, timeout, what=f"{replicas} ready replicas of {app_id}")


# --- uploads ---------------------------------------------------------------


def tarball(files: dict[str, str], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload(api, app_id: str, data: bytes, name: str = "src.tar.gz", expect: int | None = 202) -> httpx.Response:
    return api.call("POST", f"/apps/{app_id}/build", expect, files={"file": (name, data, "application/gzip")})


def upload_app(api, **fields) -> dict:
    return api.call("POST", "/apps", 201, json={"name": f"up-{uuid.uuid4().hex[:8]}", "source_type": "upload", "port": 8080, **fields}).json()


# --- a rollout that stays under way ------------------------------------------


def start_never_ready_deploy(api, app) -> dict:
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1-neverready", "progress_deadline_seconds": 300})
    dep = api.deployments(app["id"])[0]

    def rolling_out():
        current = api.deployment(app["id"], dep["id"])
        return current["status"] == "deploying" and any(
            p["name"] == "rollout" and p["state"] == "running" for p in current["progress"] or []
        ) and current

    return eventually(rolling_out, 60, what="the never-ready rollout to be under way")


# --- refusals ----------------------------------------------------------------

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


# --- every route of an app ---------------------------------------------------


def app_routes_with_a_body() -> set[tuple[str, str]]:
    """(method, path) of every route about one app that takes a request body."""
    from api.main import ROUTERS

    return {
        (method, "/api/v1" + route.path)
        for router in ROUTERS
        for route in router.routes
        if "{app_id}" in route.path and route.dependant.body_params
        for method in route.methods
    }


def app_routes(app: FastAPI | None = None) -> list[tuple[str, str]]:
    """(method, path) of every route about one app, read from the routers the API mounts."""
    from api.main import ROUTERS, create_app

    routes = []
    for router in ROUTERS:
        for route in router.routes:
            assert hasattr(route, "methods"), f"{route!r}: teach this test about nested routers"
            if "{app_id}" in route.path:
                routes += [(method, "/api/v1" + route.path) for method in sorted(route.methods)]
    # Routes declared on the app itself must not be about apps, or they would be missed above.
    mounted = {(m, r.path) for r in (app or create_app()).routes if hasattr(r, "methods") for m in r.methods}
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
    ("PUT", "/api/v1/apps/{app_id}/domains/{domain}/certificate"): {"json": {"certificate": "-----BEGIN CERTIFICATE-----", "key": "k"}},
}
