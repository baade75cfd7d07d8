"""An app's logs, read from its pods: every line prefixed with `[pod]`.

Read once (`PodLogs.text`), or followed (`PodLogs.follow`): a thread per pod
reads its log stream (the Kubernetes client blocks) and hands the lines to
the event loop; every 2 seconds the app's pods are listed again, so a pod
that appears later is followed too. When the client leaves, each stream's
socket is shut down, which wakes its thread even on a quiet stream.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from api.deps import Caller, read_off_loop
from api.services.cluster import AppTarget, locate, pod_objects
from conveyor.clients.kubernetes import api_client
from conveyor.settings import Settings

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# How often a follow lists the app's pods again.
DISCOVER_SECONDS = 2.0
# Lines read but not yet sent, of all the pods of one follow.
QUEUED_LINES = 10_000


def parse_since(value: str | None) -> int | None:
    """Seconds of `since`: 90, 30s, 5m, 2h or 1d (a 422 naming `since` otherwise)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "must be a duration such as 90, 30s, 5m, 2h or 1d", "type": "value_error"}])
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class LogQuery:
    """Which lines: of one pod or all, of which container, how many, how recent."""

    container: str
    pod: str | None = None
    tail: int | None = None
    since_seconds: int | None = None
    previous: bool = False
    process: str | None = None

    def options(self) -> dict[str, Any]:
        """The keywords of the Kubernetes log read (the ones not asked for are left out)."""
        given = {"container": self.container, "tail_lines": self.tail, "since_seconds": self.since_seconds, "previous": self.previous}
        return {k: v for k, v in given.items() if v not in (None, False)}


def _log_pods(settings: Settings, app: AppTarget, pod: str | None) -> list[str]:
    """The pods to read: those scheduled on a node, or `pod` (404 unless it is one of the app's)."""
    names = [p["metadata"]["name"] for p in pod_objects(settings, app) if p.get("spec", {}).get("nodeName")]
    if pod is not None:
        if pod not in names:
            raise HTTPException(404, "pod is not one of this app's pods")
        return [pod]
    return names


def _interrupt(response: Any) -> None:
    """Wake a reader blocked on a quiet stream without taking its locks: shut the socket down."""
    try:
        response.connection.sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - already closed
        pass


class PodLogs:
    """The logs of one app's pods, as `query` asks for them."""

    def __init__(self, settings: Settings, app: AppTarget, query: LogQuery, pods: list[str]):
        self.settings = settings
        self.app = app
        self.query = query
        self.pods = pods
        self.core = k8s.CoreV1Api(api_client(settings))

    @classmethod
    async def open(cls, settings: Settings, caller: Caller, app_id: str, query: LogQuery) -> PodLogs:
        """The caller's app and its pods, found before anything is streamed (a 404 is an answer of its own)."""
        app = await read_off_loop(settings, locate, caller, app_id, None, query.process)
        pods = await run_in_threadpool(_log_pods, settings, app, query.pod)
        return cls(settings, app, query, pods)

    def _read_all(self) -> str:
        out = []
        for name in self.pods:
            try:
                text = self.core.read_namespaced_pod_log(name, self.app.namespace, **self.query.options())
            except ApiException as exc:
                if exc.status in (400, 404):
                    continue  # not started yet, or gone meanwhile
                raise HTTPException(502, f"Kubernetes answered {exc.status} for the logs of {name}") from exc
            out += [f"[{name}] {line}" for line in text.splitlines()]
        return "\n".join(out) + ("\n" if out else "")

    async def text(self) -> str:
        """The lines there are now."""
        return await run_in_threadpool(self._read_all)

    async def follow(self) -> AsyncIterator[bytes]:
        """The lines as they come, from every pod, until the consumer stops."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUED_LINES)
        stop = threading.Event()
        # A pod's log stream; None while its thread opens it.
        streams: dict[str, Any] = {}
        namespace, options = self.app.namespace, self.query.options()

        def pump(name: str) -> None:
            try:
                # Not preloaded: the urllib3 response, read as the lines come.
                response: Any = self.core.read_namespaced_pod_log(name, namespace, follow=True, _preload_content=False, **options)
            except ApiException:
                streams.pop(name, None)
                return
            streams[name] = response
            try:
                for raw in response:
                    if stop.is_set():
                        break
                    for line in raw.decode(errors="replace").splitlines():
                        loop.call_soon_threadsafe(queue.put_nowait, f"[{name}] {line}\n")
            except Exception:  # noqa: BLE001 - the stream ends when the pod goes or we interrupt it
                pass
            finally:
                response.close()

        def attach(names: list[str]) -> None:
            for name in names:
                if name not in streams:
                    streams[name] = None
                    threading.Thread(target=pump, args=(name,), daemon=True).start()

        async def discover() -> None:
            while not stop.is_set():
                # One pod asked for: that one; else whatever pods the app has now.
                names = self.pods if self.query.pod else await run_in_threadpool(_log_pods, self.settings, self.app, None)
                attach(names)
                await asyncio.sleep(DISCOVER_SECONDS)

        watcher = asyncio.create_task(discover())
        try:
            while True:
                yield (await queue.get()).encode()
        finally:
            stop.set()
            watcher.cancel()
            for response in list(streams.values()):
                if response is not None:
                    _interrupt(response)
