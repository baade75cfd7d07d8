"""Job runs: release commands and scheduled jobs

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("app_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("deployment_id", sa.String(40), nullable=True),
        sa.Column("image_ref", sa.String(600), nullable=True),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("workflow_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("job_name", name="uq_job_runs_job_name"),
    )
    op.create_index("ix_job_runs_app_id", "job_runs", ["app_id"])
    op.create_index("ix_job_runs_deployment_id", "job_runs", ["deployment_id"])
    op.create_index("ix_job_runs_created_at", "job_runs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_created_at", "job_runs")
    op.drop_index("ix_job_runs_deployment_id", "job_runs")
    op.drop_index("ix_job_runs_app_id", "job_runs")
    op.drop_table("job_runs")
