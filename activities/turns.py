"""The app's lane takes the app's turn, and gives it back
(conveyor/clients/db/turns.py says what a turn is).

`take_turn` waits while an operation that started on its own holds the
turn, reading the app's row a few times a second. It is an ordinary
activity, heartbeating, so the Web UI shows the lane waiting ("take the
app's turn") and an operator can cancel or reset it there. A holder whose
workflow has ended without giving the turn back (terminated from the Web
UI) loses it to the lane; one whose workflow has not started yet (its
hand-off still in the outbox) keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from conveyor.clients.db import turns
from conveyor.clients.db.session import session_scope
from conveyor.domain.payloads import TurnInput
from conveyor.settings import Settings

log = logging.getLogger("conveyor.turns")
# How often the waiting lane reads the app's row, and asks Temporal whether the holder still runs.
POLL_SECONDS = 0.2
HOLDER_CHECK_SECONDS = 5.0
# An attempt returns after this long without the turn; the lane asks again
# (a history event pair every few minutes, and a fresh attempt on a fresh worker).
ATTEMPT_SECONDS = 240.0


class TurnActivities:
    def __init__(self, settings: Settings, client: Client | None):
        self.settings = settings
        self.url = settings.effective_database_url
        self._client = client

    @property
    def client(self) -> Client:
        assert self._client is not None, "the worker hands its Temporal client to the turn activities"
        return self._client

    def _take(self, app_id: str, ended_holder: str | None = None) -> tuple[bool, str | None]:
        with session_scope(self.url) as session:
            if turns.take_for_lane(session, app_id, ended_holder):
                return True, None
            return False, turns.holder(session, app_id)

    async def _ended(self, workflow_id: str) -> bool:
        """The holder's workflow has ended (not merely: has not started yet)."""
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return described.status != WorkflowExecutionStatus.RUNNING

    @activity.defn(name="take_turn")
    async def take_turn(self, request: TurnInput) -> bool:
        """True once the lane has the app's turn; False after an attempt's
        time without it (the lane asks again)."""
        give_up_at = time.monotonic() + ATTEMPT_SECONDS
        next_check = 0.0
        superseded: str | None = None
        while True:
            took, holder = await asyncio.to_thread(self._take, request.app_id)
            if took:
                return True
            assert holder is not None, "a turn the lane could not take has a holder"
            if request.supersede and holder != superseded:
                # A delete supersedes the operation running: cancel it (it
                # restores nothing, sees the app being deleted, and gives the turn on).
                log.info("cancelling %s: the app %s is being deleted", holder, request.app_id)
                await self._cancel(holder)
                superseded = holder
            now = time.monotonic()
            if now >= next_check:
                # A holder cancelled for a delete may end without giving the
                # turn back (a scale, or a release cancelled before it began):
                # then it is looked at every second.
                next_check = now + (1.0 if superseded else HOLDER_CHECK_SECONDS)
                if await self._ended(holder):
                    ended = holder
                    took, holder = await asyncio.to_thread(self._take, request.app_id, ended)
                    if took:
                        log.warning("%s ended without giving back the turn of app %s; its lane took it", ended, request.app_id)
                        return True
                    assert holder is not None, "a turn the lane could not take has a holder"
            if now >= give_up_at:
                return False
            activity.heartbeat(holder)
            await asyncio.sleep(POLL_SECONDS)

    async def _cancel(self, workflow_id: str) -> None:
        try:
            await self.client.get_workflow_handle(workflow_id).cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    @activity.defn(name="release_turn")
    def release_turn(self, request: TurnInput) -> bool:
        """The lane gives the app's turn back: False when an operation was
        handed to it after the last it received (it waits for that one)."""
        with session_scope(self.url) as session:
            return turns.release_lane(session, request.app_id, request.seq)
