"""The local platform's commands: `up`, `down`, `status`, `build-binaries`.

The one module of the command line that imports `conveyor.stack`; the root
group (conveyor/cli/main.py) loads it only when one of these commands runs."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import click

from conveyor.cli.errors import ExitCode
from conveyor.settings import get_settings
from conveyor.stack import binaries
from conveyor.stack.platform import Platform, StartupError, format_bytes
from conveyor.stack.processes import PortInUse


def _progress_printer() -> Callable[[str], None]:
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {message}")

    return progress


@click.command("up")
@click.option("--detach", "-d", is_flag=True, help="Start in the background and return.")
def up(detach: bool) -> None:
    """Start every part of the local platform that is not running (Kubernetes, Temporal, registry, API, worker)."""
    platform = Platform(get_settings(), _progress_printer())
    try:
        platform.up()
    except (StartupError, PortInUse, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        if not detach and platform.started:
            click.echo(f"stopping what this run started: {', '.join(platform.started)}", err=True)
            platform.stop(platform.started)
        raise click.exceptions.Exit(1) from None
    click.echo()
    for label, url in platform.urls():
        click.echo(f"  {label:<18} {url}")
    click.echo()
    if detach:
        click.echo("running in the background; `conveyor status` shows it, `conveyor down` stops it")
        return
    click.echo("running; press Ctrl-C to stop what this command started")
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop["requested"]:
        time.sleep(0.5)
    click.echo("\nstopping ...")
    stopped = platform.stop(platform.started)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing (every part was already running before)'}")


@click.command("down")
@click.option("--purge", is_flag=True, help="Also delete the local cluster and its data.")
def down(purge: bool) -> None:
    """Stop every part of the local platform."""
    platform = Platform(get_settings())
    if purge:
        platform.purge()
        click.echo("stopped everything and deleted the local cluster")
        return
    stopped = platform.stop()
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the same as -o json).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), help="table (default) or json.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, output: str | None) -> None:
    """Each part, whether it answers, its URL and memory; exit 3 if a part is down."""
    root = ctx.find_root().obj
    as_json = as_json or output == "json" or (output is None and getattr(root, "output_format", None) == "json")
    report = Platform(get_settings()).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for part in report["parts"]:
            state = "running" if part["running"] else "stopped"
            click.echo(f"{part['title']:<24} {state:<8} {part['url']:<32} {format_bytes(part['rss_bytes']):>9}")
        click.echo(f"{'Temporal Web UI':<24} {'':<8} {report['temporal_ui']}")
        click.echo(f"{'total memory (RSS)':<24} {'':<8} {'':<32} {format_bytes(report['rss_bytes']):>9}")
    if not report["all_running"]:
        raise click.exceptions.Exit(ExitCode.PLATFORM_DOWN)


@click.command("build-binaries")
def build_binaries() -> None:
    """Build the pinned Kubernetes, etcd, KWOK, metrics-server and Temporal Web UI binaries into the cache; print where."""
    binaries.ensure_binaries(_progress_printer(), [*binaries.all_binaries(), binaries.temporal_ui()])
    click.echo(binaries.bin_dir())


COMMANDS = (up, down, status, build_binaries)
