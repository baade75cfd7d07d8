"""Following a deployment: the progress stream (`event: close` means reconnect),
the deadline of every wait, and Ctrl-C (exit 130, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from sqlalchemy import select

from conveyor.cli.client import Api
from conveyor.cli.errors import NotActive, PlatformDown
from conveyor.cli.output import Output
from conveyor.cli.waiting import Deadline, Follower, follow_deployment
from conveyor.clients.db.models import Deployment
from conveyor.clients.db.session import read_scope
from tests.support import in_process
from tests.support.api_client import DEMO_IMAGE
from tests.support.cli import InProcessTransport

DEP = "dep_0123456789ab"


def step(name: str, state: str, detail: str = "") -> tuple[str, dict]:
    return "step", {"name": name, "state": state, "detail": detail, "started_at": "", "updated_at": ""}


def end(status: str, reason: str | None = None) -> tuple[str, dict]:
    return "end", {"id": DEP, "status": status, "reason": reason}


CLOSE = ("close", {"id": DEP, "status": "building", "reason": "reconnect to keep following"})


def progress_app(streams: list[list[tuple[str, dict]] | int]) -> tuple[FastAPI, list[int]]:
    """A stand-in progress route that sends `streams[i]` to the i-th connection,
    as the API writes them (with a keep-alive comment first); an int: that
    HTTP status instead of a stream."""
    app = FastAPI()
    opened: list[int] = []

    @app.get("/api/v1/apps/{app_id}/deployments/{dep}/progress")
    async def progress(app_id: str, dep: str, ping: int | None = None):
        opened.append(ping or 0)
        answer = streams[len(opened) - 1]
        if isinstance(answer, int):
            return JSONResponse({"detail": "the API is restarting"}, status_code=answer)
        wire = ": ping\n\n" + "".join(f"event: {event}\ndata: {json.dumps(data)}\n\n" for event, data in answer)
        return Response(wire, media_type="text/event-stream")

    return app, opened


def api_of(app: FastAPI) -> Api:
    client = TestClient(app, base_url="http://stand-in")
    return Api(httpx.Client(base_url="http://stand-in/api/v1", transport=InProcessTransport(client)), "http://stand-in", "test")


def test_close_is_a_reconnect_and_steps_sent_again_print_once(capsys):
    app, opened = progress_app(
        [
            [step("resolve", "running"), step("resolve", "done"), CLOSE],
            [step("resolve", "done"), step("rollout", "running", "1/2 ready"), step("rollout", "done", "2/2 ready"), end("active")],
        ]
    )
    ended = Follower(api_of(app), Output(), "app_0123456789ab", DEP, Deadline(30)).run()
    assert ended["status"] == "active" and len(opened) == 2
    assert opened == [60, 60]  # a ping only after 60 s of quiet: the read timeout watches the deadline
    printed = capsys.readouterr().out
    assert printed.count("resolve") == 2 and printed.count("✓ resolve") == 1
    assert "following again" in printed and "2/2 ready" in printed


def test_a_stream_that_is_cut_is_opened_again():
    app, opened = progress_app([[step("apply", "running")], [end("active")]])
    assert Follower(api_of(app), Output(), "app_0123456789ab", DEP, Deadline(30)).run()["status"] == "active"
    assert len(opened) == 2


def test_an_api_restarting_during_a_follow_is_waited_for(capsys):
    app, opened = progress_app([[step("apply", "running")], 503, 502, [end("active")]])
    assert Follower(api_of(app), Output(), "app_0123456789ab", DEP, Deadline(30)).run()["status"] == "active"
    assert len(opened) == 4 and capsys.readouterr().out.count("reconnecting until the deadline") == 1


def test_a_first_answer_of_503_is_the_platform_down():
    app, _ = progress_app([503])
    with pytest.raises(PlatformDown) as down:
        Follower(api_of(app), Output(), "app_0123456789ab", DEP, Deadline(30)).run()
    assert down.value.exit_code == 3


def test_a_deployment_that_does_not_end_active_exits_1(capsys):
    app, _ = progress_app([[step("rollout", "failed", "CrashLoopBackOff"), end("failed", "pods crash")]])
    deployment = {"id": DEP, "number": 4, "operation": "deploy", "status": "deploying"}
    with pytest.raises(NotActive) as failed:
        follow_deployment(api_of(app), Output(), "web", "app_0123456789ab", deployment, 30)
    assert failed.value.exit_code == 1
    assert capsys.readouterr().out.rstrip().endswith("failed: pods crash")


def created(cli) -> tuple[dict, Callable[[int], str]]:
    """An app whose first deployment is active (as the worker would have left it),
    and a way to wait for the id of its deployment number n."""
    app = cli.project.admin.create_app(name=f"app-{uuid.uuid4().hex[:8]}", image_url=f"{DEMO_IMAGE}:v1")
    in_process.finish(cli.served.settings, cli.project.admin.deployments(app["id"])[0]["id"])

    def deployment_number(n: int) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with read_scope(cli.served.settings.effective_database_url) as session:
                found = session.scalars(select(Deployment.id).where(Deployment.app_id == app["id"], Deployment.number == n)).first()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no deployment v{n}")

    return app, deployment_number


def later(seconds: float, work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        work()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_follow_outlives_the_stream_and_ends_with_the_deployment(cli):
    # The API closes a progress stream after CONVEYOR_DEPLOY_DEADLINE_SECONDS
    # (2 here). The deployment ends (as its worker would end it) once the
    # follower has connected a second time.
    app, deployment_number = created(cli)

    def end_it_after_the_reconnect() -> None:
        dep = deployment_number(2)
        progress = f"/api/v1/apps/{app['id']}/deployments/{dep}/progress"
        deadline = time.monotonic() + 20
        while sum(s.path == progress for s in cli.sent()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        in_process.finish(cli.served.settings, dep)

    worker = later(0, end_it_after_the_reconnect)
    result = cli.run("apps", "deploy", app["name"], "--timeout", "30s")
    worker.join()
    assert result.exit_code == 0, result.output
    assert "following again" in result.output and result.stdout.rstrip().endswith("active")


def test_a_follow_stops_at_its_timeout(cli):
    app, _ = created(cli)
    started = time.monotonic()
    result = cli.run("apps", "restart", app["name"], "--timeout", "3")
    assert result.exit_code == 1 and "--timeout" in result.stderr
    assert time.monotonic() - started < 10


def interrupt_after(seconds: float) -> threading.Thread:
    """Ctrl-C, as the terminal sends it: SIGINT to this process (its main thread runs the CLI)."""
    return later(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))


@pytest.mark.parametrize("command", [("apps", "restart"), ("apps", "delete")])
def test_ctrl_c_ends_a_follow_or_a_wait_with_130_and_no_traceback(cli, command):
    app, _ = created(cli)
    sigint = interrupt_after(1.0)
    result = cli.run(*command, app["name"], "--timeout", "60")
    sigint.join()
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "goes on" in result.stderr
