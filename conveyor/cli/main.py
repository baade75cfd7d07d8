"""The `conveyor` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from conveyor.settings import get_settings
from conveyor.stack.platform import Platform, StartupError, format_bytes
from conveyor.stack.processes import PortInUse


def _progress_printer():
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    return progress


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    platform = Platform(settings, _progress_printer())
    try:
        platform.up()
    except (StartupError, PortInUse, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not args.detach and platform.started:
            print(f"stopping what this run started: {', '.join(platform.started)}", file=sys.stderr)
            platform.stop(platform.started)
        return 1
    print()
    for label, url in platform.urls():
        print(f"  {label:<18} {url}")
    print()
    if args.detach:
        print("running in the background; `conveyor status` shows it, `conveyor down` stops it")
        return 0
    print("running; press Ctrl-C to stop what this command started")
    stop = {"requested": False}

    def request_stop(signum, frame):  # noqa: ARG001
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop["requested"]:
        time.sleep(0.5)
    print("\nstopping ...", flush=True)
    stopped = platform.stop(platform.started)
    print(f"stopped: {', '.join(stopped) or 'nothing (every part was already running before)'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    platform = Platform(get_settings())
    if args.purge:
        platform.purge()
        print("stopped everything and deleted the local cluster")
        return 0
    stopped = platform.stop()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = Platform(get_settings()).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for part in status["parts"]:
            state = "running" if part["running"] else "stopped"
            print(f"{part['title']:<24} {state:<8} {part['url']:<32} {format_bytes(part['rss_bytes']):>9}")
        print(f"{'Temporal Web UI':<24} {'':<8} {status['temporal_ui']}")
        print(f"{'total memory (RSS)':<24} {'':<8} {'':<32} {format_bytes(status['rss_bytes']):>9}")
    return 0 if status["all_running"] else 3


def cmd_build_binaries(args: argparse.Namespace) -> int:  # noqa: ARG001
    from conveyor.stack import binaries

    binaries.ensure_binaries(_progress_printer(), [*binaries.all_binaries(), binaries.temporal_ui()])
    print(binaries.bin_dir())
    return 0


def _in_database(work) -> int:
    """Run `work(session, settings)` on the migrated database; print what it returns.

    Talks to the database directly (not the API): whoever runs this holds the
    platform's database credentials, which is what makes them the operator."""
    from conveyor.clients.db.queries import ensure_default_project
    from conveyor.clients.db.session import migrate, session_scope

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)  # where the SQLite file goes by default
    migrate(settings.effective_database_url)
    try:
        with session_scope(settings.effective_database_url) as session:
            ensure_default_project(session, settings)
            output = work(session, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(output)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from conveyor.clients.db import tokens

    return _in_database(lambda session, settings: tokens.create_token(session, args.project, args.role, args.name))


def cmd_project_create(args: argparse.Namespace) -> int:
    from conveyor.clients.db.queries import create_project

    return _in_database(lambda session, settings: create_project(session, settings, args.name).id)


def cmd_project_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    from sqlalchemy import select

    from conveyor.clients.db.models import Project

    def listing(session, settings) -> str:  # noqa: ARG001
        projects = session.scalars(select(Project).order_by(Project.id)).all()
        return "\n".join(f"{p.id:<24} {p.namespace}" for p in projects)

    return _in_database(listing)


def cmd_payload_key_rotate(args: argparse.Namespace) -> int:  # noqa: ARG001
    from conveyor.clients.payload_codec import PayloadKeyError, add_key

    settings = get_settings()
    if settings.payload_keys is not None:
        print("error: keys come from CONVEYOR_PAYLOAD_KEYS: put a new id:base64key first in it instead", file=sys.stderr)
        return 2
    path = settings.effective_payload_key_file
    try:
        key_id = add_key(path)
    except PayloadKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key {key_id} added first in {path}; restart the worker and the API (conveyor down && conveyor up)")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:  # noqa: ARG001
    from conveyor.clients.db.session import current_revision, migrate

    settings = get_settings()
    before = migrate(settings.effective_database_url)
    after = current_revision(settings.effective_database_url)
    print(f"database schema at {after}" + (f" (was {before or 'empty'})" if before != after else " (already current)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description="Conveyor: deploy containers to Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local platform (Kubernetes, Temporal, registry)")
    up.add_argument("--detach", "-d", action="store_true", help="start in the background and return")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the local platform")
    down.add_argument("--purge", action="store_true", help="also delete the local cluster and its data")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="show what runs (exit 3 when a part is down)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--project", default="proj_default")
    create.add_argument("--role", required=True, choices=["viewer", "deployer", "admin"])
    create.add_argument("--name", required=True, help="recorded as the user in audit entries")
    create.set_defaults(func=cmd_token_create)

    project = sub.add_parser("project", help="projects: each has its own tokens, apps and namespace")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    project_create = project_sub.add_parser("create", help="create a project and print its id (proj_<name>)")
    project_create.add_argument("name", help="lowercase letters, digits and dashes; its apps go to <prefix><name>")
    project_create.set_defaults(func=cmd_project_create)
    project_list = project_sub.add_parser("list", help="print each project's id and namespace")
    project_list.set_defaults(func=cmd_project_list)

    payload_key = sub.add_parser("payload-key", help="keys that encrypt Temporal payloads")
    payload_key_sub = payload_key.add_subparsers(dest="payload_key_command", required=True)
    rotate = payload_key_sub.add_parser(
        "rotate", help="add a new key first in the key file: it encrypts from the next start, older keys still decrypt"
    )
    rotate.set_defaults(func=cmd_payload_key_rotate)

    db = sub.add_parser("db", help="the database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser(
        "upgrade", help="run the migrations to the current schema (concurrent runs wait for each other); before starting a new release"
    )
    upgrade.set_defaults(func=cmd_db_upgrade)

    from conveyor.cli import apps

    apps.add_commands(sub)

    build = sub.add_parser("build-binaries", help="build the Kubernetes, etcd, KWOK and Temporal Web UI binaries into the cache")
    build.set_defaults(func=cmd_build_binaries)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "api_func"):
        from conveyor.cli import apps

        return apps.run(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
