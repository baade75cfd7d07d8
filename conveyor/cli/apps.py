"""`conveyor apps|logs|deployments`: the API from a terminal.

The token comes from CONVEYOR_TOKEN, else from the config file
(~/.config/conveyor/config.json: {"url": ..., "token": ...}), else from the
local platform's bootstrap admin token. `deploy`, `restart` and `rollback`
follow the deployment's live progress and exit non-zero unless it ends active.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx

from conveyor.settings import get_settings

CONFIG_FILE = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "conveyor" / "config.json"
MARKS = {"running": "…", "done": "✓", "failed": "✗"}


class CliError(RuntimeError):
    pass


def _config() -> dict:
    try:
        return json.loads(CONFIG_FILE.read_text())
    except (OSError, ValueError):
        return {}


class ApiClient:
    def __init__(self) -> None:
        settings = get_settings()
        config = _config()
        self.url = os.environ.get("CONVEYOR_API_URL") or config.get("url") or settings.api_url
        token = os.environ.get("CONVEYOR_TOKEN") or config.get("token")
        if not token and settings.admin_token_file.exists():
            token = settings.admin_token_file.read_text().strip()
        if not token:
            raise CliError(f"no token: set CONVEYOR_TOKEN or write {CONFIG_FILE}")
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the API at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            if isinstance(detail, list):
                detail = "; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in detail)
            raise CliError(f"{response.status_code}: {detail}")
        return response

    def app_id(self, name_or_id: str) -> str:
        if name_or_id.startswith("app_"):
            return name_or_id
        cursor = None
        while True:
            response = self.call("GET", "/apps", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
            for app in response.json():
                if app["name"] == name_or_id or app["slug"] == name_or_id:
                    return app["id"]
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                raise CliError(f"no app named {name_or_id}")

    def follow(self, app_id: str, deployment: dict) -> int:
        """Print the steps of a deployment as they happen; 0 when it ends active."""
        started = time.monotonic()
        print(f"deployment {deployment['id']} (v{deployment['number']}, {deployment['operation']}): {deployment['status']}")
        path = f"/apps/{app_id}/deployments/{deployment['id']}/progress"
        event = None
        with self.http.stream("GET", path, timeout=None) as response:
            if response.status_code >= 400:
                raise CliError(f"{response.status_code}: cannot follow the deployment")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    elapsed = time.monotonic() - started
                    if event == "step":
                        detail = f"  {data['detail']}" if data.get("detail") else ""
                        print(f"[{elapsed:5.1f}s] {MARKS.get(data['state'], '?')} {data['name']:<9}{detail}", flush=True)
                    elif event == "end":
                        print(f"[{elapsed:5.1f}s] {data['status']}" + (f": {data['reason']}" if data.get("reason") else ""))
                        return 0 if data["status"] == "active" else 1
        raise CliError("the progress stream ended before the deployment did")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        if "=" not in pair:
            raise CliError(f"--env takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        env[key] = value
    return env


def apps_list(api: ApiClient, args) -> int:
    apps = api.call("GET", "/apps").json()  # without a limit: the whole list
    _table([[a["name"], a["id"], a["status"], str(a["replicas"]), a["image_url"] or a["source_type"]] for a in apps], ["NAME", "ID", "STATUS", "REPLICAS", "IMAGE"])
    return 0


def apps_create(api: ApiClient, args) -> int:
    body = {"name": args.name, "image_url": args.image, "port": args.port, "replicas": args.replicas, "env": _env_pairs(args.env)}
    if args.progress_deadline is not None:
        body["progress_deadline_seconds"] = args.progress_deadline
    app = api.call("POST", "/apps", json=body).json()
    print(f"created {app['name']} ({app['id']})")
    if args.no_follow:
        return 0
    deployment = api.call("GET", f"/apps/{app['id']}/deployments", params={"limit": 1}).json()[0]
    return api.follow(app["id"], deployment)


def apps_get(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    print(json.dumps({**api.call("GET", f"/apps/{app_id}").json(), "runtime": api.call("GET", f"/apps/{app_id}/status").json()}, indent=2))
    return 0


def _release(api: ApiClient, app_id: str, path: str, no_follow: bool) -> int:
    deployment = api.call("POST", f"/apps/{app_id}{path}").json()
    return 0 if no_follow else api.follow(app_id, deployment)


def apps_deploy(api: ApiClient, args) -> int:
    return _release(api, api.app_id(args.app), "/deploy", args.no_follow)


def apps_restart(api: ApiClient, args) -> int:
    return _release(api, api.app_id(args.app), "/restart", args.no_follow)


def apps_rollback(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    target = args.deployment
    if target is None:
        history = api.call("GET", f"/apps/{app_id}/deployments").json()
        active = next((d for d in history if d["status"] == "active"), None)
        earlier = [d for d in history if d["status"] == "superseded" and (active is None or d["number"] < active["number"])]
        if not earlier:
            raise CliError("there is no earlier deployment to roll back to")
        target = earlier[0]["id"]
    return _release(api, app_id, f"/deployments/{target}/revert", args.no_follow)


def apps_scale(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    app = api.call("PATCH", f"/apps/{app_id}", json={"replicas": args.replicas}).json()
    print(f"scaling {app['name']} to {app['replicas']}")
    if args.no_follow:
        return 0
    deadline = time.monotonic() + app["progress_deadline_seconds"] + 30
    while time.monotonic() < deadline:
        status = api.call("GET", f"/apps/{app_id}/status").json()
        print(f"  {status['ready_replicas']}/{status['desired_replicas']} ready", flush=True)
        if status["desired_replicas"] == status["ready_replicas"] == args.replicas:
            return 0
        time.sleep(1)
    return 1


def apps_delete(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    api.call("DELETE", f"/apps/{app_id}")
    print(f"deleting {app_id}")
    if args.no_follow:
        return 0
    while True:
        try:
            app = api.call("GET", f"/apps/{app_id}").json()
        except CliError as exc:
            if str(exc).startswith("404"):
                print("deleted")
                return 0
            raise
        if app.get("status") == "delete_failed":
            print(f"delete failed: {app.get('status_reason')}; remove the cause and delete again", file=sys.stderr)
            return 1
        time.sleep(1)


def logs(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    params = {"follow": str(args.follow).lower()}
    if args.tail is not None:
        params["tail"] = args.tail
    with api.http.stream("GET", f"/apps/{app_id}/logs", params=params, timeout=None) as response:
        if response.status_code >= 400:
            raise CliError(f"{response.status_code}: {response.read().decode()}")
        try:
            for line in response.iter_lines():
                print(line, flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def deployments(api: ApiClient, args) -> int:
    app_id = api.app_id(args.app)
    rows = api.call("GET", f"/apps/{app_id}/deployments", params={"limit": args.limit}).json()
    _table(
        [[f"v{d['number']}", d["id"], d["operation"], d["status"], d["image_ref"] or d["image"] or "", d["created_at"]] for d in rows],
        ["VERSION", "ID", "OPERATION", "STATUS", "IMAGE", "CREATED"],
    )
    return 0


def add_commands(sub) -> None:
    apps = sub.add_parser("apps", help="manage apps through the API")
    apps_sub = apps.add_subparsers(dest="apps_command", required=True)

    p = apps_sub.add_parser("list", help="list apps")
    p.set_defaults(api_func=apps_list)

    p = apps_sub.add_parser("create", help="create an image app and follow its first deployment")
    p.add_argument("name")
    p.add_argument("--image", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--progress-deadline", type=int, metavar="SECONDS", help="how long a rollout may take")
    p.add_argument("--no-follow", action="store_true")
    p.set_defaults(api_func=apps_create)

    p = apps_sub.add_parser("get", help="show an app and its runtime status")
    p.add_argument("app", help="name or id")
    p.set_defaults(api_func=apps_get)

    for name, func, helptext in (
        ("deploy", apps_deploy, "deploy the app's image as it is now and follow the rollout"),
        ("restart", apps_restart, "rolling restart, followed"),
    ):
        p = apps_sub.add_parser(name, help=helptext)
        p.add_argument("app", help="name or id")
        p.add_argument("--no-follow", action="store_true")
        p.set_defaults(api_func=func)

    p = apps_sub.add_parser("rollback", help="roll back (to the deployment before the active one by default), followed")
    p.add_argument("app", help="name or id")
    p.add_argument("deployment", nargs="?", help="dep_… to go back to")
    p.add_argument("--no-follow", action="store_true")
    p.set_defaults(api_func=apps_rollback)

    p = apps_sub.add_parser("scale", help="set the replica count and wait until ready")
    p.add_argument("app", help="name or id")
    p.add_argument("replicas", type=int)
    p.add_argument("--no-follow", action="store_true")
    p.set_defaults(api_func=apps_scale)

    p = apps_sub.add_parser("delete", help="delete the app and wait until it is gone")
    p.add_argument("app", help="name or id")
    p.add_argument("--no-follow", action="store_true")
    p.set_defaults(api_func=apps_delete)

    p = sub.add_parser("logs", help="an app's logs")
    p.add_argument("app", help="name or id")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until Ctrl-C")
    p.add_argument("--tail", type=int)
    p.set_defaults(api_func=logs)

    p = sub.add_parser("deployments", help="an app's deployment history")
    p.add_argument("app", help="name or id")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(api_func=deployments)


def run(args) -> int:
    try:
        return args.api_func(ApiClient(), args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
