"""why a cached host is down

Revision ID: 0007_host_down_reason
Revises: 0006_transfer_started
Create Date: 2026-12-07 18:00:00.000000

``ferry_host_states.down_reason``: why the driver reported the host down (an unreachable
hypervisor, a failed authentication to a XenAPI pool, ...); None when up. ``ferry hosts`` shows it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_host_down_reason"
down_revision = "0006_transfer_started"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ferry_host_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("down_reason", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ferry_host_states", schema=None) as batch_op:
        batch_op.drop_column("down_reason")
