"""`conveyor deploy [PATH]`: ship what is here, as `fly deploy` does.

Packs PATH (default `.`) into a tar.gz, honouring `.gitignore` and
`.dockerignore` (conveyor/cli/source.py), creates the upload app if it does not
exist yet (named after the directory unless `--app` says otherwise), uploads
the archive (`POST /apps/{id}/build`) and follows the build and rollout.
`--image REF` deploys an image instead: it creates the image app, or points an
existing one at REF."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from conveyor.cli import output, source
from conveyor.cli.apps import FOLLOW_TIMEOUT, env_pairs, follow_latest, release
from conveyor.cli.client import Json
from conveyor.cli.errors import Refused
from conveyor.cli.invocation import Invocation, global_options, pass_invocation
from conveyor.cli.waiting import detach_option, timeout_option


@click.command("deploy")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--app", "-a", "name", metavar="NAME", help="The app (default: the directory's name).")
@click.option("--image", metavar="REF", help="Deploy this image instead of the directory's source.")
@click.option("--build-command", metavar="CMD", help="Run while building (when this creates the app).")
@click.option("--port", type=int, help="The port the app listens on (when this creates the app; default 8080).")
@click.option("--replicas", type=int, help="How many pods (when this creates the app; default 1).")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="An environment variable (when this creates the app).")
@detach_option("the build and rollout")
@timeout_option(FOLLOW_TIMEOUT, "the build and rollout")
@global_options()
@pass_invocation
def deploy(
    inv: Invocation,
    path: Path,
    name: str | None,
    image: str | None,
    build_command: str | None,
    port: int | None,
    replicas: int | None,
    env: tuple[str, ...],
    detach: bool,
    timeout: float,
) -> None:
    """Pack PATH (default .) as .gitignore and .dockerignore say, upload it to
    its upload app (created when missing), and follow the build and rollout.
    With --image REF: deploy that image to the image app --app NAME."""
    if image and not name:
        raise click.UsageError("--image needs --app NAME")
    name = name or path.resolve().name
    api = inv.api()
    found = api.get("/apps", name=name)
    settings = {"port": port, "replicas": replicas, "env": env_pairs(env) or None, "build_command": build_command}
    settings = {k: v for k, v in settings.items() if v is not None}
    if found and settings:
        raise Refused(
            f"{name} exists: {', '.join('--' + k.replace('_', '-') for k in settings)} only apply when deploy creates the app; "
            "change it with `conveyor env set`, `conveyor apps scale` or the API"
        )
    if image:
        _deploy_image(inv, name, found[0] if found else None, image, settings, detach, timeout)
        return
    if found and found[0]["source_type"] != "upload":
        raise Refused(f"{name} is a {found[0]['source_type']} app: only upload apps take a directory (use --image, or `conveyor apps deploy {name}`)")
    app = found[0] if found else api.post("/apps", {"name": name, "source_type": "upload", **settings})
    if not found:
        inv.out.say(f"created {app['name']} ({app['id']})")
    with tempfile.TemporaryFile() as archive:
        members = source.pack(path, archive)
        size = archive.tell()
        archive.seek(0)
        inv.out.say(f"uploading {len(members)} entries of {path} ({output.size(size)})")
        deployment = api.post(f"/apps/{app['id']}/build", files={"file": (f"{app['slug']}.tar.gz", archive, "application/gzip")})
    release(inv, name, app["id"], deployment, detach, timeout)


def _deploy_image(inv: Invocation, name: str, app: Json | None, image: str, settings: Json, detach: bool, timeout: float) -> None:
    api = inv.api()
    if app is None:
        created = api.post("/apps", {"name": name, "source_type": "image", "image_url": image, **settings})
        inv.out.say(f"created {created['name']} ({created['id']})")
        follow_latest(inv, name, created["id"], detach, timeout)
        return
    if app["source_type"] != "image":
        raise Refused(f"{name} is a {app['source_type']} app: it deploys its own source, not --image")
    if app.get("image_url") == image:  # the same reference: resolve its tag again
        release(inv, name, app["id"], api.post(f"/apps/{app['id']}/deploy"), detach, timeout)
        return
    api.request("PATCH", f"/apps/{app['id']}", json={"image_url": image})
    follow_latest(inv, name, app["id"], detach, timeout)
