"""The Procfile's processes of images built from source

Revision ID: 0012
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: builds and deployments from before ran web alone.
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("procfile", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("procfile", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("procfile")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("procfile")
