"""`conveyor logs|build-log|events|metrics|audit|templates`: what runs and what happened."""

from __future__ import annotations

from collections.abc import Iterator

import click
import httpx

from conveyor.cli import output
from conveyor.cli.client import Api, Json
from conveyor.cli.errors import Interrupted, NotActive
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.cli.waiting import Deadline, timeout_option

# A followed build log that says nothing for this long is opened again (the lines
# already printed are skipped), so that no read blocks past the deadline.
QUIET_SECONDS = 30.0


def _lines(api: Api, path: str, params: Json, read_timeout: float | None) -> Iterator[str]:
    try:
        with api.http.stream("GET", path, params=params, timeout=httpx.Timeout(10.0, read=read_timeout)) as response:
            api.check(response)
            yield from response.iter_lines()
    except httpx.ReadTimeout:
        raise
    except httpx.TransportError as exc:
        raise api.unreachable(exc) from exc


@click.command("logs")
@click.argument("app")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new lines, from new pods too, until Ctrl-C.")
@click.option("--tail", type=click.IntRange(min=0), help="The last N lines of each pod.")
@click.option("--since", metavar="DURATION", help="Only lines newer than this: 90, 30s, 5m, 2h.")
@click.option("--pod", help="Only this pod.")
@click.option("--container", help="This container of the pod.")
@click.option("--previous", is_flag=True, help="The previous (crashed) container's lines.")
@global_options()
@pass_invocation
def logs(inv: Invocation, app: str, follow: bool, tail: int | None, since: str | None, pod: str | None, container: str | None, previous: bool) -> None:
    """The app's log lines, each prefixed with [pod]."""
    api = inv.api()
    params = {"follow": str(follow).lower(), "tail": tail, "since": since, "pod": pod, "container": container, "previous": str(previous).lower()}
    params = {k: v for k, v in params.items() if v is not None}
    try:
        for line in _lines(api, f"/apps/{api.app_id(app)}/logs", params, None):
            click.echo(line)
    except KeyboardInterrupt:
        raise Interrupted() from None


@click.command("build-log")
@click.argument("app")
@click.option("--build-id", metavar="BUILD", help="bld_… (default: the latest build).")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the build ends.")
@timeout_option("1h", "the build (with --follow)")
@global_options()
@pass_invocation
def build_log(inv: Invocation, app: str, build_id: str | None, follow: bool, timeout: float) -> None:
    """The log of the app's latest build (git and upload apps)."""
    api = inv.api()
    path = f"/apps/{api.app_id(app)}/build-log"
    params = {"follow": str(follow).lower(), **({"build_id": build_id} if build_id else {})}
    if not follow:
        click.echo(api.request("GET", path, params=params).text, nl=False)
        return
    deadline = Deadline(timeout)
    printed = 0
    try:
        while True:
            if deadline.passed:
                raise NotActive(f"the build had not ended after {timeout:.0f}s (--timeout); it goes on")
            seen = 0
            try:
                for line in _lines(api, path, params, max(0.1, min(deadline.remaining(), QUIET_SECONDS))):
                    seen += 1
                    if seen > printed:
                        click.echo(line)
                        printed = seen
                return  # the server ends the stream when the build ends
            except httpx.ReadTimeout:
                continue
    except KeyboardInterrupt:
        raise Interrupted() from None


@click.command("events")
@click.argument("app")
@click.option("--limit", type=click.IntRange(1, 200), help="Only the newest N.")
@global_options()
@pass_invocation
def events(inv: Invocation, app: str, limit: int | None) -> None:
    """Kubernetes events of the app's Deployment, ReplicaSets and pods, newest first."""
    api = inv.api()
    listing = api.get(f"/apps/{api.app_id(app)}/events", limit=limit)
    inv.out.rows(
        listing,
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        lambda e: [e.get("last_seen"), e["type"], e["reason"], e["object"], e["count"], e["message"]],
        empty="no events",
    )


@click.command("metrics")
@click.argument("app")
@global_options()
@pass_invocation
def metrics(inv: Invocation, app: str) -> None:
    """CPU, memory, disk and network of the app's pods."""
    api = inv.api()
    figures = api.get(f"/apps/{api.app_id(app)}/metrics")

    def human() -> None:
        output.table(
            [
                [p["name"], _millicores(p.get("cpu_millicores")), output.size(p.get("memory_bytes")), output.size(p.get("disk_bytes")),
                 output.size(p.get("network_rx_bytes")), output.size(p.get("network_tx_bytes"))]
                for p in figures["pods"]
            ]
            + [["total", *(_total(figures[k], k) for k in ("cpu", "memory", "disk", "network_rx", "network_tx"))]],
            ["POD", "CPU", "MEMORY", "DISK", "NET RX", "NET TX"],
        )
        for key in ("cpu", "memory", "disk", "network_rx", "network_tx"):
            if not figures[key]["available"]:
                click.echo(f"{key}: not available: {figures[key].get('reason')}")

    inv.out.document(figures, human)


def _millicores(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}m"


def _total(measure: Json, key: str) -> str:
    if not measure["available"] or measure.get("total") is None:
        return "-"
    return _millicores(measure["total"]) if key == "cpu" else output.size(measure["total"])


@click.command("audit")
@click.argument("app")
@click.option("--limit", type=click.IntRange(1, 200), help="Only the newest N.")
@global_options()
@pass_invocation
def audit(inv: Invocation, app: str, limit: int | None) -> None:
    """Who did what to the app, newest first."""
    api = inv.api()
    listing = api.get(f"/apps/{api.app_id(app)}/audit", limit=limit)
    inv.out.rows(
        listing,
        ["TIME", "USER", "ACTION", "DEPLOYMENT", "DETAILS"],
        lambda e: [e["created_at"], e["user"], e["action"], e.get("deployment_id"), e["details"]],
    )


@click.command("templates")
@global_options()
@pass_invocation
def templates(inv: Invocation) -> None:
    """The one-click catalogue (`conveyor apps create NAME --template ID`)."""
    inv.out.rows(
        inv.api().get("/templates"),
        ["ID", "NAME", "IMAGE", "PORT", "DESCRIPTION"],
        lambda t: [t["id"], t["name"], t["image_url"], t["port"], t["description"]],
    )

