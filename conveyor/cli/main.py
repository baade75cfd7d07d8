"""The `conveyor` command: the root group, its global options, its exit codes.

- operator commands (conveyor/cli/operator.py): the database, tokens, projects,
  payload keys;
- API client commands: apps, deploy, env, deployments, logs and the other
  reads (apps.py, deploy.py, env.py, deployments.py, observe.py), login and
  contexts (login.py);
- the local platform (local.py): up, down, status, build-binaries. Loaded by
  name only when one of them runs, so that `conveyor db upgrade` (the
  production migration Job) never imports `conveyor.stack`.

Exit codes (conveyor/cli/errors.py): 0 ok, 1 deployment not active, 2 usage,
3 platform down, 4 not authorised, 130 Ctrl-C.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from conveyor.cli import apps, deploy, deployments, env, login, observe, operator, registry
from conveyor.cli.errors import ExitCode
from conveyor.cli.invocation import Invocation, global_options

LOCAL_MODULE = "conveyor.cli.local"
LOCAL_COMMANDS = {"up": "up", "down": "down", "status": "status", "build-binaries": "build_binaries"}


class Root(click.Group):
    """The local platform's commands come from LOCAL_MODULE on demand; Ctrl-C
    anywhere exits 130 without a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LOCAL_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LOCAL_COMMANDS:
            command: click.Command = getattr(importlib.import_module(LOCAL_MODULE), LOCAL_COMMANDS[name])
            return command
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(err=True)  # ends the line the terminal's ^C is on
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="conveyor", prog_name="conveyor", message="%(prog)s %(version)s")
@global_options(hidden=False)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Conveyor: deploy containers to Kubernetes.

    Global options may also come after the command (`conveyor apps list -o json`).
    Exit codes: 0 ok, 1 a deployment ended other than active (or a wait timed
    out), 2 usage or a request the API refused, 3 the platform is down,
    4 not authorised, 130 interrupted."""
    ctx.ensure_object(Invocation)


for command in (
    *operator.COMMANDS,
    login.login,
    login.logout,
    login.config,
    apps.apps,
    deploy.deploy,
    env.env,
    registry.registry,
    deployments.deployments,
    observe.logs,
    observe.build_log,
    observe.events,
    observe.metrics,
    observe.audit,
    observe.templates,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="conveyor")


if __name__ == "__main__":
    main()
