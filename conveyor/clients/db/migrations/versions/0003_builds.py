"""builds

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("deployment_id", sa.String(length=40), nullable=True),
        sa.Column("source_type", sa.String(length=10), nullable=False),
        sa.Column("source_commit", sa.String(length=64), nullable=True),
        sa.Column("upload_path", sa.String(length=1024), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("image_ref", sa.String(length=600), nullable=True),
        sa.Column("image_digest", sa.String(length=80), nullable=True),
        sa.Column("log_path", sa.String(length=1024), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_builds_app_id", "builds", ["app_id"])
    op.create_index("ix_builds_source_commit", "builds", ["source_commit"])


def downgrade() -> None:
    op.drop_index("ix_builds_source_commit", table_name="builds")
    op.drop_index("ix_builds_app_id", table_name="builds")
    op.drop_table("builds")
