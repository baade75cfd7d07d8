"""Writes take turns; reads never wait for them.

A burst of writes (200 apps created at once) used to run all at once in the
API process: every one of them stepped through the middleware, the caller's
token, its transaction and its hand-off on the one event loop, and a list or
a status read arriving meanwhile waited behind all of their steps. Here at
most `api_concurrent_writes` writes of this process are past this layer at a
time; the rest wait their turn, in arrival order, parked on one await. A
write's turn ends when it answers, or `TURN_HANDOFF_SECONDS` after its
transaction committed if its hand-off to Temporal is still waiting then
(`end_turn`, called by the unit of work): the hand-offs of a burst are loop
work too, but a slow Temporal must not slow every write to one at a time.

A write is let in only once its whole body has arrived (bounded by
`api/limits.py`, which is outside this layer), so a client that sends its
body slowly never holds a turn. Reads (GET, HEAD, OPTIONS), uploads (their
body is streamed to disk as it comes) and Temporal's codec (the Web UI's
decoding, which writes nothing) do not take turns.
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READS = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_TURN = re.compile(r"^/api/v1/(apps/[^/]+/build$|codec/)")
_END_TURN = "conveyor.end_turn"
# The longest a write's turn waits on its hand-off to Temporal after its commit.
TURN_HANDOFF_SECONDS = 1.0


class WriteTurns:
    """This process's turns: at most `limit` writes at a time, the rest waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self.waiting = 0
        self.running = 0
        self._free: asyncio.Semaphore | None = None

    async def take(self) -> None:
        if self._free is None:  # made on the event loop that serves
            self._free = asyncio.Semaphore(self.limit)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def give_back(self) -> None:
        assert self._free is not None
        self.running -= 1
        self._free.release()


class WriteTurnsMiddleware:
    def __init__(self, app: ASGIApp, turns: WriteTurns):
        self.app = app
        self.turns = turns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS or _NO_TURN.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        body = await _whole_body(receive)
        if body is None:
            return  # the client went away before its body arrived
        await self.turns.take()
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.turns.give_back()

        async def ending_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                end()
            await send(message)

        scope.setdefault("state", {})[_END_TURN] = end
        try:
            await self.app(scope, _replay(body, receive), ending_send)
        finally:
            end()


def end_turn(request: Request) -> None:
    """End the request's write turn (after its commit), if it took one."""
    ended = request.scope.get("state", {}).get(_END_TURN)
    if ended is not None:
        ended()


async def _whole_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; after it, whatever the client sends next (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
