"""Long-lived responses: deployment progress (SSE) and the follows of build
and app logs.

- Each API process holds at most `CONVEYOR_MAX_STREAMS` of them at once; one
  more is answered `503` with `Retry-After` before anything is streamed, so a
  crowd of followers cannot use up the process's threads and connections.
  One token holds at most `CONVEYOR_MAX_STREAMS_PER_TOKEN` of them (one more
  is a `429`), so a single client cannot take every slot from the others.
- However many clients follow one deployment's progress, the process reads its
  row and queries its workflow once per change (`ProgressHub`), not once per
  client: a Temporal query makes a worker run the workflow's code. A change is
  pushed: the hub long-polls the workflow's history and reads again as soon as
  a workflow task completes (the steps change only then) or the workflow
  closes; a timed poll stays as the fallback (before the workflow starts, or
  with Temporal away), every `POLL_SECONDS`, and every `WATCHED_POLL_SECONDS`
  while the history is being watched.
- A stream never ends before the last state of every step: the `end` event
  comes with the steps the workflow recorded with the outcome (the row's
  `progress`), or, for rows from before those were recorded, once the row
  has ended and the workflow has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, NamedTuple
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Query, Request
from fastapi.sse import ServerSentEvent
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Caller, Viewer, read_off_loop
from conveyor.clients.db.models import App, Deployment
from conveyor.clients.db.queries import in_flight
from conveyor.domain import errors, images
from conveyor.domain.ids import iso
from conveyor.domain.vocabulary import TERMINAL, DeploymentStatus
from conveyor.settings import Settings
from workflows.deploy import DeployWorkflow

log = logging.getLogger("conveyor.streams")

POLL_SECONDS = 0.5
# While the workflow's history is watched, a change wakes the poll at once: the timed one is only a safety net.
WATCHED_POLL_SECONDS = 5.0
# The history events after which a query may answer something new: the
# workflow's code has run (a workflow task completed), or it has closed.
WAKING_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
# How long after its row ended a stream waits for the workflow to close.
FINAL_WAIT_SECONDS = 30.0
# A query waits for a worker to run it; with none, it answers no steps.
QUERY_TIMEOUT = timedelta(seconds=5)
RETRY_AFTER_SECONDS = 5


class StreamSlots:
    """How many long-lived responses this process holds, against its limit,
    and how many of them each token holds, so one client cannot take them all."""

    def __init__(self, limit: int, per_token: int):
        self.limit = limit
        self.per_token = per_token
        self.open = 0
        self._by_token: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, caller: Caller):
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        held = self._by_token.get(caller.token_id, 0)
        if held >= self.per_token:
            raise HTTPException(429, f"this token follows {held} streams already, as many as one token may; close one", headers=retry)
        if self.open >= self.limit:
            raise HTTPException(503, "this API process follows as many streams as it may; retry shortly", headers=retry)
        self.open += 1
        self._by_token[caller.token_id] = held + 1
        try:
            yield
        finally:
            self.open -= 1
            left = self._by_token[caller.token_id] - 1
            if left:
                self._by_token[caller.token_id] = left
            else:
                del self._by_token[caller.token_id]


# Both take the caller first, so that a request without a valid token is a
# 401 whether or not a slot is free.
async def _stream_slot(request: Request, caller: Viewer) -> AsyncIterator[None]:
    with request.app.state.streams.hold(caller):
        yield


async def _follow_slot(
    request: Request,
    caller: Viewer,
    follow: Annotated[bool, Query(description="Keep streaming: a build log until the build ends, app logs until the client leaves")] = False,
) -> AsyncIterator[bool]:
    if not follow:
        yield False
        return
    with request.app.state.streams.hold(caller):
        yield True


# Held from before the route runs until its response has been sent
# (scope="request"): the whole life of the stream.
StreamSlot = Depends(_stream_slot, scope="request")
# The route's `follow` query parameter; a slot is held only when it is true.
FollowSlot = Annotated[bool, Depends(_follow_slot, scope="request")]


async def workflow_progress(temporal: Client, dep: Deployment) -> list[dict]:
    """The steps as the deployment's workflow reports them (empty before it starts)."""
    try:
        return await temporal.get_workflow_handle(dep.workflow_id).query(DeployWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
    except Exception:  # noqa: BLE001 - not started yet (queued) or no worker to answer
        return []


async def workflow_closed(temporal: Client, dep: Deployment) -> bool:
    """Whether the deployment's workflow has ended, or never started (a
    deployment cancelled while queued). False while it runs, or when Temporal
    cannot say."""
    try:
        described = await temporal.get_workflow_handle(dep.workflow_id).describe()
    except RPCError as err:
        return err.status == RPCStatusCode.NOT_FOUND
    except Exception:  # noqa: BLE001 - Temporal away: ask again at the next poll
        return False
    return described.status != WorkflowExecutionStatus.RUNNING


@dataclass(frozen=True)
class Snapshot:
    """A deployment as its followers see it; status None: it (or its app) is gone.

    `final`: the steps are the workflow's last ones. A row ends (the workflow's
    last activity writes it) before its workflow has recorded the steps that
    follow that activity, so a terminal row alone does not end a stream."""

    status: str | None
    reason: str | None
    steps: list[dict] = field(default_factory=list)
    final: bool = False

    @property
    def ended(self) -> bool:
        return self.status is None or (self.status in TERMINAL and self.final)


@dataclass(frozen=True)
class Ahead:
    """The deployment a queued one waits behind."""

    id: str
    status: str
    workflow_id: str


class RowNow(NamedTuple):
    """A deployment's row as a poll reads it."""

    status: str
    reason: str | None
    # Queued: the deployment of its app it waits behind.
    ahead: Ahead | None = None
    # The hosts the user gave (an image app's registry, a git app's server), for a retry's reason.
    image_host: str | None = None
    source_host: str | None = None
    # Ended: the steps the workflow recorded with the outcome (None before 0015).
    progress: list[dict] | None = None


def _status_now(session, deployment_id: str) -> RowNow | None:
    row = session.get(Deployment, deployment_id)
    if row is None:
        return None
    ahead = None
    if row.status == DeploymentStatus.QUEUED:
        first = next((d for d in in_flight(session, row.app_id) if d.number < row.number), None)
        ahead = Ahead(first.id, first.status, first.workflow_id) if first is not None else None
    if row.status in TERMINAL and row.progress is not None:
        return RowNow(row.status, row.reason, progress=row.progress)
    app = session.get(App, row.app_id)
    if app is None:
        return RowNow(row.status, row.reason, ahead)
    return RowNow(row.status, row.reason, ahead, registry_host(app.image_url) if app.source_type == "image" else None, urlsplit(app.repo_url or "").hostname)


def registry_host(image: str | None) -> str | None:
    """The registry of an image app's `image_url`: the host the user gave."""
    try:
        registry = images.parse(image or "").registry
    except ValueError:
        return None
    return "docker.io" if registry == images.DOCKER_HUB else registry


# Reads a deployment's row, or None when it is gone ((status, reason) is enough).
StatusReader = Callable[[str], Awaitable[tuple[str, str | None] | RowNow | None]]


async def retry_in_progress(temporal: Client, workflow_id: str, image_host: str | None = None, source_host: str | None = None) -> str | None:
    """What a workflow's activity is retrying, for the person waiting
    (`retrying: registry … unreachable (attempt 5, next in 20s, gives up at …)`);
    None when nothing is being retried, or Temporal cannot say."""
    try:
        described = await temporal.get_workflow_handle(workflow_id).describe(rpc_timeout=QUERY_TIMEOUT)
    except Exception:  # noqa: BLE001 - not started, or Temporal away: nothing to say
        return None
    for pending in described.raw_description.pending_activities:
        # Waiting for its next attempt: an attempt that runs again (a rollout
        # wait after a worker restart, say) shows its own progress instead.
        if pending.attempt < 2 or not pending.HasField("last_failure") or pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            continue
        failure = pending.last_failure
        while failure.HasField("cause") and not failure.HasField("application_failure_info"):
            failure = failure.cause
        kind = failure.application_failure_info.type if failure.HasField("application_failure_info") else None
        next_in = None
        if pending.HasField("next_attempt_schedule_time"):
            next_in = (pending.next_attempt_schedule_time.ToDatetime(UTC) - datetime.now(UTC)).total_seconds()
        gives_up = iso(pending.expiration_time.ToDatetime(UTC)) if pending.HasField("expiration_time") else None
        return errors.retrying(kind, image_host, source_host, pending.attempt, next_in, gives_up)
    return None


def _put_latest(inbox: asyncio.Queue[Snapshot], snapshot: Snapshot) -> None:
    # Each snapshot is the whole state: a follower that has not read the last
    # one yet gets this one instead.
    with contextlib.suppress(asyncio.QueueEmpty):
        inbox.get_nowait()
    inbox.put_nowait(snapshot)


class ProgressHub:
    """One poll per followed deployment, its snapshots fanned out to every follower."""

    def __init__(self, settings: Settings, status_of: StatusReader | None = None, poll_seconds: float = POLL_SECONDS):
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.polls = 0
        self._status_of = status_of or self._status_in_database
        self._followers: dict[str, set[asyncio.Queue[Snapshot]]] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}

    async def _status_in_database(self, deployment_id: str) -> tuple[str, str | None] | None:
        # A short read session of its own: nothing is held between polls.
        return await read_off_loop(self.settings, _status_now, deployment_id)

    @contextlib.asynccontextmanager
    async def follow(self, temporal: Client, dep: Deployment) -> AsyncIterator[asyncio.Queue[Snapshot]]:
        inbox: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize=1)
        self._followers.setdefault(dep.id, set()).add(inbox)
        poller = self._pollers.get(dep.id)
        if poller is None or poller.done():
            self._pollers[dep.id] = asyncio.create_task(self._poll(temporal, dep), name=f"progress-{dep.id}")
        try:
            yield inbox
        finally:
            followers = self._followers.get(dep.id, set())
            followers.discard(inbox)
            if not followers:
                self._followers.pop(dep.id, None)
                poller = self._pollers.pop(dep.id, None)
                if poller is not None:
                    poller.cancel()

    async def snapshot(self, temporal: Client, dep: Deployment, waited: float = 0.0) -> Snapshot:
        """The deployment now. Once its row has ended, the steps are those
        the workflow recorded with the outcome; for a row from before they
        were recorded, they are read after its workflow has closed (however
        late this poll comes, the last steps are then all there), or once
        `FINAL_WAIT_SECONDS` have passed since the row ended: a workflow that
        no worker runs cannot close."""
        self.polls += 1
        read = await self._status_of(dep.id)
        if read is None:
            return Snapshot(None, None, final=True)
        now = RowNow(*read)
        if now.status in TERMINAL and now.progress is not None:
            # Recorded with the outcome: the workflow's last steps, no query needed.
            return Snapshot(now.status, now.reason, now.progress, final=True)
        if now.status in TERMINAL:
            closed = await workflow_closed(temporal, dep) or waited >= FINAL_WAIT_SECONDS
            return Snapshot(now.status, now.reason, await workflow_progress(temporal, dep), final=closed)
        if now.ahead is not None:
            # What it waits for, and why that one is not done.
            behind = now.ahead.status
            if (retry := await retry_in_progress(temporal, now.ahead.workflow_id, now.image_host, now.source_host)) is not None:
                behind = f"{behind}, {retry}"
            return Snapshot(now.status, f"queued behind {now.ahead.id} ({behind})")
        steps = await workflow_progress(temporal, dep)
        retry = await retry_in_progress(temporal, dep.workflow_id, now.image_host, now.source_host) if now.status != DeploymentStatus.QUEUED else None
        if retry is None:
            return Snapshot(now.status, now.reason, steps)
        # The step that waits on the retried activity says so, until it passes
        # (without the countdown, so the stream sends it once an attempt).
        running = [i for i, step in enumerate(steps) if step.get("state") == "running"]
        if running:
            detail = re.sub(r", next in \d+s", "", retry)
            steps = [dict(step, detail=detail) if i == running[-1] else step for i, step in enumerate(steps)]
        return Snapshot(now.status, retry, steps)

    async def _poll(self, temporal: Client, dep: Deployment) -> None:
        loop = asyncio.get_running_loop()
        row_ended_at: float | None = None
        changes = Changes()
        watcher = asyncio.create_task(self.watch(temporal, dep, changes), name=f"history-{dep.id}")
        try:
            while self._followers.get(dep.id):
                try:
                    waited = 0.0 if row_ended_at is None else loop.time() - row_ended_at
                    snapshot = await self.snapshot(temporal, dep, waited)
                except Exception as exc:  # noqa: BLE001 - the database away: the followers wait, with pings
                    log.warning("progress of %s: %s", dep.id, type(exc).__name__)
                else:
                    for inbox in self._followers.get(dep.id, ()):
                        _put_latest(inbox, snapshot)
                    if snapshot.ended:
                        return
                    if snapshot.status in TERMINAL and row_ended_at is None:
                        row_ended_at = loop.time()
                await self.pause(changes)
        finally:
            watcher.cancel()

    async def watch(self, temporal: Client, dep: Deployment, changes: Changes) -> None:
        """Long-poll the workflow's history; each event after which its steps
        may have changed wakes the poll. Until the workflow exists (a queued
        deployment), or while Temporal is away, it tries again each interval
        and the timed poll carries on."""
        while True:
            try:
                events = temporal.get_workflow_handle(dep.workflow_id).fetch_history_events(wait_new_event=True)
                async for event in events:
                    changes.watched = True
                    if event.event_type in WAKING_EVENTS:
                        changes.event.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - not started yet, or Temporal away: the timed poll goes on
                changes.watched = False
                await asyncio.sleep(self.poll_seconds)

    async def pause(self, changes: Changes | None = None) -> None:
        """Between two polls: until the workflow's history says something
        changed, or the fallback interval has passed."""
        if changes is None:
            await asyncio.sleep(self.poll_seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changes.event.wait(), WATCHED_POLL_SECONDS if changes.watched else self.poll_seconds)
        changes.event.clear()


