"""Whose turn it is to change an app: operations of an idle app run at once

Revision ID: 0016
Revises: 0015

An operation of an app that has none in flight no longer goes through the
app's lane workflow: its own workflow starts at once and holds the app's
turn (`apps.turn`) until it records its outcome. Operations that arrive
meanwhile go to the lane, which takes the turn from it (conveyor/clients/db/turns.py).

Existing apps start with the turn their lane's: a lane of the release
before may still run their operations, and it knows nothing of turns. So
each app's next operation goes to a lane as before, and the first lane of
this release that runs one gives the turn back; from then on the app's
operations run on their own when nothing else is in flight.
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("turn", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lane_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lane_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(sa.text("UPDATE apps SET turn = 'lane'"))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("lane_pending")
        batch.drop_column("lane_seq")
        batch.drop_column("turn")
