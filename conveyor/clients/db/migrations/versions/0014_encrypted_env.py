"""Registry credentials per project; app and deployment env sealed at rest

Revision ID: 0014
Revises: 0013

Env values (apps.env, deployments.env) were plaintext JSON, and so were the
answers kept for Idempotency-Key replays (which show an app's env). Each row becomes
an envelope sealed with the payload keyring (conveyor/clients/db/sealed.py),
so the keyring (CONVEYOR_PAYLOAD_KEYS or the key file) must be available to
`conveyor db upgrade` when there are rows. The column type stays JSON: a
process of the previous release reading a plaintext row during the rollout,
or this release reading one written by it, both keep working (a plaintext
value reads as it is, and is sealed the next time it is written).
"""
import sqlalchemy as sa
from alembic import op

from conveyor.clients.db.sealed import open_sealed_rows, seal_plaintext_rows

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SEALED_COLUMNS = (("apps", "env", "env"), ("deployments", "env", "env"), ("idempotency_keys", "body", "idempotent-answer"))


def upgrade() -> None:
    op.create_table(
        "registry_credentials",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("registry", sa.String(300), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "registry", name="uq_registry_credentials_project_registry"),
    )
    op.create_index("ix_registry_credentials_project_id", "registry_credentials", ["project_id"])
    connection = op.get_bind()
    for table, column, purpose in SEALED_COLUMNS:
        seal_plaintext_rows(connection, table, column, purpose)


def downgrade() -> None:
    connection = op.get_bind()
    for table, column, purpose in SEALED_COLUMNS:
        open_sealed_rows(connection, table, column, purpose)
    op.drop_index("ix_registry_credentials_project_id", "registry_credentials")
    op.drop_table("registry_credentials")
