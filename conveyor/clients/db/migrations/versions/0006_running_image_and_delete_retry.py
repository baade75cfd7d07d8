"""apps.running_image, apps.status_reason, apps.delete_attempts, deployments.image_from

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("running_image", sa.String(length=600), nullable=True))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("delete_attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("image_from", sa.String(length=40), nullable=True))
    # Apps deployed before: what runs is their active deployment's image.
    op.execute(
        "UPDATE apps SET running_image = (SELECT d.image_ref FROM deployments d "
        "WHERE d.app_id = apps.id AND d.status = 'active' ORDER BY d.finished_at DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("image_from")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("delete_attempts")
        batch.drop_column("status_reason")
        batch.drop_column("running_image")
