"""Release semantics: a config change redeploys the image that runs now, pinned
by digest; only deploy (or a new image_url) resolves a tag again."""

from __future__ import annotations

import uuid

from kubernetes import client

from conveyor.clients.kubernetes import namespace_for
from tests.support.registry_tags import point_tag


def running_digest(kube_api, settings, slug: str) -> str:
    """The digest the app's Deployment in the cluster names."""
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(slug, namespace_for(settings, "proj_default"))
    image = deployment.spec.template.spec.containers[0].image
    assert "@" in image, image
    return image.split("@", 1)[1]


def patch_and_wait(api, app_id: str, body: dict) -> dict:
    api.call("PATCH", f"/apps/{app_id}", 202, json=body)
    newest = api.deployments(app_id)[0]
    return api.wait_active(app_id, newest["id"])


def test_config_change_after_a_revert_keeps_the_reverted_image_although_the_tag_moved(api, kube_api, settings):
    tag = f"moving-{uuid.uuid4().hex[:8]}"
    digest_a = point_tag(settings, "demo/web", tag, "v1")
    app = api.create_app(image_url=f"{settings.registry}/demo/web:{tag}", env={"GREETING": "a"})
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert first["image_digest"] == digest_a

    digest_b = point_tag(settings, "demo/web", tag, "v2")
    assert digest_b != digest_a
    second = api.wait_active(app["id"], api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"])
    assert second["image_digest"] == digest_b

    reverted = api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    reverted = api.wait_active(app["id"], reverted["id"])
    assert reverted["image_digest"] == digest_a
    shown = api.call("GET", f"/apps/{app['id']}", 200).json()
    assert shown["running_image"] == reverted["image_ref"] and shown["running_image"].endswith(digest_a)
    assert shown["image_url"] == f"{settings.registry}/demo/web:{tag}", "deploy still follows the tag"

    update = patch_and_wait(api, app["id"], {"env": {"GREETING": "b"}})
    assert update["operation"] == "update"
    assert update["image_digest"] == digest_a and update["image_ref"] == reverted["image_ref"]
    assert running_digest(kube_api, settings, app["slug"]) == digest_a
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["running_image"].endswith(digest_a)

    # A port change is a config change too.
    port = patch_and_wait(api, app["id"], {"port": 9090})
    assert port["image_digest"] == digest_a and port["port"] == 9090
    assert running_digest(kube_api, settings, app["slug"]) == digest_a

    # Only deploy resolves the tag again.
    again = api.wait_active(app["id"], api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"])
    assert again["image_digest"] == digest_b
    assert running_digest(kube_api, settings, app["slug"]) == digest_b
    assert api.call("GET", f"/apps/{app['id']}", 200).json()["running_image"].endswith(digest_b)


def test_env_change_on_an_app_tracking_latest_ships_no_new_code(api, kube_api, settings):
    repository = f"rel-{uuid.uuid4().hex[:8]}/web"
    digest_a = point_tag(settings, repository, "latest", "v1", source_repository="demo/web")
    app = api.create_app(image_url=f"{settings.registry}/{repository}:latest")
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    assert first["image_digest"] == digest_a

    digest_b = point_tag(settings, repository, "latest", "v2", source_repository="demo/web")
    assert digest_b != digest_a
    update = patch_and_wait(api, app["id"], {"env": {"FEATURE": "on"}})
    assert update["image_digest"] == digest_a and update["env_keys"] == ["FEATURE"]
    assert running_digest(kube_api, settings, app["slug"]) == digest_a

    # A new image_url is resolved, like a deploy.
    moved = patch_and_wait(api, app["id"], {"image_url": f"{settings.registry}/demo/web:v2"})
    assert moved["image_digest"] == digest_b
    assert running_digest(kube_api, settings, app["slug"]) == digest_b


def test_config_change_queued_behind_a_revert_runs_the_reverted_image(api, kube_api, settings):
    """The change is asked for while the revert is still on its way: it runs
    what is active when it starts (the revert's image), not what ran when it was asked for."""
    tag = f"moving-{uuid.uuid4().hex[:8]}"
    digest_a = point_tag(settings, "demo/web", tag, "v1")
    app = api.create_app(image_url=f"{settings.registry}/demo/web:{tag}")
    first = api.wait_active(app["id"], api.deployments(app["id"])[0]["id"])
    point_tag(settings, "demo/web", tag, "v2")
    second = api.wait_active(app["id"], api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"])
    assert second["image_digest"] != digest_a

    reverted = api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/revert", 202).json()
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"AFTER": "revert"}})
    update = api.deployments(app["id"])[0]
    assert update["operation"] == "update" and update["number"] == reverted["number"] + 1
    api.wait_active(app["id"], reverted["id"])
    update = api.wait_active(app["id"], update["id"])
    assert update["image_digest"] == digest_a
    assert running_digest(kube_api, settings, app["slug"]) == digest_a
