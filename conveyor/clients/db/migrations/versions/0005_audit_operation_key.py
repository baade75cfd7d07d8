"""audit entries written by workflows: once per (operation, action)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("operation_key", sa.String(length=200), nullable=True))
        batch.create_unique_constraint("uq_audit_operation_action", ["operation_key", "action"])


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_constraint("uq_audit_operation_action", type_="unique")
        batch.drop_column("operation_key")
