"""Rollout progress reaches its workflow in the order the rollout wait saw it.

The client here is a stand-in: a Temporal that answers one signal slower than
the next cannot be produced on demand with the real server."""

from __future__ import annotations

import asyncio
import threading

from conveyor.domain.payloads import RolloutProgress
from tests.support.waiting import eventually
from worker import progress_reporter


class SlowFirstClient:
    """Each signal takes less time than the one before it."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.calls = 0

    def get_workflow_handle(self, workflow_id: str):
        client = self

        class Handle:
            async def signal(self, _signal, progress: RolloutProgress) -> None:
                client.calls += 1
                await asyncio.sleep(0.2 / client.calls)
                client.delivered.append((workflow_id, progress.ready))

        return Handle()


def test_one_workflows_progress_arrives_in_the_order_it_was_reported():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        client = SlowFirstClient()
        report = progress_reporter(client, loop)  # type: ignore[arg-type]
        # Reported from an activity thread, as the rollout wait does.
        for ready in (1, 2, 3):
            report("deploy-a", RolloutProgress(ready=ready, desired=3, message=""))
        report("deploy-b", RolloutProgress(ready=1, desired=1, message=""))

        eventually(lambda: len(client.delivered) == 4, 10, interval=0.02, what="every signal")
        assert [ready for wid, ready in client.delivered if wid == "deploy-a"] == [1, 2, 3]
        # Another workflow does not wait behind this one.
        assert client.delivered.index(("deploy-b", 1)) < client.delivered.index(("deploy-a", 3))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
