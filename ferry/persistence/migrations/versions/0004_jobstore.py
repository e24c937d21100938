"""job store tables

Revision ID: 0004_jobstore
Revises: 0003_force_complete
Create Date: 2026-11-25 05:30:00.000000

The tables of :mod:`ferry.jobs.tables`: jobs posted to a board, and the concurrency-limit slots.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_jobstore"
down_revision = "0003_force_complete"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ferry_jobs",
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("job_uuid", sa.String(length=64), nullable=True),
        sa.Column("job_name", sa.String(length=255), nullable=True),
        sa.Column("board", sa.String(length=512), nullable=True),
        sa.Column("posted_at", sa.Float(), nullable=True),
        sa.Column("dispatches", sa.Integer(), nullable=False),
        sa.Column("last_owner", sa.String(length=255), nullable=True),
        sa.Column("last_dispatch_at", sa.Float(), nullable=True),
        sa.Column("consumed_at", sa.Float(), nullable=True),
        sa.Column("consumed_by", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("migration_id"),
    )
    with op.batch_alter_table("ferry_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ferry_jobs_job_uuid"), ["job_uuid"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ferry_jobs_consumed_at"), ["consumed_at"], unique=False
        )
    op.create_table(
        "ferry_slot_counters",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "ferry_slots",
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("migration_id", "key"),
    )
    with op.batch_alter_table("ferry_slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ferry_slots_key"), ["key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ferry_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_slots_key"))
    op.drop_table("ferry_slots")
    op.drop_table("ferry_slot_counters")
    with op.batch_alter_table("ferry_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_jobs_consumed_at"))
        batch_op.drop_index(batch_op.f("ix_ferry_jobs_job_uuid"))
    op.drop_table("ferry_jobs")
