"""Long-lived responses under a crowd: the followers of one deployment share
one poll, and an API process holds at most CONVEYOR_MAX_STREAMS streams,
answering 503 beyond them (429 beyond a token's share) until one closes."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from api.streams import POLL_SECONDS
from tests.support.api_client import Api, start_never_ready_deploy
from tests.support.production import API_COMMAND, conveyor_env, free_port, host_process
from tests.support.waiting import collect_until, eventually, sse_events, stream_lines


def metric(base_url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{base_url}/metrics").text, re.MULTILINE)
    assert match, f"{name} is not among the metrics"
    return float(match.group(1))


def test_followers_of_one_deployment_share_one_poll(api, settings, deployed_app):
    app, first = deployed_app
    dep = start_never_ready_deploy(api, app)
    path = f"/apps/{app['id']}/deployments/{dep['id']}/progress"
    followers = 20
    sinks = [stream_lines(api, path) for _ in range(followers)]
    for sink in sinks:
        collect_until(sink, lambda lines: any('"rollout"' in line for line in lines), 30)

    before, started = metric(settings.api_url, "conveyor_progress_polls_total"), time.monotonic()
    time.sleep(5)
    polls = metric(settings.api_url, "conveyor_progress_polls_total") - before
    rounds = (time.monotonic() - started) / POLL_SECONDS
    # One poll per interval for all of them (one per follower would be 20 times that).
    assert polls <= 2 * rounds + 5, (polls, rounds)

    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    for sink in sinks:
        lines = collect_until(sink, lambda lines: any(line.startswith("event: end") for line in lines) and lines[-1].startswith("data:"), 90)
        kind, data = sse_events(lines)[-1]
        assert (kind, data["id"], data["status"]) == ("end", dep["id"], "cancelled")


@pytest.fixture
def api_of_three_streams(platform, settings, admin_token, tmp_path) -> Iterator[tuple[str, Api]]:
    """Another API process on the stack's task queue that holds at most three
    streams, two of them per token."""
    port = free_port()
    env = conveyor_env(settings, CONVEYOR_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue, CONVEYOR_MAX_STREAMS="3", CONVEYOR_MAX_STREAMS_PER_TOKEN="2")
    proc = host_process([*API_COMMAND, "--port", str(port)], env, tmp_path / "api.log")
    base_url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
            try:
                return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually(healthy, 90, what="the API of three streams")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log: {(tmp_path / 'api.log').read_text()[-3000:]}") from exc
        yield base_url, Api(base_url, admin_token, settings.registry)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"the API did not stop on SIGTERM; its log: {(tmp_path / 'api.log').read_text()[-3000:]}") from None


def refusal(client: Api, path: str, params: dict | None = None) -> tuple[int, str]:
    with client.http.stream("GET", path, params=params, timeout=10) as refused:
        refused.read()
        assert refused.headers["Retry-After"].isdigit(), (path, refused.status_code, refused.headers)
        return refused.status_code, refused.json()["detail"]


def test_streams_beyond_the_limits_are_refused_until_one_closes(api, api_of_three_streams, deployed_app, settings, make_token):
    base_url, limited = api_of_three_streams
    app, first = deployed_app
    dep = start_never_ready_deploy(api, app)
    progress = f"/apps/{app['id']}/deployments/{dep['id']}/progress"
    logs = f"/apps/{app['id']}/logs"
    other = Api(base_url, make_token("viewer")[0], settings.registry)
    third = Api(base_url, make_token("viewer")[0], settings.registry)

    with contextlib.ExitStack() as held:
        one = held.enter_context(limited.http.stream("GET", progress))
        two = held.enter_context(limited.http.stream("GET", logs, params={"follow": "true"}))
        assert (one.status_code, two.status_code) == (200, 200)

        # One token holds at most two: its third stream of any kind is a 429.
        for path, params in [(progress, None), (logs, {"follow": "true"}), (f"/apps/{app['id']}/build-log", {"follow": "true"})]:
            status, detail = refusal(limited, path, params)
            assert status == 429 and "token" in detail, (path, status, detail)
        # Another token still gets the process's last slot; a third token then finds the process full.
        theirs = held.enter_context(other.http.stream("GET", progress))
        assert theirs.status_code == 200
        assert metric(base_url, "conveyor_open_streams") == 3
        status, detail = refusal(third, progress)
        assert status == 503 and "retry" in detail
        # What does not stream is not limited.
        assert limited.call("GET", logs).status_code == 200
        assert limited.call("GET", f"/apps/{app['id']}/deployments/{dep['id']}").status_code == 200

        # A follower leaves: its slot is free again, for its own token too.
        one.close()

        def admitted() -> bool:
            with limited.http.stream("GET", progress, timeout=10) as again:
                return again.status_code == 200

        eventually(admitted, 30, what="a freed stream slot")
    eventually(lambda: metric(base_url, "conveyor_open_streams") == 0, 30, what="every stream to be released")
    api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
