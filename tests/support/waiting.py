"""Waiting for what the platform does: polling until a condition holds, and
reading a streaming answer (logs, build logs, Server-Sent Events) in a thread."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.5, what: str = "condition") -> T:
    """Call `check` until it returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - keep polling, report at the end
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def stream_lines(api, path: str, params: dict | None = None, sink: queue.Queue | None = None) -> queue.Queue:
    """Read a streaming response in a thread; lines land in the returned queue."""
    sink = sink or queue.Queue()

    def run():
        try:
            with api.http.stream("GET", path, params=params, timeout=httpx.Timeout(120, read=120)) as response:
                sink.put(("status", response.status_code))
                for line in response.iter_lines():
                    sink.put(("line", line))
        except httpx.HTTPError as exc:
            sink.put(("error", exc))
        sink.put(("closed", None))

    threading.Thread(target=run, daemon=True).start()
    return sink


def collect_until(sink: queue.Queue, predicate, timeout: float = 60) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, value = sink.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if kind == "line":
            lines.append(value)
            if predicate(lines):
                return lines
        elif kind == "status":
            assert value == 200, value
        elif kind == "closed":
            break
    raise AssertionError(f"stream did not deliver what was expected; got {lines}")


def stream_closes(sink: queue.Queue, timeout: float) -> bool:
    """Whether the stream read into `sink` ends (the server closed it) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, _ = sink.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if kind in ("closed", "error"):
            return kind == "closed"
    return False


def sse_events(lines: list[str]) -> list[tuple[str, dict]]:
    """(event, data) of each Server-Sent Event in the lines of a stream."""
    out, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
    return out
