"""`conveyor apps …`: list, show, create, delete, scale, restart, redeploy and
roll back apps, and their custom domains and certificates. An APP argument is
the app's name or its `app_…` id."""

from __future__ import annotations

from typing import TextIO

import click

from conveyor.cli import output
from conveyor.cli.client import Api, Json
from conveyor.cli.errors import CliError, NotActive, Refused
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.cli.waiting import DURATION, Deadline, detach_option, follow_deployment, poll, timeout_option

FOLLOW_TIMEOUT = "1h"


def env_pairs(pairs: tuple[str, ...], option: str = "--env") -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"takes KEY=VALUE, got {pair.split('=', 1)[0]!r} without '='", param_hint=option)
        env[key] = value
    return env


def source_of(app: Json) -> str:
    if app["source_type"] == "image":
        return app.get("image_url") or "-"
    if app["source_type"] == "git":
        return f"{app.get('repo_url')}#{app.get('repo_branch') or 'main'}"
    return "upload"


def release(inv: Invocation, app_ref: str, app_id: str, deployment: Json, detach: bool, timeout: float) -> None:
    """A deployment just started: print it (detached), or follow it to its end."""
    out = inv.out
    if detach:
        out.document(deployment, lambda: out.say(f"deployment {deployment['id']} (v{deployment['number']}, {deployment['operation']}): {deployment['status']}"))
        return
    follow_deployment(inv.api(), out, app_ref, app_id, deployment, timeout)


def follow_latest(inv: Invocation, app_ref: str, app_id: str, detach: bool, timeout: float) -> None:
    """After a change that answers with the app (create, PATCH): follow the deployment it started."""
    deployment = inv.api().latest_deployment(app_id)
    if deployment is None:
        inv.out.say("nothing is deployed yet")
        return
    release(inv, app_ref, app_id, deployment, detach, timeout)


@click.group("apps")
def apps() -> None:
    """Apps of the token's project."""


@apps.command("list")
@global_options()
@pass_invocation
def list_apps(inv: Invocation) -> None:
    """List the apps."""
    listing = inv.api().get("/apps")
    inv.out.rows(
        listing,
        ["NAME", "ID", "STATUS", "REPLICAS", "SOURCE"],
        lambda a: [a["name"], a["id"], a["status"], a["replicas"], source_of(a)],
        empty="no apps yet: `conveyor apps create NAME --image REF` or `conveyor deploy .`",
    )


def _runtime(api: Api, app_id: str) -> tuple[Json | None, str | None]:
    try:
        status: Json = api.get(f"/apps/{app_id}/status")
        return status, None
    except CliError as exc:  # the app itself was found: show it anyway
        return None, exc.message


@apps.command("show")
@click.argument("app")
@global_options()
@pass_invocation
def show(inv: Invocation, app: str) -> None:
    """Show an app, and its replicas and pods as Kubernetes has them."""
    api = inv.api()
    found = api.app(app)
    runtime, problem = _runtime(api, found["id"])

    def human() -> None:
        output.fields(
            [
                ("name", found["name"]),
                ("id", found["id"]),
                ("status", found["status"] + (f" ({found['status_reason']})" if found.get("status_reason") else "")),
                ("source", f"{found['source_type']}: {source_of(found)}"),
                ("running", found.get("running_image")),
                ("port", found["port"]),
                ("replicas", found["replicas"] if runtime is None else f"{runtime['ready_replicas']}/{runtime['desired_replicas']} ready"),
                ("env", ", ".join(sorted(found.get("env") or {})) or "-"),
                ("last deploy", found.get("last_deploy_at")),
                ("created", found["created_at"]),
            ]
        )
        if problem:
            click.echo(f"runtime: unavailable ({problem})")
        elif runtime and runtime["pods"]:
            click.echo()
            output.table([[p["name"], p["phase"], p["ready"]] for p in runtime["pods"]], ["POD", "PHASE", "READY"])

    inv.out.document({**found, "runtime": runtime}, human)


apps.add_command(show, "get")  # the earlier name


