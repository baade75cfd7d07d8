"""Waiting for the platform: following a deployment's progress stream, and
polling until an app is scaled or gone. Every wait has a deadline (`--timeout`);
Ctrl-C ends one with exit 130 and says what goes on without it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from httpx_sse import SSEError, connect_sse

from conveyor.cli.client import Api, Json
from conveyor.cli.errors import Interrupted, NotActive, PlatformDown
from conveyor.cli.output import Output

F = TypeVar("F", bound=Callable[..., Any])

MARKS = {"running": "…", "done": "✓", "failed": "✗"}
# The progress stream sends a `: ping` after this many quiet seconds (its maximum)...
PING_SECONDS = 60
# ... so a read that waits longer than this has seen a quiet stream, not a dead one: the
# follower reconnects (the server sends every step's state again). The read timeout is
# thereby also the deadline's watchdog: no read blocks past the deadline.
QUIET_SECONDS = 45.0
# A stream that broke (the API restarted, a proxy cut it) is opened again this often.
RECONNECT_PAUSE_SECONDS = 1.0
MAX_RECONNECT_PAUSE_SECONDS = 10.0

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


class Duration(click.ParamType[float, Any]):
    """90, 90s, 5m, 1h, 1h30m: seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value).strip())
        if not match or not any(match.groups()):
            self.fail(f"{value!r} is not a duration such as 90, 30s, 5m or 1h30m", param, ctx)
        hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return float(hours * 3600 + minutes * 60 + seconds)


DURATION = Duration()


def timeout_option(default: str, what: str) -> Callable[[F], F]:
    return click.option(
        "--timeout", type=DURATION, default=default, show_default=True, help=f"Give up waiting for {what} after this long (exit 1)."
    )


def detach_option(what: str) -> Callable[[F], F]:
    return click.option("--detach", "-d", "--no-follow", "detach", is_flag=True, help=f"Return at once instead of following {what}.")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = self.started + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))


class Follower:
    """Prints a deployment's steps as they change, from `GET …/progress`
    (`event: step` / `end`, and `close` when the server ends a long stream:
    then it reconnects and keeps following)."""

    def __init__(self, api: Api, out: Output, app_id: str, deployment_id: str, deadline: Deadline) -> None:
        self.api = api
        self.out = out
        self.path = f"/apps/{app_id}/deployments/{deployment_id}/progress"
        self.deployment_id = deployment_id
        self.deadline = deadline
        self.connections = 0
        self._shown: dict[str, tuple[str, str]] = {}

    def run(self) -> Json:
        """The `end` event's data: {id, status, reason}."""
        outage = 0  # reconnects in a row that failed: the pause between them grows
        while True:
            if self.deadline.passed:
                raise NotActive(
                    f"deployment {self.deployment_id} had not ended after {self.deadline.seconds:.0f}s (--timeout); it goes on"
                )
            try:
                ended = self._one_stream()
            except httpx.ReadTimeout:
                continue  # quiet for QUIET_SECONDS (or the deadline): ask again
            except (httpx.TransportError, PlatformDown) as exc:
                first = self.connections <= 1
                if first and isinstance(exc, PlatformDown):
                    raise
                if first and isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise self.api.unreachable(exc) from exc
                if outage == 0:
                    self.out.say(f"  (the progress stream broke: {exc}; reconnecting until the deadline)")
                outage += 1
                self.deadline.sleep(min(RECONNECT_PAUSE_SECONDS * outage, MAX_RECONNECT_PAUSE_SECONDS))
                continue
            outage = 0
            if ended is not None:
                return ended

    def _one_stream(self) -> Json | None:
        """One connection: the end, or None when it closed before (reconnect)."""
        self.connections += 1
        read = max(0.1, min(self.deadline.remaining(), QUIET_SECONDS))
        timeout = httpx.Timeout(10.0, read=read)
        with connect_sse(self.api.http, "GET", self.path, params={"ping": PING_SECONDS}, timeout=timeout) as source:
            # 5xx: PlatformDown, retried after the first connection (an API
            # restarting behind its proxy); anything else ends the follow.
            self.api.check(source.response)
            try:
                for event in source.iter_sse():
                    if event.event == "step":
                        self._step(event.json())
                    elif event.event == "end":
                        end: Json = event.json()
                        return end
                    elif event.event == "close":
                        self.out.say("  (the server closed the progress stream; following again)")
                        return None
                    if self.deadline.passed:
                        return None
            except SSEError as exc:
                raise NotActive(f"the progress stream is not an event stream: {exc}") from exc
        # The stream ended without `end` or `close`: it was cut; follow again.
        self.deadline.sleep(RECONNECT_PAUSE_SECONDS)
        return None

    def _step(self, step: Json) -> None:
        state = (step.get("state", ""), step.get("detail") or "")
        if self._shown.get(step["name"]) == state:
            return  # sent again after a reconnect
        self._shown[step["name"]] = state
        detail = f"  {state[1]}" if state[1] else ""
        self.out.say(f"[{self.deadline.elapsed():5.1f}s] {MARKS.get(state[0], '?')} {step['name']:<9}{detail}")


def follow_deployment(api: Api, out: Output, app_ref: str, app_id: str, deployment: Json, timeout: float) -> None:
    """Follow `deployment` to its end; exit 1 unless it ends active.
    With -o json, print the deployment as it ended."""
    deadline = Deadline(timeout)
    out.say(f"deployment {deployment['id']} (v{deployment['number']}, {deployment['operation']}): {deployment['status']}")
    try:
        end = Follower(api, out, app_id, deployment["id"], deadline).run()
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped following; deployment {deployment['id']} goes on "
            f"(`conveyor deployments show {app_ref} {deployment['id']} --follow` follows it again)",
            err=True,
        )
        raise Interrupted() from None
    reason = f": {end['reason']}" if end.get("reason") else ""
    out.say(f"[{deadline.elapsed():5.1f}s] {end['status']}{reason}")
    if out.json:
        final = api.get(f"/apps/{app_id}/deployments/{deployment['id']}") if end["status"] != "deleted" else {**deployment, **end}
        out.document(final)
    if end["status"] != "active":
        raise NotActive(f"deployment {deployment['id']} ended {end['status']}")


def poll(deadline: Deadline, check: Callable[[], bool], every: float = 1.0, *, what: str, going_on: str) -> None:
    """Call `check` until it returns True, at most until the deadline (exit 1).
    Ctrl-C: exit 130, saying what goes on."""
    try:
        while not check():
            if deadline.passed:
                raise NotActive(f"{what} after {deadline.seconds:.0f}s (--timeout); {going_on}")
            deadline.sleep(every)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; {going_on}", err=True)
        raise Interrupted() from None
