"""Who may do what: a bearer token on every route, the role each mutating
route needs, and a project's apps out of every other project's reach."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from api.deps import get_temporal
from api.main import ROUTERS
from conveyor.domain.vocabulary import DeploymentStatus
from tests.support.api_client import VALID_BODIES, app_routes, app_routes_with_a_body
from tests.support.in_process import finish, new_project, revoke, rows

# The browser sign-in pages take their token in the form (tests/fast/test_codec_session.py).
SIGN_IN = {("GET", "/api/v1/codec/login"), ("POST", "/api/v1/codec/login"), ("POST", "/api/v1/codec/logout")}


def every_route() -> list[tuple[str, str]]:
    return [(method, "/api/v1" + route.path) for router in ROUTERS for route in router.routes for method in sorted(route.methods)]


def needs_temporal(method: str, template: str) -> bool:
    """Whether the route asks Temporal for something before it answers (a
    deployment's live progress)."""

    def calls(dependant) -> bool:
        return dependant.call is get_temporal or any(calls(d) for d in dependant.dependencies)

    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute) and "/api/v1" + r.path == template and method in r.methods]
    return any(calls(route.dependant) for route in routes)


def concrete(template: str, app_id: str = "app_000000000000", deployment_id: str = "dep_000000000000") -> str:
    return template.format(app_id=app_id, deployment_id=deployment_id, domain="shop.example.com", run_id="run_000000000000", name="nightly", credential="rc_000000000000")


@pytest.mark.parametrize(
    ("method", "template"),
    [(m, t) for m, t in every_route() if (m, t) not in SIGN_IN],
)
def test_every_route_needs_a_valid_bearer_token(local, project, method, template):
    path = concrete(template)
    before = rows(local.settings)
    anonymous = local.http.request(method, path)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["WWW-Authenticate"] == "Bearer" and "Bearer" in anonymous.json()["detail"]
    for header in ("Bearer cvy_not-a-token", "Basic YWRtaW46YWRtaW4=", f"Token {project.tokens['admin']}"):
        assert local.http.request(method, path, headers={"Authorization": header}).status_code == 401, header
    revoked = project.tokens["viewer"]
    revoke(local.settings, revoked)
    answer = local.http.request(method, path, headers={"Authorization": f"Bearer {revoked}"})
    assert answer.status_code == 401 and "revoked" in answer.text
    assert rows(local.settings) == before


def test_only_the_sign_in_pages_go_without_a_token():
    assert SIGN_IN <= set(every_route())


@pytest.fixture
def deployed(local, project):
    """An image app whose first deployment is active and whose second failed."""
    app = project.admin.create_app(replicas=2, env={"GREETING": "hello"})
    first = finish(local.settings, project.admin.deployments(app["id"])[0]["id"])
    second = project.admin.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    finish(local.settings, second["id"], DeploymentStatus.FAILED, "the image would not start")
    return app, first, second


def mutations(app: dict, first: dict, failed: dict) -> dict[str, tuple[str, str, dict]]:
    path = f"/apps/{app['id']}"
    return {
        "create": ("POST", "/apps", {"json": {"name": "by-role", "image_url": "registry.test/demo/web:v1"}}),
        "scale": ("PATCH", path, {"json": {"replicas": 3}}),
        "scale (PUT)": ("PUT", path, {"json": {"replicas": 4}}),
        "configure": ("PATCH", path, {"json": {"env": {"MODE": "b"}}}),
        "configure (PUT)": ("PUT", path, {"json": {"port": 9090}}),
        "deploy": ("POST", f"{path}/deploy", {}),
        "restart": ("POST", f"{path}/restart", {}),
        "revert": ("POST", f"{path}/deployments/{first['id']}/revert", {}),
        "retry": ("POST", f"{path}/deployments/{failed['id']}/retry", {}),
        "cancel": ("POST", f"{path}/deployments/{failed['id']}/cancel", {}),
        "build": ("POST", f"{path}/build", VALID_BODIES[("POST", "/api/v1/apps/{app_id}/build")]),
        "delete": ("DELETE", path, {}),
    }


def test_a_viewer_reads_and_changes_nothing(local, project, deployed):
    app, first, failed = deployed
    for path in ("/apps", f"/apps/{app['id']}", f"/apps/{app['id']}/deployments", f"/apps/{app['id']}/audit", "/templates"):
        project.viewer.call("GET", path, 200)
    before = rows(local.settings)
    for what, (method, path, body) in mutations(app, first, failed).items():
        refused = project.viewer.call(method, path, **body)
        assert refused.status_code == 403, (what, refused.text)
        assert "role" in refused.json()["detail"] and "viewer" in refused.json()["detail"], (what, refused.text)
    for route in ("encode", "decode"):
        refused = project.viewer.call("POST", f"/codec/{route}", json={"payloads": []})
        assert refused.status_code == 403, (route, refused.text)
    assert rows(local.settings) == before


