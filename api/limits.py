"""Request bodies are bounded before anything reads them.

FastAPI reads a multipart form (an upload) whole, into a temporary file,
before any dependency runs, so a caller without a token could otherwise fill
the disk. This layer, outside everything else, refuses a body over its
route's limit with a 413: by its Content-Length at once, or while it streams."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.settings import Settings

# JSON bodies: an app's env is at most 256 KiB.
DEFAULT_LIMIT = 1024 * 1024
# Temporal's remote codec: one history event's payloads.
CODEC_LIMIT = 5 * 1024 * 1024
# Multipart framing around an uploaded tarball.
MULTIPART_MARGIN = 64 * 1024
# How much of a refused body is read and dropped before the answer.
DRAIN_LIMIT = 16 * 1024 * 1024
# The routes whose bodies are not JSON of DEFAULT_LIMIT (also what api/admission.py lets by).
UPLOAD = re.compile(r"^/api/v1/apps/[^/]+/build$")
CODEC_PREFIX = "/api/v1/codec/"


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.upload_limit = settings.upload_max_bytes + MULTIPART_MARGIN

    def limit_for(self, path: str) -> int:
        if UPLOAD.match(path):
            return self.upload_limit
        if path.startswith(CODEC_PREFIX):
            return CODEC_LIMIT
        return DEFAULT_LIMIT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _drain(receive)
            await _refuse(send, limit)
            return
        seen = 0
        exceeded = started = False
        # The client sent its last chunk: nothing is left to drain.
        sent_all = False

        async def bounded_receive() -> Message:
            nonlocal seen, exceeded, sent_all
            message = await receive()
            if message["type"] == "http.request":
                sent_all = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def noting_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the parser made of the cut-off body (FastAPI answers
                # a broken form with a 400), the answer is this 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    if not sent_all:
                        await _drain(receive)
                    await _refuse(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, noting_send)
        except _TooLarge:
            if not started:
                if not sent_all:
                    await _drain(receive)
                await _refuse(send, limit)


async def _drain(receive: Receive) -> None:
    """Read and drop a little more of the refused body, so that a client still
    sending gets the 413 instead of a broken connection; past DRAIN_LIMIT the
    connection is simply closed."""
    dropped = 0
    while dropped < DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, limit: int) -> None:
    body = b'{"detail":"body: larger than %d bytes"}' % limit
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
