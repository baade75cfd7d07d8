"""Polling helpers shared by the tests."""

from __future__ import annotations

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


def point_tag(settings, repository: str, tag: str, source: str, source_repository: str | None = None) -> str:
    """Make `repository:tag` name the manifest of `source_repository:source` in
    the local registry (as a `docker push` of another build would); returns its digest."""
    from conveyor.stack import registry

    base = registry.url(settings)
    source_repository = source_repository or repository
    got = httpx.get(f"{base}/v2/{source_repository}/manifests/{source}", headers={"Accept": registry.MANIFEST_ACCEPT})
    got.raise_for_status()
    if source_repository != repository:
        manifest = got.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            mounted = httpx.post(
                f"{base}/v2/{repository}/blobs/uploads/", params={"mount": blob["digest"], "from": source_repository}
            )
            assert mounted.status_code == 201, mounted.text
    put = httpx.put(
        f"{base}/v2/{repository}/manifests/{tag}", content=got.content, headers={"Content-Type": got.headers["content-type"]}
    )
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"]


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
