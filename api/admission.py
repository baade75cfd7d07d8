"""Writes take turns; reads never wait for them.

A burst of writes (200 apps created at once) used to run all at once in the
API process: every one of them stepped through the middleware, the caller's
token, its transaction and its hand-off on the one event loop, and a list or
a status read arriving meanwhile waited behind all of their steps. Here at
most `api_concurrent_writes` writes of this process are past this layer at a
time; the rest wait their turn, in arrival order, parked on one await.

A turn ends when the write answers, and after TURN_SECONDS in any case: a
write that waits on something slow (Temporal away, a lock held long, a
route that waits for a workflow) goes on waiting without its turn, so it
never holds up the writes behind it for longer than that.

A write is let in only once its whole body has arrived (bounded by
`api/limits.py`, which is outside this layer), so a client that sends its
body slowly never holds a turn. Reads (GET, HEAD, OPTIONS), uploads (their
body is streamed to disk as it comes) and Temporal's codec (the Web UI's
decoding, which writes nothing) do not take turns.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import CODEC_PREFIX, UPLOAD

READS = frozenset({"GET", "HEAD", "OPTIONS"})
# The longest one write holds its turn (a create takes 10-50 ms of it).
TURN_SECONDS = 0.5


class WriteTurns:
    """This process's turns: at most `limit` writes at a time, the rest waiting."""

    def __init__(self, limit: int, turn_seconds: float = TURN_SECONDS):
        self.limit = limit
        self.turn_seconds = turn_seconds
        self.waiting = 0
        self.running = 0
        # One semaphore per event loop that serves (an app under test may be
        # served by more than one, one after the other).
        self._free: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    async def take(self) -> asyncio.Semaphore:
        """Wait for a turn; returns what to give it back to."""
        loop = asyncio.get_running_loop()
        free = self._free.get(loop)
        if free is None:
            free = self._free[loop] = asyncio.Semaphore(self.limit)
        self.waiting += 1
        try:
            await free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return free

    def give_back(self, free: asyncio.Semaphore) -> None:
        self.running -= 1
        free.release()


class WriteTurnsMiddleware:
    def __init__(self, app: ASGIApp, turns: WriteTurns):
        self.app = app
        self.turns = turns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] in READS or UPLOAD.match(path) or path.startswith(CODEC_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await _whole_body(receive)
        if body is None:
            return  # the client went away before its body arrived
        free = await self.turns.take()
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.turns.give_back(free)

        async def ending_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                end()
            await send(message)

        timer = asyncio.get_running_loop().call_later(self.turns.turn_seconds, end)
        try:
            await self.app(scope, _replay(body, receive), ending_send)
        finally:
            timer.cancel()
            end()


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