@apps.command("pods")
@click.argument("app")
@global_options()
@pass_invocation
def pods(inv: Invocation, app: str) -> None:
    """The app's pods: phase, readiness, restarts, node, image."""
    api = inv.api()
    listing = api.get(f"/apps/{api.app_id(app)}/pods")
    inv.out.rows(
        listing,
        ["NAME", "PHASE", "READY", "RESTARTS", "NODE", "AGE", "REASON"],
        lambda p: [p["name"], p["phase"], p["ready"], p["restarts"], p.get("node"), _age(p.get("age_seconds")), p.get("reason")],
        empty="no pods",
    )


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@apps.command("create")
@click.argument("name")
@click.option("--image", metavar="REF", help="Deploy this image (an image app).")
@click.option("--git", "repo_url", metavar="URL", help="Build and deploy this git repository (a git app).")
@click.option("--branch", metavar="BRANCH", help="The git branch (default main).")
@click.option("--upload", is_flag=True, help="An app built from uploaded source (`conveyor deploy PATH --app NAME` uploads).")
@click.option("--template", metavar="ID", help="Fill the app from a template (`conveyor templates`); options given win.")
@click.option("--build-command", metavar="CMD", help="Run while building (git and upload apps).")
@click.option("--port", type=int, help="The port the app listens on (default 8080).")
@click.option("--replicas", type=int, help="How many pods (default 1).")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="An environment variable (repeatable).")
@click.option("--progress-deadline", type=int, metavar="SECONDS", help="How long a rollout may take before it fails.")
@detach_option("the first deployment")
@timeout_option(FOLLOW_TIMEOUT, "the first deployment")
@global_options()
@pass_invocation
def create(
    inv: Invocation,
    name: str,
    image: str | None,
    repo_url: str | None,
    branch: str | None,
    upload: bool,
    template: str | None,
    build_command: str | None,
    port: int | None,
    replicas: int | None,
    env: tuple[str, ...],
    progress_deadline: int | None,
    detach: bool,
    timeout: float,
) -> None:
    """Create an app from an image, a git repository, an upload or a template,
    and follow its first deployment."""
    sources = [flag for flag, given in (("--image", image), ("--git", repo_url), ("--upload", upload)) if given]
    if len(sources) > 1:
        raise click.UsageError(f"{' and '.join(sources)} exclude each other: an app has one source")
    if not sources and not template:
        raise click.UsageError("say where the app comes from: --image REF, --git URL, --upload or --template ID")
    if branch and not repo_url:
        raise click.UsageError("--branch goes with --git")
    body = {
        "name": name,
        "source_type": "git" if repo_url else "upload" if upload else "image",
        "image_url": image,
        "repo_url": repo_url,
        "repo_branch": branch,
        "build_command": build_command,
        "template_id": template,
        "port": port,
        "replicas": replicas,
        "env": env_pairs(env) or None,
        "progress_deadline_seconds": progress_deadline,
    }
    api = inv.api()
    app = api.post("/apps", {k: v for k, v in body.items() if v is not None})
    if inv.out.json and (detach or upload):
        inv.out.document(app)
        return
    inv.out.say(f"created {app['name']} ({app['id']})")
    if upload:
        inv.out.say(f"nothing to run yet: `conveyor deploy PATH --app {app['name']}` uploads the source and builds it")
        return
    follow_latest(inv, name, app["id"], detach, timeout)


def _simple_release(action: str, helptext: str, what: str) -> click.Command:
    @apps.command(action, help=helptext)
    @click.argument("app")
    @detach_option(what)
    @timeout_option(FOLLOW_TIMEOUT, what)
    @global_options()
    @pass_invocation
    def command(inv: Invocation, app: str, detach: bool, timeout: float) -> None:
        api = inv.api()
        app_id = api.app_id(app)
        release(inv, app, app_id, api.post(f"/apps/{app_id}/{action}"), detach, timeout)

    return command


_simple_release(
    "deploy",
    "Deploy the app's source again (image apps: the tag's digest now; git apps: the branch head; upload apps: the latest upload), followed.",
    "the deployment",
)
_simple_release("restart", "Restart the app's pods (a rolling restart of what runs), followed.", "the restart")


def rollback_target(api: Api, app_id: str, deployment: str | None) -> str:
    """The deployment to go back to: the one given, else the newest superseded one before the active one."""
    if deployment is not None:
        return api.deployment_id(app_id, deployment)
    history = api.get(f"/apps/{app_id}/deployments")
    active = next((d for d in history if d["status"] == "active"), None)
    earlier = [d for d in history if d["status"] == "superseded" and (active is None or d["number"] < active["number"])]
    if not earlier:
        raise Refused("there is no earlier deployment to roll back to")
    return str(earlier[0]["id"])


@apps.command("scale")
@click.argument("app")
@click.argument("replicas", type=click.IntRange(min=0))
@detach_option("the scale")
@click.option(
    "--timeout", type=DURATION, default=None, help="Give up waiting after this long (exit 1)  [default: the app's progress deadline + 1m]"
)
@global_options()
@pass_invocation
def scale(inv: Invocation, app: str, replicas: int, detach: bool, timeout: float | None) -> None:
    """Set the replica count, and wait until that many pods are ready."""
    api = inv.api()
    app_id = api.app_id(app)
    changed = api.request("PATCH", f"/apps/{app_id}", json={"replicas": replicas}).json()
    if detach:
        inv.out.document(changed, lambda: inv.out.say(f"scaling {changed['name']} to {changed['replicas']}"))
        return
    inv.out.say(f"scaling {changed['name']} to {changed['replicas']}")
    seconds = timeout if timeout is not None else changed["progress_deadline_seconds"] + 60
    seen: Json = {}

    def scaled() -> bool:
        status = api.get(f"/apps/{app_id}/status")
        line = f"  {status['ready_replicas']}/{status['desired_replicas']} ready"
        if seen.get("line") != line:
            inv.out.say(line)
            seen["line"] = line
        return bool(status["desired_replicas"] == status["ready_replicas"] == replicas)

    poll(Deadline(seconds), scaled, what=f"{changed['name']} was not at {replicas} ready replicas", going_on="the scale goes on")
    if inv.out.json:
        inv.out.document(api.get(f"/apps/{app_id}"))


