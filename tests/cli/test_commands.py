"""A command for every route a user needs, against the real API in process."""

from __future__ import annotations

import uuid

from tests.support import in_process
from tests.support.api_client import DEMO_IMAGE
from tests.support.cli import Sent

LIST_APPS = "/api/v1/apps"


def name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def image_app(cli, **fields) -> dict:
    return cli.project.admin.create_app(**{"name": name(), **fields})


def test_an_app_given_by_name_is_found_with_one_request(cli):
    app = image_app(cli)
    cli.forget_sent()
    shown = cli.json("apps", "show", app["name"])
    assert shown["id"] == app["id"]
    assert [s for s in cli.sent() if s.path == LIST_APPS] == [Sent("GET", LIST_APPS, {"name": app["name"]})]

    cli.forget_sent()
    cli.json("deployments", "list", app["id"])  # an id needs no look-up at all
    assert [s for s in cli.sent() if s.path == LIST_APPS] == []


def test_the_api_filters_apps_by_exact_name_within_the_project(cli, served):
    app = image_app(cli)
    image_app(cli, name=app["name"] + "-2")
    assert [a["id"] for a in cli.project.admin.call("GET", "/apps", 200, params={"name": app["name"]}).json()] == [app["id"]]
    assert cli.project.admin.call("GET", "/apps", 200, params={"name": app["name"][:-1]}).json() == []
    other = in_process.new_project(served.settings, served.app)
    assert other.admin.call("GET", "/apps", 200, params={"name": app["name"]}).json() == []


def test_create_from_an_image_a_git_repository_or_for_uploads(cli):
    image = cli.json("apps", "create", name(), "--image", f"{DEMO_IMAGE}:v1", "--port", "9000", "--replicas", "2", "-e", "A=1", "-d")
    assert (image["source_type"], image["port"], image["replicas"], image["env"]) == ("image", 9000, 2, {"A": "1"})
    git = cli.json("apps", "create", name(), "--git", "https://git.example.com/team/site.git", "--branch", "release", "--build-command", "make", "-d")
    assert (git["source_type"], git["repo_branch"], git["build_command"]) == ("git", "release", "make")
    assert [d["operation"] for d in cli.json("deployments", git["name"])] == ["deploy"]
    upload = cli.ok("apps", "create", name(), "--upload")
    assert "conveyor deploy PATH --app" in upload.stdout
    templated = cli.json("apps", "create", name(), "--template", "hello-web", "-d")
    assert templated["image_url"].endswith("/demo/web:v1")
    assert cli.run("apps", "create", name(), "--image", "x:1", "--git", "https://example.com/x.git").exit_code == 2


def test_env_list_set_and_unset(cli):
    app = image_app(cli, env={"KEEP": "1"})
    cli.ok("env", "set", app["name"], "A=one", "B=two=2", "--detach")
    assert cli.json("env", "list", app["name"]) == {"A": "one", "B": "two=2", "KEEP": "1"}
    cli.ok("env", "unset", app["name"], "A", "KEEP", "-d")
    assert cli.json("env", "list", app["name"]) == {"B": "two=2"}
    operations = [d["operation"] for d in cli.json("deployments", app["name"])]
    assert operations == ["update", "update", "deploy"]
    assert "nothing changed" in cli.ok("env", "unset", app["name"], "A").output
    assert cli.run("env", "set", app["name"], "NOEQUALS").exit_code == 2


def test_a_cancel_temporal_refuses_is_a_503_that_shows_none_of_temporals_text(cli, served):
    """Temporal's error text (its address, its internals) stays in the API's log."""
    from conveyor.clients.db.models import Deployment
    from conveyor.clients.db.session import session_scope

    app = image_app(cli)
    dep = cli.json("deployments", "show", app["name"], "v1")
    # As if its workflow had begun, under an id this Temporal does not know.
    with session_scope(served.settings.effective_database_url) as session:
        row = session.get(Deployment, dep["id"])
        row.status, row.workflow_id = "deploying", f"deploy-{dep['id']}-elsewhere"
    result = cli.run("deployments", "cancel", app["name"], "v1")
    assert result.exit_code != 0 and "could not reach the deployment's workflow (NOT_FOUND)" in result.output, result.output
    assert served.settings.temporal_address not in result.output and "elsewhere" not in result.output
    assert cli.json("deployments", "show", app["name"], "v1")["status"] == "deploying"


