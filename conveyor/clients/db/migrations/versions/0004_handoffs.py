"""handoffs: operations committed but not yet accepted by Temporal

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("workflow_id", sa.String(length=200), primary_key=True),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("operation", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_handoffs_app_id", "handoffs", ["app_id"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_app_id", table_name="handoffs")
    op.drop_table("handoffs")
