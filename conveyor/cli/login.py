"""`conveyor login|logout` and `conveyor config …`: the contexts of the config
file (conveyor/cli/config.py), as `kubectl config` keeps them."""

from __future__ import annotations

import os
import sys

import click

from conveyor.cli import config as config_file
from conveyor.cli.client import API_PREFIX, Api, user_agent
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.settings import get_settings


@click.command("login")
@global_options(hidden=False)
@pass_invocation
def login(inv: Invocation) -> None:
    """Store an API URL and token as a context of the config file, and make it current.

    The token is --token, else read from stdin when that is not a terminal
    (`conveyor login --api-url URL < token-file`), else asked for. It is checked
    against the API first: a token the API refuses is not stored (exit 4).
    The context is --context NAME (default: the current one, else `default`)."""
    config = config_file.load()
    name = inv.context or config.current or config_file.DEFAULT_CONTEXT
    existing = config.contexts.get(name)
    api_url = (inv.api_url or os.environ.get("CONVEYOR_API_URL") or (existing.api_url if existing else None) or get_settings().api_url).rstrip("/")
    token = inv.token
    if not token and not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    if not token:
        token = click.prompt(f"API token for {api_url}", hide_input=True).strip()
    if not token:
        raise click.UsageError("an empty token")
    headers = {"User-Agent": user_agent(), "Authorization": f"Bearer {token}"}
    with inv.http_factory(api_url + API_PREFIX, headers) as http:
        Api(http, api_url, "login").get("/apps", limit=1)  # 401/403: exit 4, nothing written
    config.contexts[name] = config_file.Context(name, api_url, token)
    config.current = name
    config_file.save(config)
    click.echo(f"logged in to {api_url}; context {name} is current ({config.path})")


@click.command("logout")
@global_options(hidden=False)
@pass_invocation
def logout(inv: Invocation) -> None:
    """Remove a context (--context NAME, default the current one) and its token."""
    config = config_file.load()
    name = inv.context or config.current
    if not name:
        raise click.UsageError("no current context; name one with --context")
    config.context(name)
    del config.contexts[name]
    if config.current == name:
        config.current = None
    config_file.save(config)
    click.echo(f"removed context {name}")


@click.group("config")
def config() -> None:
    """The contexts of the config file ($CONVEYOR_CONFIG, default ~/.config/conveyor/config.json)."""


@config.command("get-contexts")
@global_options()
@pass_invocation
def get_contexts(inv: Invocation) -> None:
    """List the contexts; * marks the current one."""
    loaded = config_file.load()
    listing = [{"name": c.name, "api_url": c.api_url, "current": c.name == loaded.current} for c in sorted(loaded.contexts.values(), key=lambda c: c.name)]
    inv.out.rows(listing, ["CURRENT", "NAME", "API URL"], lambda c: ["*" if c["current"] else "", c["name"], c["api_url"]], empty="no contexts: `conveyor login` adds one")


@config.command("use-context")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    loaded = config_file.load()
    loaded.context(name)
    loaded.current = name
    config_file.save(loaded)
    click.echo(f"switched to context {name}")


@config.command("current-context")
def current_context() -> None:
    """Print the current context's name."""
    loaded = config_file.load()
    if not loaded.current:
        raise click.UsageError("no current context: `conveyor login` or `conveyor config use-context NAME`")
    click.echo(loaded.current)


@config.command("delete-context")
@click.argument("name")
def delete_context(name: str) -> None:
    """Remove the context NAME and its token."""
    loaded = config_file.load()
    loaded.context(name)
    del loaded.contexts[name]
    if loaded.current == name:
        loaded.current = None
    config_file.save(loaded)
    click.echo(f"deleted context {name}")
