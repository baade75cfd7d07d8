"""Health checks and resources of apps and their releases; project limits

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows from before hold none, which means what they ran with
    # (the TCP readiness check, no resources, no project limits).
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("workload", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("workload", sa.JSON(), nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("limits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("limits")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("workload")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("workload")
