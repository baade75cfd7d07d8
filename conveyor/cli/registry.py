"""`conveyor registry login|logout|list`: the project's registry credentials.

The password is read from stdin (`--password-stdin`, as `docker login` has
it) or asked for without echo; never taken as an argument, which the shell's
history and the process list would show."""

from __future__ import annotations

import sys
from urllib.parse import quote

import click

from conveyor.cli.invocation import Invocation, global_options, pass_invocation


@click.group("registry")
def registry() -> None:
    """Credentials of private registries the project's images come from (admin)."""


@registry.command("login")
@click.argument("server", metavar="REGISTRY")
@click.option("-u", "--username", required=True, help="the registry user (or the token's name)")
@click.option("--password-stdin", is_flag=True, help="read the password or token from stdin")
@global_options()
@pass_invocation
def login(inv: Invocation, server: str, username: str, password_stdin: bool) -> None:
    """Save the project's credential for REGISTRY (host or host:port; docker.io for
    Docker Hub), replacing one it had. Digests resolve with it at once; pods pull
    with it from the next release."""
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {username} at {server}", hide_input=True)
    if not password:
        raise click.UsageError("no password given")
    response = inv.api().request("POST", "/registry-credentials", json={"registry": server, "username": username, "password": password})
    saved = response.json()
    verb = "saved" if response.status_code == 201 else "replaced"
    inv.out.document(saved, lambda: inv.out.say(f"{verb} the credential for {saved['registry']} ({saved['id']}, user {saved['username']})"))


@registry.command("logout")
@click.argument("server", metavar="REGISTRY|ID")
@global_options()
@pass_invocation
def logout(inv: Invocation, server: str) -> None:
    """Delete the project's credential for REGISTRY (or by its rc_… id)."""
    inv.api().request("DELETE", f"/registry-credentials/{quote(server, safe=':')}")
    inv.out.document({"deleted": server}, lambda: inv.out.say(f"deleted the credential for {server}"))


@registry.command("list")
@global_options()
@pass_invocation
def list_credentials(inv: Invocation) -> None:
    """The project's credentials (never their passwords)."""
    rows = inv.api().get("/registry-credentials")
    inv.out.document(
        rows,
        lambda: inv.out.rows(rows, ["ID", "REGISTRY", "USERNAME", "UPDATED"], lambda r: [r["id"], r["registry"], r["username"], r["updated_at"]], empty="no credentials"),
    )
