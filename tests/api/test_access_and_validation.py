"""Roles, project isolation and input validation of the Apps API."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.conftest import Api


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


def test_another_projects_token_never_sees_the_app(api, settings, make_token, deployed_app):
    app, first = deployed_app
    outsider = Api(settings.api_url, make_token("admin", project_id=f"proj_{uuid.uuid4().hex[:6]}")[0])
    assert outsider.call("GET", f"/apps/{app['id']}").status_code == 404
    assert outsider.call("POST", f"/apps/{app['id']}/deploy").status_code == 404
    assert outsider.call("DELETE", f"/apps/{app['id']}").status_code == 404
    assert app["id"] not in {a["id"] for a in outsider.call("GET", "/apps", 200).json()}


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
