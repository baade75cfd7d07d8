"""A deployment's last progress steps, recorded with its outcome

Revision ID: 0015
Revises: 0014

The workflow hands its steps to `finish_deployment` as it records the
outcome, so an ended deployment's progress is read from its row: no query
makes a worker replay the closed workflow's history, and a progress stream
ends as soon as the outcome is recorded. Rows from before keep NULL and are
read from the workflow, as before.
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("progress")
