"""drains (host maintenance)

Revision ID: 0009_drains
Revises: 0008_api_tokens
Create Date: 2026-12-07 18:00:00.000000

``ferry_drains`` (one host emptied by live migrations), ``ferry_drain_guests`` (each guest's
state, migration and destination) and ``ferry_host_maintenance`` (hosts disabled for scheduling
by a drain until ``undrain``; written in the drain's own transaction).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_drains"
down_revision = "0008_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ferry_drains",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("abort_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
    )
    op.create_table(
        "ferry_drain_guests",
        sa.Column(
            "drain_id",
            sa.String(36),
            sa.ForeignKey("ferry_drains.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("instance_uuid", sa.String(64), primary_key=True),
        sa.Column("instance_name", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("migration_id", sa.String(36), nullable=True),
        sa.Column("destination", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "ferry_host_maintenance",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("drain_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", sa.Float(), nullable=False),
    )
    op.create_index("ix_ferry_drains_host", "ferry_drains", ["host"])
    op.create_index("ix_ferry_drains_status", "ferry_drains", ["status"])
    op.create_index("ix_ferry_drain_guests_migration_id", "ferry_drain_guests", ["migration_id"])


def downgrade() -> None:
    op.drop_table("ferry_host_maintenance")
    op.drop_table("ferry_drain_guests")
    op.drop_table("ferry_drains")