@dataclass
class Changes:
    """What the history watch tells the poll: a change happened (`event`),
    and whether the history is being watched at all (else the timed poll is
    the only one)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    watched: bool = False


async def progress_events(
    dep: Deployment, settings: Settings, temporal: Client, hub: ProgressHub, ping: float | None = None
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of one deployment's progress: each step as it changes, in
    order, then `end` after the last state of every step; a ping after
    `ping` seconds of quiet; `close` once the stream has been open for the
    deployment deadline."""
    loop = asyncio.get_running_loop()
    sent: dict[str, tuple] = {}
    last_sent = opened = loop.time()
    quiet = ping or settings.progress_ping_seconds
    async with hub.follow(temporal, dep) as inbox:
        while True:
            closes_in = settings.deploy_deadline_seconds - (loop.time() - opened)
            try:
                snapshot = await asyncio.wait_for(inbox.get(), max(0.0, min(quiet - (loop.time() - last_sent), closes_in)))
            except TimeoutError:
                snapshot = None
            if snapshot is not None and snapshot.status is None:
                yield ServerSentEvent(event="end", data={"id": dep.id, "status": "deleted", "reason": "the deployment or its app was deleted"})
                return
            for step in snapshot.steps if snapshot is not None else ():
                seen = (step["state"], step.get("detail"))
                if sent.get(step["name"]) != seen:
                    sent[step["name"]] = seen
                    last_sent = loop.time()
                    yield ServerSentEvent(event="step", data=step)
            if snapshot is not None and snapshot.ended:
                yield ServerSentEvent(event="end", data={"id": dep.id, "status": snapshot.status, "reason": snapshot.reason})
                return
            if loop.time() - opened >= settings.deploy_deadline_seconds:
                status = snapshot.status if snapshot is not None else dep.status
                yield ServerSentEvent(event="close", data={"id": dep.id, "status": status, "reason": "reconnect to keep following"})
                return
            if loop.time() - last_sent >= quiet:
                # FastAPI pings an idle stream too, every 15 s; this interval is a setting.
                last_sent = loop.time()
                yield ServerSentEvent(comment="ping")


async def get_progress_hub(request: Request) -> ProgressHub:
    return request.app.state.progress


ProgressHubDep = Annotated[ProgressHub, Depends(get_progress_hub)]
