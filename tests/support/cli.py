"""The `conveyor` command run in this process (Click's CliRunner) against the
real API app, reached through FastAPI's TestClient, which the CLI gets as its
HTTP client factory (tests/cli)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conveyor.cli.invocation import Invocation
from conveyor.cli.main import cli as conveyor
from conveyor.settings import Settings
from tests.support import in_process


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    params: dict[str, str]


class InProcessTransport(httpx.BaseTransport):
    """Hands every request of the CLI's httpx client to the app behind `client`
    (one TestClient, whose event loop runs the app's lifespan), and notes it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent: list[Sent] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(Sent(request.method, request.url.path, dict(request.url.params)))
        answer = self.client.send(request, follow_redirects=False)
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(answer.status_code, headers=headers, content=answer.content, request=request)


@dataclass
class Served:
    settings: Settings
    app: FastAPI
    transport: InProcessTransport


@dataclass
class Cli:
    served: Served
    project: in_process.Project
    config_file: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def http_factory(self, base_url: str, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(base_url=base_url, headers=headers, transport=self.served.transport)

    def run(self, *args: str, role: str | None = "admin", token: str | None = None, api_url: str | None = in_process.BASE_URL,
            input: str | None = None, invocation: Invocation | None = None) -> Result:
        """`conveyor <args>` with a token of the project (`role`) or `token`, at `api_url`
        (None: neither flag is given, so they come from the environment or a context)."""
        given = token or (self.project.tokens[role] if role else None)
        argv = [*(["--api-url", api_url] if api_url else []), *(["--token", given] if given else []), *args]
        result = self.runner.invoke(conveyor, argv, obj=invocation or Invocation(http_factory=self.http_factory), input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def bare(self, *args: str, **kwargs: Any) -> Result:
        """`conveyor <args>` without --api-url and --token: they come from the environment or the config file."""
        return self.run(*args, role=None, api_url=None, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self.run(*args, **kwargs)
        assert result.exit_code == 0, f"conveyor {' '.join(args)}: exit {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "-o", "json", **kwargs).stdout)

    def sent(self) -> list[Sent]:
        return self.served.transport.sent

    def forget_sent(self) -> None:
        self.served.transport.sent.clear()
