"""The operator's commands: `db upgrade`, `token create`, `project create|list`,
`payload-key rotate`.

They talk to the database (and the payload key file) directly, not to the API:
whoever runs them holds the platform's database credentials, which is what
makes them the operator. The production migration Job runs `conveyor db
upgrade`, so nothing here (nor anything it imports) loads the local platform
(`conveyor.stack`); `make lint` checks that."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from conveyor.cli.errors import CliError
from conveyor.settings import Settings, get_settings


@click.group("db")
def db() -> None:
    """The database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Run the migrations to the current schema, under a lock (concurrent runs
    wait for each other); run it before starting a new release."""
    from conveyor.clients.db.session import current_revision, migrate

    settings = get_settings()
    before = migrate(settings.effective_database_url)
    after = current_revision(settings.effective_database_url)
    click.echo(f"database schema at {after}" + (f" (was {before or 'empty'})" if before != after else " (already current)"))


def _in_database(work: Callable[[Any, Settings], str]) -> None:
    """Run `work(session, settings)` on the migrated database; print what it returns."""
    from conveyor.clients.db.queries import ensure_default_project
    from conveyor.clients.db.session import migrate, session_scope

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)  # where the SQLite file goes by default
    migrate(settings.effective_database_url)
    try:
        with session_scope(settings.effective_database_url) as session:
            ensure_default_project(session, settings)
            printed = work(session, settings)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    click.echo(printed)


@click.group("token")
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--project", default="proj_default", show_default=True, help="The project the token belongs to.")
@click.option("--role", required=True, type=click.Choice(["viewer", "deployer", "admin"]), help="What it may do.")
@click.option("--name", required=True, help="Recorded as the user in audit entries.")
def token_create(project: str, role: str, name: str) -> None:
    """Create a token and print it (shown once)."""
    from conveyor.clients.db import tokens

    _in_database(lambda session, settings: tokens.create_token(session, project, role, name))


@click.group("project")
def project() -> None:
    """Projects: each has its own tokens, apps and namespace."""


@project.command("create")
@click.argument("name")
def project_create(name: str) -> None:
    """Create the project proj_NAME and print its id (its apps go to namespace <prefix>NAME).

    NAME: lowercase letters, digits and dashes."""
    from conveyor.clients.db.queries import create_project

    _in_database(lambda session, settings: create_project(session, settings, name).id)


@project.command("list")
def project_list() -> None:
    """Print each project's id and namespace."""
    from sqlalchemy import select

    from conveyor.clients.db.models import Project

    def listing(session: Any, settings: Settings) -> str:
        projects = session.scalars(select(Project).order_by(Project.id)).all()
        return "\n".join(f"{p.id:<24} {p.namespace}" for p in projects)

    _in_database(listing)


@click.group("payload-key")
def payload_key() -> None:
    """The keys that encrypt Temporal payloads."""


@payload_key.command("rotate")
def payload_key_rotate() -> None:
    """Put a new key first in the key file: it encrypts from the next start, older keys still decrypt."""
    from conveyor.clients.payload_codec import PayloadKeyError, add_key

    settings = get_settings()
    if settings.payload_keys is not None:
        raise CliError("keys come from CONVEYOR_PAYLOAD_KEYS: put a new id:base64key first in it instead")
    path = settings.effective_payload_key_file
    try:
        key_id = add_key(path)
    except PayloadKeyError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"key {key_id} added first in {path}; restart the worker and the API (conveyor down && conveyor up)")


COMMANDS = (db, token, project, payload_key)