def test_deployments_show_cancel_retry_and_rollback(cli, served):
    app = image_app(cli)
    first = cli.json("deployments", "show", app["name"], "v1")
    assert first["status"] in ("queued", "pending") and first["operation"] == "deploy"

    cancelled = cli.json("deployments", "cancel", app["name"], "v1")
    assert cancelled["status"] == "cancelled"
    retried = cli.json("deployments", "retry", app["name"], first["id"], "--detach")
    assert retried["retry_of"] == first["id"] and retried["number"] == 2

    in_process.finish(served.settings, retried["id"])
    second = cli.json("apps", "deploy", app["name"], "-d")
    in_process.finish(served.settings, second["id"])
    back = cli.json("deployments", "rollback", app["name"], "-d")
    assert back["operation"] == "rollback" and back["rollback_of"] == retried["id"]
    also = cli.json("apps", "rollback", app["name"], "v2", "-d")
    assert also["rollback_of"] == retried["id"]

    table = cli.ok("deployments", app["name"]).stdout.splitlines()
    assert table[0].split()[:4] == ["VERSION", "ID", "OPERATION", "STATUS"]
    assert [row.split()[0] for row in table[1:]] == ["v5", "v4", "v3", "v2", "v1"]
    shown = cli.ok("deployments", "show", app["name"], second["id"]).stdout
    assert f"{second['id']} (v3, deploy)" in shown and "superseded" not in shown.splitlines()[0]


def test_scale_restart_and_delete(cli, served):
    app = image_app(cli)
    in_process.finish(served.settings, cli.json("deployments", app["name"])[0]["id"])
    assert cli.json("apps", "scale", app["name"], "3", "--detach")["replicas"] == 3
    restart = cli.json("apps", "restart", app["name"], "-d")
    assert restart["operation"] == "restart"

    # No worker runs the delete: the wait ends at its deadline, saying so.
    waited = cli.run("apps", "delete", app["name"], "--timeout", "1s")
    assert waited.exit_code == 1 and "--timeout" in waited.stderr
    assert cli.json("apps", "show", app["id"])["status"] == "deleting"
    assert cli.run("apps", "delete", app["id"], "--no-wait").exit_code == 0


def test_audit_templates_and_the_build_log(cli):
    app = image_app(cli)
    audit = cli.json("audit", app["name"])
    assert audit[0]["action"] == "create" and audit[0]["user"] == cli.project.names["admin"]
    assert "hello-web" in {t["id"] for t in cli.json("templates")}
    assert "hello-web" in cli.ok("templates").stdout
    missing = cli.run("build-log", app["name"])
    assert missing.exit_code == 2 and "build not found" in missing.stderr


def test_reads_from_kubernetes_exit_3_while_the_cluster_is_away(cli):
    app = image_app(cli)
    for command in (("events", app["name"]), ("metrics", app["name"]), ("logs", app["name"]), ("apps", "pods", app["name"])):
        result = cli.run(*command)
        assert result.exit_code == 3, (command, result.output)
    # `apps show` shows the app all the same.
    shown = cli.ok("apps", "show", app["name"]).stdout
    assert app["id"] in shown and "runtime: unavailable" in shown


def test_domains_are_listed_added_and_removed_and_a_certificate_uploaded_from_files(cli, tmp_path):
    from tests.support.certificates import make_certificate

    app = image_app(cli)
    cli.ok("apps", "domains", app["name"], "--add", "shop.example.com", "--add", "www.example.com", "-d")
    listed = cli.json("apps", "domains", app["name"])
    assert [d["domain"] for d in listed["domains"]] == ["shop.example.com", "www.example.com"]
    assert listed["default_host"].startswith(app["slug"] + ".")
    cli.ok("apps", "domains", app["name"], "--remove", "www.example.com", "-d")
    assert cli.project.admin.call("GET", f"/apps/{app['id']}", 200).json()["domains"] == ["shop.example.com"]
    made = make_certificate("shop.example.com")
    (tmp_path / "tls.crt").write_text(made.certificate)
    (tmp_path / "tls.key").write_text(made.key)
    uploaded = cli.ok("apps", "certificate", app["name"], "shop.example.com", "--cert", str(tmp_path / "tls.crt"), "--key", str(tmp_path / "tls.key"))
    assert "shop.example.com: uploaded, expires" in uploaded.stdout and "PRIVATE" not in uploaded.stdout
    table = cli.ok("apps", "domains", app["name"]).stdout
    assert "shop.example.com" in table and "uploaded" in table
    assert cli.run("apps", "certificate", app["name"], "shop.example.com").exit_code == 2
    cli.ok("apps", "certificate", app["name"], "shop.example.com", "--delete")
    assert "none" in cli.ok("apps", "domains", app["name"]).stdout


def test_registry_login_list_and_logout(cli):
    password = f"pw-{uuid.uuid4().hex}"
    saved = cli.json("registry", "login", "ghcr.io", "-u", "ci-bot", "--password-stdin", input=password + "\n")
    assert saved["registry"] == "ghcr.io" and saved["username"] == "ci-bot" and password not in str(saved)
    again = cli.ok("registry", "login", "ghcr.io", "-u", "other", input=password + "\n")
    assert "replaced the credential for ghcr.io" in again.stdout
    listed = cli.ok("registry", "list")
    assert "ghcr.io" in listed.stdout and "other" in listed.stdout and password not in listed.stdout
    cli.ok("registry", "logout", "ghcr.io")
    assert cli.json("registry", "list") == []
    assert cli.run("registry", "logout", "ghcr.io").exit_code == 2  # none left: the API's 404
    assert cli.run("registry", "login", "ghcr.io", "-u", "x", role="deployer", input="pw\n").exit_code == 4
