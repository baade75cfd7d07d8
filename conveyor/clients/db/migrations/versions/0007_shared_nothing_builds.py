"""builds share nothing: sources in the registry, logs in the database

Revision ID: 0007
Revises: 0006

Log files written before this revision are copied into `build_log_chunks`
when the migration runs where they are (the local platform migrates on the
host that wrote them); elsewhere those builds' logs read empty.
"""
from pathlib import Path

from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Rows of at most this many characters, cut at line ends.
CHUNK_CHARS = 64 * 1024


def upgrade() -> None:
    chunks = op.create_table(
        "build_log_chunks",
        sa.Column("build_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("build_id", "seq"),
    )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("source_ref", sa.String(length=600), nullable=True))
        batch.alter_column("log_path", existing_type=sa.String(length=1024), nullable=True)
    builds = sa.table("builds", sa.column("id", sa.String), sa.column("log_path", sa.String), sa.column("created_at", sa.DateTime))
    for build_id, log_path, created_at in op.get_bind().execute(sa.select(builds.c.id, builds.c.log_path, builds.c.created_at)):
        try:
            text = Path(log_path).read_text(errors="replace") if log_path else ""
        except OSError:
            continue
        rows, part, seq = [], "", 0
        for line in text.splitlines(keepends=True):
            if part and len(part) + len(line) > CHUNK_CHARS:
                rows.append({"build_id": build_id, "seq": seq, "text": part, "created_at": created_at})
                part, seq = "", seq + 1
            part += line
        if part:
            rows.append({"build_id": build_id, "seq": seq, "text": part, "created_at": created_at})
        if rows:
            op.bulk_insert(chunks, rows)


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("source_ref")
    op.drop_table("build_log_chunks")
