"""Whose turn it is to change an app in the cluster.

An app's operations (releases, scales, deletes) run one at a time, in the
order they were committed. Most of the time an app has none in flight, and
then an operation needs no queue: its own workflow starts at once and holds
the app's turn (`apps.turn` = its workflow id) until it records its outcome.
An operation committed while the turn is held goes to the app's lane
workflow instead, which runs the ones it holds in order, each once the lane
has the turn (`apps.turn` = "lane").

Every step is one conditional UPDATE of the app's row, so two API replicas,
a retried activity or a worker killed half-way cannot give the turn to two
holders:

- `route` (in the request's transaction): the turn if nobody has it, else a
  place in the lane (`lane_seq`), with `lane_pending` set;
- `release` (in the transaction that records a holder's outcome): to the
  lane if it has operations waiting, else to nobody;
- `take_for_lane`: the lane takes a free turn, or one whose holder's
  workflow has ended without giving it back (terminated from the Web UI);
- `release_lane`: the lane gives the turn back once it has run every
  operation handed to it (`lane_seq` unchanged since the last it received).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, case, exists, select, update
from sqlalchemy.orm import Session

from conveyor.clients.db.models import App, Handoff

LANE = "lane"


def _set(app_id: str, *where: Any, **values: Any) -> Any:
    """An UPDATE of the app's turn columns; `updated_at` stays what the app's
    owner last changed (it would otherwise take its on-update default)."""
    return update(App).where(App.id == app_id, *where).values(updated_at=App.updated_at, **values)


def _changed(session: Session, statement: Any) -> bool:
    return bool(cast(CursorResult[Any], session.execute(statement, execution_options={"synchronize_session": False})).rowcount)


def route(session: Session, app_id: str, workflow_id: str) -> int | None:
    """None when the operation `workflow_id` has the app's turn now and runs
    on its own; else its place in the lane."""
    session.flush()
    if _changed(session, _set(app_id, App.turn.is_(None), turn=workflow_id)):
        return None
    _changed(session, _set(app_id, lane_seq=App.lane_seq + 1, lane_pending=True))
    place = session.scalar(select(App.lane_seq).where(App.id == app_id))
    return int(place or 0)


def release(session: Session, app_id: str, workflow_id: str) -> bool:
    """`workflow_id` is done with the app: the turn goes to the lane if the
    lane has operations waiting, else to nobody. True when it went to the
    lane (the caller tells the lane once this commits)."""
    if not _changed(session, _set(app_id, App.turn == workflow_id, turn=case((App.lane_pending, LANE), else_=None))):
        return False  # it did not hold the turn
    return holder(session, app_id) == LANE


def _exists(session: Session, app_id: str) -> bool:
    return session.scalar(select(App.id).where(App.id == app_id)) is not None


def handoff_waits(session: Session, workflow_id: str) -> bool:
    """The operation's hand-off is still in the outbox: its workflow may not have started."""
    return session.scalar(select(Handoff.workflow_id).where(Handoff.workflow_id == workflow_id)) is not None


def holder(session: Session, app_id: str) -> str | None:
    """Who holds the app's turn (None: nobody, or the app is gone)."""
    return session.scalar(select(App.turn).where(App.id == app_id))


def take_for_lane(session: Session, app_id: str, ended_holder: str | None = None) -> bool:
    """The lane takes the turn: when it is free or the lane's already, or
    from `ended_holder`, whose workflow is not running (ended without giving
    it back, or unknown to Temporal), unless that one's hand-off still waits
    in the outbox. True also when the app is gone (its lane has nothing left
    to wait for)."""
    if not _exists(session, app_id):
        return True
    free = App.turn.is_(None) | (App.turn == LANE)
    if ended_holder is not None:
        free = free | ((App.turn == ended_holder) & ~exists().where(Handoff.workflow_id == ended_holder))
    return _changed(session, _set(app_id, free, turn=LANE))


def release_lane(session: Session, app_id: str, last_received: int) -> bool:
    """The lane gives the turn back, unless an operation was handed to it
    after `last_received` (it is on its way as a signal). True also when
    the app is gone or the lane did not hold the turn."""
    if not _exists(session, app_id):
        return True
    lane_has_it = App.turn == LANE
    if _changed(
        session,
        _set(app_id, lane_has_it, App.lane_seq <= last_received, turn=None, lane_pending=False),
    ):
        return True
    return session.scalar(select(App.turn).where(App.id == app_id)) != LANE