def test_a_deployer_deploys_restarts_reverts_retries_and_scales_but_configures_nothing(local, project, deployed):
    app, first, failed = deployed
    deployer = project.deployer
    allowed = mutations(app, first, failed)
    started = {}
    for what in ("deploy", "restart", "revert", "retry"):
        method, path, body = allowed[what]
        started[what] = deployer.call(method, path, 202, **body).json()
        assert started[what]["created_by"] == project.names["deployer"], what
    for what in ("scale", "scale (PUT)"):
        method, path, body = allowed[what]
        assert deployer.call(method, path, 202, **body).json()["replicas"] == body["json"]["replicas"], what
    # Past the role check: an image app takes no tarball; an ended deployment has nothing to cancel.
    build = deployer.call(*allowed["build"][:2], **allowed["build"][2])
    assert build.status_code == 409 and "only upload apps" in build.text, build.text
    assert deployer.call(*allowed["cancel"][:2]).status_code not in (401, 403)

    before = rows(local.settings)
    for what in ("create", "configure", "configure (PUT)", "delete"):
        method, path, body = allowed[what]
        refused = deployer.call(method, path, **body)
        assert refused.status_code == 403, (what, refused.text)
        assert "admin" in refused.json()["detail"], (what, refused.text)
    for route in ("encode", "decode"):
        assert deployer.call("POST", f"/codec/{route}", json={"payloads": []}).status_code == 403, route
    assert rows(local.settings) == before

    # The audit names whoever asked, once the worker records the outcome.
    finish(local.settings, started["deploy"]["id"])
    users = {entry["user"] for entry in project.viewer.call("GET", f"/apps/{app['id']}/audit", 200).json()}
    assert {project.names["admin"], project.names["deployer"]} <= users


def test_an_admin_does_everything(local, project, deployed):
    app, first, failed = deployed
    admin = project.admin
    allowed = mutations(app, first, failed)
    assert admin.call(*allowed["create"][:2], 201, **allowed["create"][2]).json()["project_id"] == project.id
    for what in ("configure", "configure (PUT)", "deploy", "restart", "revert", "retry", "scale"):
        method, path, body = allowed[what]
        admin.call(method, path, 202, **body)
    for route in ("encode", "decode"):
        admin.call("POST", f"/codec/{route}", 200, json={"payloads": []})
    assert admin.call("DELETE", f"/apps/{app['id']}", 202).json()["status"] == "deleting"


# --- projects ---------------------------------------------------------------


def test_a_token_of_another_project_gets_404_on_every_route_of_an_app(local, project, deployed):
    """Another project's app is indistinguishable from a missing one, on every
    route that answers without Temporal (tests/api/test_access_and_validation.py
    covers the others on the platform)."""
    app, first, failed = deployed
    other = new_project(local.settings, local.app)
    routes = app_routes(local.app)
    assert len(routes) >= 20, routes
    with_body = app_routes_with_a_body()
    assert with_body <= set(VALID_BODIES), f"give these routes a valid body in VALID_BODIES: {with_body - set(VALID_BODIES)}"
    asking_temporal = {(m, t) for m, t in routes if needs_temporal(m, t)}
    assert asking_temporal == {
        ("GET", "/api/v1/apps/{app_id}/deployments/{deployment_id}"),
        ("GET", "/api/v1/apps/{app_id}/deployments/{deployment_id}/progress"),
    }

    before = rows(local.settings)
    for method, template in sorted(set(routes) - asking_temporal):
        path = concrete(template, app["id"], first["id"]).removeprefix("/api/v1")
        response = other.admin.call(method, path, **VALID_BODIES.get((method, template), {}))
        assert response.status_code == 404, (method, template, response.status_code, response.text)
        # The app check answered, not some later one (the deployment exists in the first project).
        assert response.json()["detail"] == "app not found", (method, template, response.text)
        assert app["id"] not in response.text
    assert rows(local.settings) == before
    assert app["id"] not in {a["id"] for a in other.admin.call("GET", "/apps", 200).json()}

    # The same name in the other project is another app; neither project sees the other's.
    twin = other.admin.create_app(name=app["name"])
    assert twin["project_id"] == other.id and twin["id"] != app["id"]
    assert {a["id"] for a in other.viewer.call("GET", "/apps", 200).json()} == {twin["id"]}
    assert project.admin.call("GET", f"/apps/{twin['id']}").status_code == 404
