"""Global options, -o json, exit codes, and `conveyor login` with named contexts."""

from __future__ import annotations

import json
import stat
import uuid

from conveyor.cli.invocation import Invocation
from tests.support import in_process
from tests.support.api_client import DEMO_IMAGE


def name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def test_json_output_is_the_apis_json_wherever_the_option_goes(cli):
    app = name()
    created = cli.json("apps", "create", app, "--image", f"{DEMO_IMAGE}:v1", "--detach")
    assert created["name"] == app and created["id"].startswith("app_")
    listed = json.loads(cli.ok("-o", "json", "apps", "list").stdout)
    assert [a["id"] for a in listed] == [created["id"]]  # a project of its own: only this app
    shown = cli.json("apps", "show", app)
    assert shown["id"] == created["id"] and "runtime" in shown
    history = cli.json("deployments", app)
    assert [(d["number"], d["operation"]) for d in history] == [(1, "deploy")]
    table = cli.ok("apps", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "STATUS", "REPLICAS", "SOURCE"] and table[1].split()[:2] == [app, created["id"]]


def test_version():
    from click.testing import CliRunner

    from conveyor.cli.main import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("conveyor ")


def test_a_token_the_api_refuses_exits_4(cli):
    refused = cli.run("apps", "list", token="not-a-token")
    assert refused.exit_code == 4 and "401" in refused.stderr
    assert cli.run("apps", "list", role=None).exit_code == 4  # no token at all
    too_small = cli.run("apps", "create", name(), "--image", f"{DEMO_IMAGE}:v1", role="viewer")
    assert too_small.exit_code == 4 and "403" in too_small.stderr


def test_an_api_that_refuses_connections_exits_3(cli):
    port = in_process.closed_port()
    down = cli.run("apps", "list", api_url=f"http://127.0.0.1:{port}", invocation=Invocation())  # the real HTTP client
    assert down.exit_code == 3, down.output
    assert f"cannot reach the API at http://127.0.0.1:{port}" in down.stderr and "Traceback" not in down.output


def test_usage_errors_and_refused_requests_exit_2(cli):
    assert cli.run("apps", "list", "--no-such-option").exit_code == 2
    assert cli.run("apps", "scale", "web", "many").exit_code == 2
    assert cli.run("apps", "create", name()).exit_code == 2  # no source given
    unknown = cli.run("apps", "show", "no-such-app")
    assert unknown.exit_code == 2 and "no app named 'no-such-app'" in unknown.stderr
    invalid = cli.run("apps", "create", "Not A Name!", "--image", "UPPER/case")
    assert invalid.exit_code == 2 and "422" in invalid.stderr and "image_url" in invalid.stderr


def test_login_writes_a_private_config_file_with_contexts(cli, project):
    staging = cli.ok("login", "--api-url", in_process.BASE_URL, "--token", project.tokens["admin"], "--context", "staging", role=None, api_url=None)
    assert "context staging is current" in staging.stdout
    cli.ok("login", "--context", "prod", "--api-url", in_process.BASE_URL, role=None, api_url=None, input=project.tokens["viewer"] + "\n")

    mode = cli.config_file.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    written = json.loads(cli.config_file.read_text())
    assert written["current-context"] == "prod"
    assert written["contexts"] == {
        "staging": {"api-url": in_process.BASE_URL, "token": project.tokens["admin"]},
        "prod": {"api-url": in_process.BASE_URL, "token": project.tokens["viewer"]},
    }
    contexts = cli.json("config", "get-contexts", role=None, api_url=None)
    assert [(c["name"], c["current"]) for c in contexts] == [("prod", True), ("staging", False)]

    # The current context (viewer) is used when nothing else is given ...
    assert cli.bare("apps", "create", name(), "--image", f"{DEMO_IMAGE}:v1").exit_code == 4
    # ... until another is made current, or named for one command.
    assert cli.bare("--context", "staging", "apps", "create", name(), "--image", f"{DEMO_IMAGE}:v1", "-d").exit_code == 0
    cli.ok("config", "use-context", "staging", role=None, api_url=None)
    assert cli.ok("config", "current-context", role=None, api_url=None).stdout.strip() == "staging"
    assert cli.bare("apps", "create", name(), "--image", f"{DEMO_IMAGE}:v1", "-d").exit_code == 0
    assert cli.bare("--context", "nowhere", "apps", "list").exit_code == 2

    cli.ok("config", "delete-context", "prod", role=None, api_url=None)
    assert set(json.loads(cli.config_file.read_text())["contexts"]) == {"staging"}


def test_a_refused_login_writes_nothing(cli):
    refused = cli.bare("login", "--api-url", in_process.BASE_URL, "--token", "wrong")
    assert refused.exit_code == 4 and not cli.config_file.exists()


def test_flags_then_a_named_context_then_the_environment_then_the_current_context(cli, project, monkeypatch):
    cli.ok("login", "--api-url", in_process.BASE_URL, "--token", project.tokens["admin"], role=None, api_url=None)  # context default
    monkeypatch.setenv("CONVEYOR_TOKEN", "stale-token")
    monkeypatch.setenv("CONVEYOR_API_URL", in_process.BASE_URL)
    assert cli.bare("apps", "list").exit_code == 4  # the environment beats the current context
    assert cli.bare("--context", "default", "apps", "list").exit_code == 0  # a named context beats it
    assert cli.run("apps", "list", role="viewer", api_url=None).exit_code == 0  # --token beats everything
    # A context's token goes to its own API only.
    monkeypatch.delenv("CONVEYOR_TOKEN")
    monkeypatch.setenv("CONVEYOR_API_URL", "http://elsewhere.example")
    elsewhere = Invocation()
    elsewhere.connection()
    assert elsewhere.connection().token is None


def test_a_config_file_of_the_earlier_shape_is_one_context(cli, project):
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text(json.dumps({"url": in_process.BASE_URL, "token": project.tokens["viewer"]}))
    assert cli.bare("apps", "list").exit_code == 0
    assert cli.ok("config", "current-context", role=None, api_url=None).stdout.strip() == "default"
