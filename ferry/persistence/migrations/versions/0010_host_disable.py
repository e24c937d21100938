"""hosts disabled by an operator

Revision ID: 0010_host_disable
Revises: 0009_drains
Create Date: 2026-12-08 01:30:00.000000

``ferry_host_maintenance.drain_id`` may be NULL: a host disabled by an operator
(``POST /api/v1/hosts/{name}/disable``, ``Orchestrator.disable_host``), not by a drain. One row
per disabled host either way; the scheduler reads every row as ``enabled = False``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_host_disable"
down_revision = "0009_drains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ferry_host_maintenance", schema=None) as batch_op:
        batch_op.alter_column("drain_id", existing_type=sa.String(36), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM ferry_host_maintenance WHERE drain_id IS NULL")
    with op.batch_alter_table("ferry_host_maintenance", schema=None) as batch_op:
        batch_op.alter_column("drain_id", existing_type=sa.String(36), nullable=False)
