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


# A project's defaults and ceilings (conveyor.domain.workload.ProjectLimits);
# unset, the CONVEYOR_* setting of the same name holds for it.
LIMIT_OPTIONS = (
    ("default_cpu", str, "CPU request of a container that asks for none (LimitRange), e.g. 100m"),
    ("default_memory", str, "memory request of a container that asks for none, e.g. 128Mi"),
    ("default_cpu_limit", str, "CPU limit of a container that sets none"),
    ("default_memory_limit", str, "memory limit of a container that sets none"),
    ("quota_pods", int, "most pods of all the project's apps together (ResourceQuota)"),
    ("quota_cpu", str, "most CPU all its pods may request together, e.g. 8"),
    ("quota_memory", str, "most memory all its pods may request together, e.g. 16Gi"),
    ("max_replicas_per_app", int, "most replicas one app may have"),
)


def limit_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, kind, text in reversed(LIMIT_OPTIONS):
        command = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None, help=text)(command)
    return command


def _limits_given(options: dict[str, Any]) -> dict[str, Any]:
    return {name: options[name] for name, _, _ in LIMIT_OPTIONS if options.get(name) is not None}


def _describe_limits(project: Any, settings: Settings) -> str:
    limits = settings.project_limits(project.limits)
    shown = ", ".join(f"{name}={value}" for name, value in limits.model_dump().items() if value is not None)
    return f"{project.id} ({project.namespace}): {shown}"


@project.command("create")
@click.argument("name")
@limit_options
def project_create(name: str, **options: Any) -> None:
    """Create the project proj_NAME and print its id (its apps go to namespace <prefix>NAME).

    NAME: lowercase letters, digits and dashes. The limit options set the
    project's LimitRange defaults, ResourceQuota and replica ceiling."""
    from conveyor.clients.db.queries import create_project, set_project_limits

    def create(session: Any, settings: Settings) -> str:
        created = create_project(session, settings, name)
        if given := _limits_given(options):
            set_project_limits(session, settings, created.id, given)
        return created.id

    _in_database(create)


@project.command("update")
@click.argument("project_id")
@limit_options
@click.option("--clear", "clear", multiple=True, type=click.Choice([name for name, _, _ in LIMIT_OPTIONS]), help="Go back to the setting for this limit.")
def project_update(project_id: str, clear: tuple[str, ...], **options: Any) -> None:
    """Change a project's limits (from its next release on; a change that a
    running app breaks is refused by the API at that app's next change).

    PROJECT_ID: proj_NAME."""
    from conveyor.clients.db.queries import set_project_limits

    def update(session: Any, settings: Settings) -> str:
        given: dict[str, Any] = dict.fromkeys(clear) | _limits_given(options)
        if not given:
            raise ValueError("give at least one limit option or --clear")
        return _describe_limits(set_project_limits(session, settings, project_id, given), settings)

    _in_database(update)


@project.command("list")
def project_list() -> None:
    """Print each project's id and namespace."""
    from sqlalchemy import select

    from conveyor.clients.db.models import Project

    def listing(session: Any, settings: Settings) -> str:
        projects = session.scalars(select(Project).order_by(Project.id)).all()
        return "\n".join(_describe_limits(p, settings) for p in projects)

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


@payload_key.command("reseal")
def payload_key_reseal() -> None:
    """Seal every env value, registry password and certificate key in the
    database again with the newest key (after a rotation, before an old key
    is removed)."""
    from conveyor.clients.db import sealed
    from conveyor.clients.db.session import engine_for
    from conveyor.clients.payload_codec import PayloadKeyError, load_keyring

    settings = get_settings()
    try:
        keyring = load_keyring(settings)
        sealed.use_keyring(keyring)
        with engine_for(settings.effective_database_url).begin() as connection:
            count = sum(
                sealed.reseal_rows(connection, table, column, purpose, keyring)
                for table, column, purpose in sealed.SEALED_COLUMNS
            )
            count += sealed.reseal_certificate_keys(connection, keyring)
    except PayloadKeyError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"resealed {count} values with key {keyring.current.id}")


COMMANDS = (db, token, project, payload_key)
