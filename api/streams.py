"""Long-lived responses: deployment progress (SSE) and the follows of build
and app logs.

- Each API process holds at most `CONVEYOR_MAX_STREAMS` of them at once; one
  more is answered `503` with `Retry-After` before anything is streamed, so a
  crowd of followers cannot use up the process's threads and connections.
  One token holds at most `CONVEYOR_MAX_STREAMS_PER_TOKEN` of them (one more
  is a `429`), so a single client cannot take every slot from the others.
- However many clients follow one deployment's progress, the process reads its
  row and queries its workflow once per interval (`ProgressHub`), not once per
  client: a Temporal query makes a worker run the workflow's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from temporalio.client import Client

from api.deps import Caller, Viewer, read_off_loop
from conveyor.db.models import Deployment
from conveyor.settings import Settings
from conveyor.vocabulary import TERMINAL
from workflows.deploy import DeployWorkflow

log = logging.getLogger("conveyor.streams")

POLL_SECONDS = 0.5
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
        return await temporal.get_workflow_handle(dep.workflow_id).query(DeployWorkflow.progress)
    except Exception:  # noqa: BLE001 - not started yet (queued) or no worker to answer
        return []


@dataclass(frozen=True)
class Snapshot:
    """A deployment as its followers see it; status None: it (or its app) is gone."""

    status: str | None
    reason: str | None
    steps: list[dict] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status is None or self.status in TERMINAL


def _status_now(session, deployment_id: str) -> tuple[str, str | None] | None:
    row = session.get(Deployment, deployment_id)
    return (row.status, row.reason) if row is not None else None


def _put_latest(inbox: asyncio.Queue[Snapshot], snapshot: Snapshot) -> None:
    # Each snapshot is the whole state: a follower that has not read the last
    # one yet gets this one instead.
    with contextlib.suppress(asyncio.QueueEmpty):
        inbox.get_nowait()
    inbox.put_nowait(snapshot)


class ProgressHub:
    """One poll per followed deployment, its snapshots fanned out to every follower."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.polls = 0
        self._followers: dict[str, set[asyncio.Queue[Snapshot]]] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}

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

    async def _poll(self, temporal: Client, dep: Deployment) -> None:
        while self._followers.get(dep.id):
            try:
                self.polls += 1
                # A short read session of its own: nothing is held between polls.
                now = await read_off_loop(self.settings, _status_now, dep.id)
                snapshot = Snapshot(None, None) if now is None else Snapshot(*now, await workflow_progress(temporal, dep))
            except Exception as exc:  # noqa: BLE001 - the database away: the followers wait, with pings
                log.warning("progress of %s: %s", dep.id, type(exc).__name__)
            else:
                for inbox in self._followers.get(dep.id, ()):
                    _put_latest(inbox, snapshot)
                if snapshot.ended:
                    return
            await asyncio.sleep(POLL_SECONDS)


async def get_progress_hub(request: Request) -> ProgressHub:
    return request.app.state.progress


ProgressHubDep = Annotated[ProgressHub, Depends(get_progress_hub)]
