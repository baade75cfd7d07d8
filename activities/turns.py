"""The app's lane asks for the app's turn, and gives it back
(conveyor/clients/db/turns.py says what a turn is).

`take_turn` is one short attempt: the lane has the turn, or not yet. The
lane asks again when the holder gives the turn on (its outcome's
transaction signals the lane, `turn_offered`) or after a while. A holder
whose workflow has ended without giving the turn back (terminated in the
Web UI, or gone from Temporal with its history) loses it to the lane; one
whose hand-off still waits in the outbox keeps it. For a delete, the
holder is cancelled each time the lane asks (the cancel of a workflow not
started yet has nothing to reach).
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from conveyor.clients.db import turns
from conveyor.clients.db.session import session_scope
from conveyor.domain.payloads import TurnInput
from conveyor.settings import Settings

log = logging.getLogger("conveyor.turns")


class TurnActivities:
    def __init__(self, settings: Settings, client: Client | None):
        self.url = settings.effective_database_url
        self._client = client

    @property
    def client(self) -> Client:
        assert self._client is not None, "the worker hands its Temporal client to the turn activities"
        return self._client

    def _take(self, app_id: str, ended_holder: str | None = None) -> tuple[bool, str | None, bool]:
        """Whether the lane took the turn; else who holds it, and whether that
        one's hand-off is still in the outbox (read before Temporal is asked:
        a workflow not started yet is unknown to it, and the row goes only
        once it has started)."""
        with session_scope(self.url) as session:
            if turns.take_for_lane(session, app_id, ended_holder):
                return True, None, False
            holder = turns.holder(session, app_id)
            return False, holder, holder is not None and turns.handoff_waits(session, holder)

    async def _ended(self, workflow_id: str) -> bool:
        """The holder's workflow, handed off already, is not running: it
        ended, or Temporal has no record of it any more."""
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return described.status != WorkflowExecutionStatus.RUNNING

    async def _cancel(self, workflow_id: str) -> None:
        try:
            await self.client.get_workflow_handle(workflow_id).cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    @activity.defn(name="take_turn")
    async def take_turn(self, request: TurnInput) -> bool:
        """True when the lane has the app's turn now."""
        took, holder, waiting = await asyncio.to_thread(self._take, request.app_id)
        if took:
            return True
        if holder is None or holder == turns.LANE or waiting:
            # It changed hands as we looked, or its workflow has not started
            # yet (nothing to cancel or ask about): ask again later.
            return False
        if request.supersede:
            # A delete supersedes the operation running: it restores nothing,
            # sees the app being deleted, and gives the turn on.
            log.info("cancelling %s: app %s is being deleted", holder, request.app_id)
            await self._cancel(holder)
        if await self._ended(holder):
            took, _, _ = await asyncio.to_thread(self._take, request.app_id, holder)
            if took:
                log.warning("%s ended without giving back the turn of app %s; its lane took it", holder, request.app_id)
            return took
        return False

    @activity.defn(name="release_turn")
    def release_turn(self, request: TurnInput) -> bool:
        """The lane gives the app's turn back: False when an operation was
        handed to it after the last it received (it waits for that one)."""
        with session_scope(self.url) as session:
            return turns.release_lane(session, request.app_id, request.seq)
