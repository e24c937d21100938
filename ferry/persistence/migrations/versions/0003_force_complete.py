"""force-complete requests

Revision ID: 0003_force_complete
Revises: 0002_simulated
Create Date: 2026-11-25 06:00:00.000000

``ferry_migrations.force_complete_requested``: set by ``ferry force-complete`` (any process), read
by the transfer monitor with the abort flag in the same query.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_force_complete"
down_revision = "0002_simulated"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "force_complete_requested",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.drop_column("force_complete_requested")
