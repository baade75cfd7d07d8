"""Build logs in the database: the worker appends whole lines as numbered
chunks while the build runs; any API replica reads the chunks after the last
one it sent. Nothing is shared on disk."""

from __future__ import annotations

import logging
import threading
from collections import deque

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.clients.db.models import BuildLogChunk
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.ids import utcnow

# A chunk is written at least this often while lines come in, so a follower
# sees them at once (one row per flush, not per line).
FLUSH_SECONDS = 0.3
CHUNK_CHARS = 64 * 1024


class BuildLogWriter:
    """Thread-safe line writer; a background thread flushes buffered lines.

    A retried build (another attempt, maybe on another worker) continues after
    the chunks the earlier attempt wrote."""

    def __init__(self, url: str, build_id: str, tail_lines: int = 20):
        self.url, self.build_id = url, build_id
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._size = 0
        self._tail: deque[str] = deque(maxlen=tail_lines)
        with read_scope(url) as session:
            last = session.scalar(select(func.max(BuildLogChunk.seq)).where(BuildLogChunk.build_id == build_id))
        self._next_seq = 0 if last is None else last + 1
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name=f"log-{build_id}", daemon=True)
        self._flusher.start()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._buffer.append(line + "\n")
            self._size += len(line) + 1
            self._tail.append(line)
            full = self._size >= CHUNK_CHARS
        if full:
            self.flush()

    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._tail)

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            # Written under the lock, so chunks land in order; the buffer is
            # kept when the write fails, for the next flush.
            with session_scope(self.url) as session:
                session.add(BuildLogChunk(build_id=self.build_id, seq=self._next_seq, text="".join(self._buffer), created_at=utcnow()))
            self._buffer, self._size = [], 0
            self._next_seq += 1

    def _flush_periodically(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the database may blink; the next flush retries with what is buffered
                pass

    def close(self) -> None:
        self._closed.set()
        self._flusher.join()
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the log's last lines must not replace the build's own outcome
            logging.getLogger(__name__).warning("build %s: the last log lines could not be written", self.build_id, exc_info=True)

    def __enter__(self) -> BuildLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks_after(session: Session, build_id: str, after: int) -> list[tuple[int, str]]:
    """The chunks of a build with seq > after, in order."""
    rows = session.execute(
        select(BuildLogChunk.seq, BuildLogChunk.text)
        .where(BuildLogChunk.build_id == build_id, BuildLogChunk.seq > after)
        .order_by(BuildLogChunk.seq)
    )
    return [(seq, text) for seq, text in rows]
