"""One run of the command: its global options, and the API they point at.

The global options (`--api-url`, `--token`, `--context`, `-o`) go before the
command or after it, as with kubectl: `conveyor -o json apps list` and
`conveyor apps list -o json` are the same.

Where the API URL and the token come from, first found wins:

1. `--api-url` / `--token`;
2. the context named by `--context`;
3. `CONVEYOR_API_URL` / `CONVEYOR_TOKEN`;
4. the config file's current context;
5. the local platform (`conveyor up`): its URL and, for that URL only, its
   bootstrap admin token (`.conveyor/admin-token`).

A context's token is only ever sent to that context's own API URL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from conveyor.cli import config as config_file
from conveyor.cli.client import API_PREFIX, Api, HttpFactory, http_client, user_agent
from conveyor.cli.output import FORMATS, Output
from conveyor.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Connection:
    api_url: str
    token: str | None
    token_source: str


@dataclass
class Invocation:
    """`ctx.obj` of every command. Tests hand one in with their own `http_factory`."""

    http_factory: HttpFactory = http_client
    api_url: str | None = None
    token: str | None = None
    context: str | None = None
    output_format: str | None = None
    _api: Api | None = field(default=None, repr=False)

    @property
    def out(self) -> Output:
        return Output(self.output_format or "table")

    def config(self) -> config_file.Config:
        return config_file.load()

    def connection(self) -> Connection:
        config = self.config()
        named = config.context(self.context) if self.context else None
        current = named or config.current_context
        local_url = get_settings().api_url
        env_url, env_token = os.environ.get("CONVEYOR_API_URL"), os.environ.get("CONVEYOR_TOKEN")

        url_choices = [self.api_url, named.api_url if named else None, env_url, current.api_url if current else None, local_url]
        api_url = next(u for u in url_choices if u).rstrip("/")

        def own(ctx: config_file.Context | None) -> str | None:
            return ctx.token if ctx is not None and ctx.api_url.rstrip("/") == api_url else None

        token_choices: list[tuple[str | None, str]] = [
            (self.token, "--token"),
            (own(named), f"context {named.name}" if named else ""),
            (env_token, "CONVEYOR_TOKEN"),
            (own(current), f"context {current.name}" if current else ""),
            (_local_admin_token() if api_url == local_url else None, str(get_settings().admin_token_file)),
        ]
        for token, source in token_choices:
            if token:
                return Connection(api_url, token, source)
        return Connection(api_url, None, "nowhere: no --token, CONVEYOR_TOKEN or context")

    def api(self) -> Api:
        if self._api is None:
            connection = self.connection()
            headers = {"User-Agent": user_agent()}
            if connection.token:
                headers["Authorization"] = f"Bearer {connection.token}"
            self._api = Api(self.http_factory(connection.api_url + API_PREFIX, headers), connection.api_url, connection.token_source)
        return self._api


def _local_admin_token() -> str | None:
    path = get_settings().admin_token_file
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _setter(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ctx.ensure_object(Invocation), attribute, value)

    return store


def global_options(hidden: bool = True) -> Callable[[F], F]:
    """The global options, on the root group (shown in its help) and on every
    API command (hidden there), so that they may come after the command too."""

    def decorate(command: F) -> F:
        for option in reversed(
            (
                click.option("--api-url", metavar="URL", help="The API, e.g. https://conveyor.example.com (env CONVEYOR_API_URL).",
                             callback=_setter("api_url"), expose_value=False, hidden=hidden),
                click.option("--token", metavar="TOKEN", help="API token (env CONVEYOR_TOKEN).",
                             callback=_setter("token"), expose_value=False, hidden=hidden),
                click.option("--context", metavar="NAME", help="Use (or, for login, write) this context of the config file.",
                             callback=_setter("context"), expose_value=False, hidden=hidden),
                click.option("-o", "--output", type=click.Choice(FORMATS), help="table (default) or json.",
                             callback=_setter("output_format"), expose_value=False, hidden=hidden),
            )
        ):
            command = option(command)
        return command

    return decorate


pass_invocation = click.make_pass_decorator(Invocation, ensure=True)
