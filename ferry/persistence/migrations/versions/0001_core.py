"""core tables

Revision ID: 0001_core
Revises:
Create Date: 2026-11-25 01:44:10.788730
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "ferry_host_states",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("driver", sa.String(length=32), nullable=False),
        sa.Column("hypervisor_type", sa.String(length=64), nullable=False),
        sa.Column("hypervisor_version", sa.BigInteger(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("vcpus_used", sa.Integer(), nullable=False),
        sa.Column("memory_mb_used", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb_used", sa.BigInteger(), nullable=False),
        sa.Column("claimed_vcpus", sa.Integer(), nullable=False),
        sa.Column("claimed_memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("claimed_disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("storage_group", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ferry_instance_locks",
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    op.create_table(
        "ferry_leases",
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("migration_id"),
    )
    op.create_table(
        "ferry_migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("instance_name", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("destination", sa.String(length=255), nullable=True),
        sa.Column("requested_destination", sa.String(length=255), nullable=True),
        sa.Column("block_migration", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("leftovers", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("abort_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ferry_migrations_destination"), ["destination"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ferry_migrations_instance_uuid"), ["instance_uuid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ferry_migrations_source"), ["source"], unique=False)
        batch_op.create_index(batch_op.f("ix_ferry_migrations_status"), ["status"], unique=False)

    op.create_table(
        "ferry_claims",
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host"],
            ["ferry_host_states.name"],
        ),
        sa.PrimaryKeyConstraint("migration_id", "host"),
    )
    op.create_table(
        "ferry_migration_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["migration_id"], ["ferry_migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("migration_id", "host", name="uq_attempt_host"),
    )
    with op.batch_alter_table("ferry_migration_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ferry_migration_attempts_migration_id"), ["migration_id"], unique=False
        )

    op.create_table(
        "ferry_migration_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["migration_id"], ["ferry_migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ferry_migration_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ferry_migration_events_migration_id"), ["migration_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("ferry_migration_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_migration_events_migration_id"))

    op.drop_table("ferry_migration_events")
    with op.batch_alter_table("ferry_migration_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_migration_attempts_migration_id"))

    op.drop_table("ferry_migration_attempts")
    op.drop_table("ferry_claims")
    with op.batch_alter_table("ferry_migrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_migrations_status"))
        batch_op.drop_index(batch_op.f("ix_ferry_migrations_source"))
        batch_op.drop_index(batch_op.f("ix_ferry_migrations_instance_uuid"))
        batch_op.drop_index(batch_op.f("ix_ferry_migrations_destination"))

    op.drop_table("ferry_migrations")
    op.drop_table("ferry_leases")
    op.drop_table("ferry_instance_locks")
    op.drop_table("ferry_host_states")
