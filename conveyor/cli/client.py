"""The Apps API as the client commands call it: one httpx client, every answer
turned into data or into the error (and exit code) it means, and apps and
deployments found by the name or number a person types."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from typing import Any

import httpx

from conveyor.cli.errors import NotAuthorised, PlatformDown, Refused

API_PREFIX = "/api/v1"
APP_ID = re.compile(r"^app_[0-9a-f]{12}$")
DEPLOYMENT_ID = re.compile(r"^dep_[0-9a-f]{12}$")
DEPLOYMENT_NUMBER = re.compile(r"^v?(\d+)$")

# An object of the API's JSON (an app, a deployment, a step).
Json = dict[str, Any]

# Builds the HTTP client of one invocation: the real one by default, an
# in-process one in the tests (handed in as the Invocation's http_factory).
HttpFactory = Callable[[str, dict[str, str]], httpx.Client]


def user_agent() -> str:
    try:
        version = importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"conveyor-cli/{version}"


def http_client(base_url: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(30.0, connect=10.0))


def detail_of(response: httpx.Response) -> str:
    """The API's `detail`, 422 lists as `field: rule; …`."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', [])[1:]) or 'body'}: {item.get('msg')}" for item in detail)
    return str(detail)


class Api:
    def __init__(self, http: httpx.Client, api_url: str, token_source: str) -> None:
        self.http = http
        self.api_url = api_url
        self.token_source = token_source

    # --- answers --------------------------------------------------------

    def check(self, response: httpx.Response) -> httpx.Response:
        """The response when it is a success; else the error it means."""
        if response.status_code < 400:
            return response
        response.read()  # a streamed answer too: its body is the detail
        status, detail = response.status_code, detail_of(response)
        if status == 401:
            raise NotAuthorised(f"401 from {self.api_url}: {detail} (token from {self.token_source}; `conveyor login` stores one)")
        if status == 403:
            raise NotAuthorised(f"403: {detail}")
        if status >= 500:
            raise PlatformDown(f"{status} from {self.api_url}: {detail}")
        raise Refused(f"{status}: {detail}")

    def unreachable(self, exc: httpx.TransportError) -> PlatformDown:
        return PlatformDown(f"cannot reach the API at {self.api_url}: {exc or type(exc).__name__} (is the platform up? `conveyor status` shows a local one)")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        return self.check(response)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def find(self, path: str) -> Any | None:
        """GET `path`, None when it is not there (404)."""
        try:
            response = self.http.get(path)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        return None if response.status_code == 404 else self.check(response).json()

    def post(self, path: str, body: Json | None = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    # --- names ----------------------------------------------------------

    def app(self, ref: str) -> Json:
        """The app named `ref` (or with the id `ref`), in one request."""
        if APP_ID.match(ref):
            app: Json = self.get(f"/apps/{ref}")
            return app
        # An API from before the `name` filter answers the whole list: pick from it.
        found: list[Json] = [app for app in self.get("/apps", name=ref) if app["name"] == ref]
        if not found:
            raise Refused(f"no app named {ref!r} in this project (`conveyor apps list` lists them)")
        return found[0]

    def app_id(self, ref: str) -> str:
        return ref if APP_ID.match(ref) else str(self.app(ref)["id"])

    def deployment(self, app_id: str, ref: str) -> Json:
        """A deployment by id (`dep_…`) or by its number (`v3`, `3`)."""
        if DEPLOYMENT_ID.match(ref):
            dep: Json = self.get(f"/apps/{app_id}/deployments/{ref}")
            return dep
        number = DEPLOYMENT_NUMBER.match(ref)
        if number is None:
            raise Refused(f"{ref!r} is neither a deployment id (dep_…) nor a number (v3)")
        wanted = int(number.group(1))
        history: list[Json] = self.get(f"/apps/{app_id}/deployments")
        for listed in history:
            if listed["number"] == wanted:
                return listed
        raise Refused(f"the app has no deployment v{wanted}")

    def deployment_id(self, app_id: str, ref: str) -> str:
        return ref if DEPLOYMENT_ID.match(ref) else str(self.deployment(app_id, ref)["id"])

    def latest_deployment(self, app_id: str) -> Json | None:
        newest: list[Json] = self.get(f"/apps/{app_id}/deployments", limit=1)
        return newest[0] if newest else None