@apps.command("delete")
@click.argument("app")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the app and its Kubernetes objects are gone.")
@timeout_option("5m", "the delete")
@global_options()
@pass_invocation
def delete(inv: Invocation, app: str, wait: bool, timeout: float) -> None:
    """Delete the app: its Deployment, Service, Ingress and env Secret, then the app."""
    api = inv.api()
    app_id = api.app_id(app)
    deleting = api.request("DELETE", f"/apps/{app_id}").json()
    inv.out.say(f"deleting {deleting['name']} ({app_id})")
    if not wait:
        if inv.out.json:
            inv.out.document(deleting)
        return
    failed: Json = {}

    def gone() -> bool:
        now = api.find(f"/apps/{app_id}")
        if now is None:
            return True
        if now["status"] == "delete_failed":
            failed["reason"] = now.get("status_reason")
            return True
        return False

    poll(Deadline(timeout), gone, what=f"{deleting['name']} was still there", going_on=f"the delete goes on (`conveyor apps show {app_id}`)")
    if failed:
        raise NotActive(f"the delete failed: {failed['reason']}; remove the cause and `conveyor apps delete {app_id}` again")
    inv.out.say("deleted")
    if inv.out.json:
        inv.out.document({**deleting, "status": "deleted"})


def _certificate_cell(state: Json) -> str:
    if state["source"] == "none":
        return "none"
    return state["state"] if state["source"] == "uploaded" else f"cert-manager: {state['state']}"


@apps.command("domains")
@click.argument("app")
@click.option("--add", multiple=True, metavar="DOMAIN", help="Serve this domain too (repeatable); a release, followed.")
@click.option("--remove", multiple=True, metavar="DOMAIN", help="Stop serving this domain (repeatable); a release, followed.")
@detach_option("the release")
@timeout_option(FOLLOW_TIMEOUT, "the release")
@global_options()
@pass_invocation
def domains(inv: Invocation, app: str, add: tuple[str, ...], remove: tuple[str, ...], detach: bool, timeout: float) -> None:
    """The app's custom domains and their certificates; --add and --remove change them."""
    api = inv.api()
    app_id = api.app_id(app)
    if add or remove:
        current = api.get(f"/apps/{app_id}").get("domains") or []
        wanted = [d for d in current if d not in remove] + [d for d in add if d not in current]
        changed = api.request("PATCH", f"/apps/{app_id}", json={"domains": wanted})
        if changed.status_code == 202:
            follow_latest(inv, app, app_id, detach, timeout)
        else:
            inv.out.say("the domains are as asked already")
        if inv.out.json:
            return
    listing = api.get(f"/apps/{app_id}/domains")

    def human() -> None:
        click.echo(f"default host: {listing['default_host']}")
        rows = [[d["domain"], _certificate_cell(d["certificate"]), d["certificate"].get("expires_at"), d["certificate"].get("secret_name")] for d in listing["domains"]]
        if rows:
            output.table(rows, ["DOMAIN", "CERTIFICATE", "EXPIRES", "SECRET"])
        else:
            click.echo("no custom domains: `conveyor apps domains APP --add shop.example.com`")

    inv.out.document(listing, human)


@apps.command("certificate")
@click.argument("app")
@click.argument("domain")
@click.option("--cert", "cert_file", type=click.File("r"), metavar="FILE", help="PEM certificate chain, the domain's certificate first.")
@click.option("--key", "key_file", type=click.File("r"), metavar="FILE", help="Its PEM private key (no passphrase).")
@click.option("--delete", is_flag=True, help="Delete the domain's uploaded certificate instead.")
@detach_option("the release")
@timeout_option(FOLLOW_TIMEOUT, "the release")
@global_options()
@pass_invocation
def certificate(
    inv: Invocation, app: str, domain: str, cert_file: TextIO | None, key_file: TextIO | None, delete: bool, detach: bool, timeout: float
) -> None:
    """Upload a certificate and key for one of the app's domains (or --delete it); the release that
    writes its Secret is followed."""
    if delete == bool(cert_file or key_file) or not (delete or (cert_file and key_file)):
        raise click.UsageError("give --cert FILE and --key FILE, or --delete")
    api = inv.api()
    app_id = api.app_id(app)
    path = f"/apps/{app_id}/domains/{domain}/certificate"
    if delete:
        answer = api.request("DELETE", path).json()
    else:
        assert cert_file is not None and key_file is not None
        answer = api.request("PUT", path, json={"certificate": cert_file.read(), "key": key_file.read()}).json()
    state = answer["certificate"]
    inv.out.say(f"{domain}: {_certificate_cell(state)}" + (f", expires {state['expires_at']}" if state.get("expires_at") else ""))
    if answer.get("deployment_id"):
        release(inv, app, app_id, api.get(f"/apps/{app_id}/deployments/{answer['deployment_id']}"), detach, timeout)
    elif inv.out.json:
        inv.out.document(answer)
