"""the transfer's resume state

Revision ID: 0006_transfer_started
Revises: 0005_numa_claims
Create Date: 2026-12-07 17:00:00.000000

``ferry_migrations.transfer_started_at``: when the transfer task last started the transfer (None =
never). A resumed run reads it to re-attach to the transfer rather than start another; it was a
``transfer_started`` key in the progress JSON before. Records written before this revision have
that key: the upgrade moves it into the column (the downgrade back).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_transfer_started"
down_revision = "0005_numa_claims"
branch_labels = None
depends_on = None


_M = sa.table(
    "ferry_migrations",
    sa.column("id", sa.String),
    sa.column("progress", sa.JSON),
    sa.column("updated_at", sa.Float),
    sa.column("transfer_started_at", sa.Float),
)


def upgrade() -> None:
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transfer_started_at", sa.Float(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_M.c.id, _M.c.progress, _M.c.updated_at)).all()
    for row in rows:
        progress = row.progress if isinstance(row.progress, dict) else {}
        if "transfer_started" in progress:
            started = progress.pop("transfer_started")
            conn.execute(
                _M.update()
                .where(_M.c.id == row.id)
                .values(progress=progress, transfer_started_at=row.updated_at if started else None)
            )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_M.c.id, _M.c.progress).where(_M.c.transfer_started_at.is_not(None))
    ).all()
    for row in rows:
        progress = dict(row.progress or {}, transfer_started=True)
        conn.execute(_M.update().where(_M.c.id == row.id).values(progress=progress))
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.drop_column("transfer_started_at")
