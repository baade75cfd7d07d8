"""`conveyor env list|set|unset APP`: the app's environment.

A change is one `PATCH /apps/{id}` (`env` is merged; a key set to null is
removed) and a new deployment of the image that runs now, followed."""

from __future__ import annotations

import click

from conveyor.cli.apps import FOLLOW_TIMEOUT, env_pairs, follow_latest
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.cli.waiting import detach_option, timeout_option


@click.group("env")
def env() -> None:
    """The app's environment variables (values of secret-looking keys are shown masked)."""


@env.command("list")
@click.argument("app")
@global_options()
@pass_invocation
def list_env(inv: Invocation, app: str) -> None:
    """The app's variables."""
    variables = inv.api().app(app).get("env") or {}
    inv.out.document(variables, lambda: inv.out.rows(sorted(variables.items()), ["KEY", "VALUE"], list, empty="no variables"))


def _change(inv: Invocation, app: str, changes: dict[str, str | None], detach: bool, timeout: float) -> None:
    api = inv.api()
    app_id = api.app_id(app)
    response = api.request("PATCH", f"/apps/{app_id}", json={"env": changes})
    if response.status_code != 202:  # 200: the env was already so; nothing to deploy
        inv.out.document(response.json(), lambda: inv.out.say("nothing changed"))
        return
    follow_latest(inv, app, app_id, detach, timeout)


@env.command("set")
@click.argument("app")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@detach_option("the deployment")
@timeout_option(FOLLOW_TIMEOUT, "the deployment")
@global_options()
@pass_invocation
def set_env(inv: Invocation, app: str, pairs: tuple[str, ...], detach: bool, timeout: float) -> None:
    """Set variables, and follow the deployment that applies them."""
    _change(inv, app, dict(env_pairs(pairs, "KEY=VALUE")), detach, timeout)


@env.command("unset")
@click.argument("app")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@detach_option("the deployment")
@timeout_option(FOLLOW_TIMEOUT, "the deployment")
@global_options()
@pass_invocation
def unset_env(inv: Invocation, app: str, keys: tuple[str, ...], detach: bool, timeout: float) -> None:
    """Remove variables, and follow the deployment that applies it."""
    _change(inv, app, dict.fromkeys(keys), detach, timeout)
