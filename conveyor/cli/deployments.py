"""`conveyor deployments …`: an app's releases. A DEPLOYMENT argument is its
`dep_…` id or its number (`v3` or `3`). `conveyor deployments APP` lists."""

from __future__ import annotations

import click

from conveyor.cli import output
from conveyor.cli.apps import FOLLOW_TIMEOUT, apps, release, rollback_target
from conveyor.cli.client import Json
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.cli.waiting import detach_option, follow_deployment, timeout_option


class ListByDefault(click.Group):
    """`deployments APP` is `deployments list APP`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("deployments", cls=ListByDefault)
def deployments() -> None:
    """An app's deployments, newest first."""


def _image(dep: Json) -> str:
    return dep.get("image_ref") or dep.get("image") or (f"build {dep['build_id']}" if dep.get("build_id") else "-")


@deployments.command("list")
@click.argument("app")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="How many, newest first.")
@global_options()
@pass_invocation
def list_deployments(inv: Invocation, app: str, limit: int) -> None:
    """List the app's deployments."""
    api = inv.api()
    rows = api.get(f"/apps/{api.app_id(app)}/deployments", limit=limit)
    inv.out.rows(
        rows,
        ["VERSION", "ID", "OPERATION", "STATUS", "IMAGE", "CREATED"],
        lambda d: [f"v{d['number']}", d["id"], d["operation"], d["status"], _image(d), d["created_at"]],
        empty="no deployments yet",
    )


@deployments.command("show")
@click.argument("app")
@click.argument("deployment")
@click.option("--follow", "-f", is_flag=True, help="Follow its progress until it ends (exit 1 unless active).")
@timeout_option(FOLLOW_TIMEOUT, "the deployment (with --follow)")
@global_options()
@pass_invocation
def show(inv: Invocation, app: str, deployment: str, follow: bool, timeout: float) -> None:
    """Show a deployment and its steps."""
    api = inv.api()
    app_id = api.app_id(app)
    dep = api.get(f"/apps/{app_id}/deployments/{api.deployment_id(app_id, deployment)}")
    if follow:
        follow_deployment(api, inv.out, app, app_id, dep, timeout)
        return

    def human() -> None:
        output.fields(
            [
                ("deployment", f"{dep['id']} (v{dep['number']}, {dep['operation']})"),
                ("status", dep["status"] + (f": {dep['reason']}" if dep.get("reason") else "")),
                ("image", _image(dep)),
                ("commit", dep.get("source_commit")),
                ("port", dep["port"]),
                ("env", ", ".join(dep.get("env_keys") or []) or "-"),
                ("rollback of", dep.get("rollback_of")),
                ("retry of", dep.get("retry_of")),
                ("by", dep["created_by"]),
                ("created", dep["created_at"]),
                ("started", dep.get("started_at")),
                ("finished", dep.get("finished_at")),
                ("workflow", dep["workflow_id"]),
            ]
        )
        if dep.get("progress"):
            click.echo()
            output.table([[s["name"], s["state"], s.get("detail") or "", s["updated_at"]] for s in dep["progress"]], ["STEP", "STATE", "DETAIL", "UPDATED"])

    inv.out.document(dep, human)


@deployments.command("cancel")
@click.argument("app")
@click.argument("deployment")
@global_options()
@pass_invocation
def cancel(inv: Invocation, app: str, deployment: str) -> None:
    """Cancel a queued or running deployment (a running one puts the previous release back first)."""
    api = inv.api()
    app_id = api.app_id(app)
    dep = api.post(f"/apps/{app_id}/deployments/{api.deployment_id(app_id, deployment)}/cancel")
    inv.out.document(dep, lambda: inv.out.say(f"deployment {dep['id']} (v{dep['number']}): {dep['status']}"))


@deployments.command("retry")
@click.argument("app")
@click.argument("deployment")
@detach_option("the new deployment")
@timeout_option(FOLLOW_TIMEOUT, "the new deployment")
@global_options()
@pass_invocation
def retry(inv: Invocation, app: str, deployment: str, detach: bool, timeout: float) -> None:
    """Deploy a failed or cancelled deployment's snapshot again, followed."""
    api = inv.api()
    app_id = api.app_id(app)
    release(inv, app, app_id, api.post(f"/apps/{app_id}/deployments/{api.deployment_id(app_id, deployment)}/retry"), detach, timeout)


@deployments.command("rollback")
@click.argument("app")
@click.argument("deployment", required=False)
@detach_option("the rollback")
@timeout_option(FOLLOW_TIMEOUT, "the rollback")
@global_options()
@pass_invocation
def rollback(inv: Invocation, app: str, deployment: str | None, detach: bool, timeout: float) -> None:
    """Roll back to DEPLOYMENT (dep_… or v3; default: the one before the active
    one): its image, env, port, health checks and resources, followed."""
    api = inv.api()
    app_id = api.app_id(app)
    target = rollback_target(api, app_id, deployment)
    release(inv, app, app_id, api.post(f"/apps/{app_id}/deployments/{target}/revert"), detach, timeout)


# `conveyor apps rollback` is the same command.
apps.add_command(rollback)
