"""The API's access log: method, path and status, nothing else; spans without queries.

uvicorn's own access log prints the request line with its query string, so a
token sent as `?token=` would land in the log. The app silences that logger and
writes its own line from the ASGI scope's `path` (which never holds the query)
and the response status, whatever server or logging configuration runs it:
no query string, no headers (so no Authorization), no client address.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

from opentelemetry.trace import Span
from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = "conveyor.access"


def install_logging() -> logging.Logger:
    """Silence uvicorn's access logger; give ours a handler unless one is configured.

    The line is queued on the event loop and written by a thread of its own,
    so a slow log file or pipe never holds up the requests."""
    logging.getLogger("uvicorn.access").disabled = True
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        writer = logging.handlers.QueueListener(lines, handler)
        writer.start()
        atexit.register(writer.stop)
        logger.addHandler(logging.handlers.QueueHandler(lines))
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def span_without_query(span: Span, scope: Scope) -> None:
    """Server-span hook: the request's span records the URL without its query
    (OpenTelemetry's default keeps `?token=…` in `http.url`)."""
    if span.is_recording() and scope.get("type") == "http":
        url = str(URL(scope=scope).replace(query=""))
        span.set_attribute("http.url", url)
        span.set_attribute("url.full", url)
        span.set_attribute("url.query", "")


class AccessLogMiddleware:
    """One line per HTTP request when its response ends: `GET /api/v1/apps 200`."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.logger = logging.getLogger(LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app fails before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.logger.info("%s %s %d", scope["method"], scope["path"], status)
