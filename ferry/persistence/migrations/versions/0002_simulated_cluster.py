"""simulated cluster tables

Revision ID: 0002_simulated
Revises: 0001_core
Create Date: 2026-11-25 02:00:00.000000

The tables of :mod:`ferry.drivers.simulated.tables` (the embedded default driver's persisted
cluster: hosts, instances, faults, check markers, artifacts, transfers, clock).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_simulated"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ferry_sim_meta",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cluster_name", sa.String(length=255), nullable=False),
        sa.Column("cluster_file", sa.Text(), nullable=True),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("seeded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ferry_sim_clock",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sim_epoch", sa.Float(), nullable=False),
        sa.Column("wall_epoch", sa.Float(), nullable=False),
        sa.Column("speed", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ferry_sim_hosts",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hypervisor_type", sa.String(length=64), nullable=False),
        sa.Column("hypervisor_version", sa.BigInteger(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("bandwidth_mbps", sa.Float(), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("storage_group", sa.String(length=255), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ferry_sim_instances",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("power_state", sa.String(length=32), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("dirty_rate_mbps", sa.Float(), nullable=False),
        sa.Column("volumes", sa.JSON(), nullable=False),
        sa.Column("vifs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["host"], ["ferry_sim_hosts.name"]),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_ferry_sim_instances_host", "ferry_sim_instances", ["host"], unique=False)
    op.create_table(
        "ferry_sim_faults",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.Column("fired", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_ferry_sim_faults_host_phase", "ferry_sim_faults", ["host", "phase"], unique=False
    )
    op.create_table(
        "ferry_sim_check_markers",
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid", "host"),
    )
    op.create_table(
        "ferry_sim_artifacts",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("host", "instance_uuid", "name"),
    )
    op.create_index(
        "ix_ferry_sim_artifacts_instance_uuid",
        "ferry_sim_artifacts",
        ["instance_uuid"],
        unique=False,
    )
    op.create_table(
        "ferry_sim_transfers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("instance_uuid", sa.String(length=64), nullable=False),
        sa.Column("active_key", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("dirty_rate_mbps", sa.Float(), nullable=False),
        sa.Column("bandwidth_mbps", sa.Float(), nullable=False),
        sa.Column("downtime_history", sa.JSON(), nullable=False),
        sa.Column("force_at", sa.Float(), nullable=True),
        sa.Column("force_lever", sa.String(length=16), nullable=True),
        sa.Column("fail_at", sa.Float(), nullable=True),
        sa.Column("fail_message", sa.Text(), nullable=True),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_key", name="uq_ferry_sim_transfers_active"),
    )
    op.create_index(
        "ix_ferry_sim_transfers_instance_uuid",
        "ferry_sim_transfers",
        ["instance_uuid"],
        unique=False,
    )
    op.create_index("ix_ferry_sim_transfers_state", "ferry_sim_transfers", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ferry_sim_transfers_state", table_name="ferry_sim_transfers")
    op.drop_index("ix_ferry_sim_transfers_instance_uuid", table_name="ferry_sim_transfers")
    op.drop_table("ferry_sim_transfers")
    op.drop_index("ix_ferry_sim_artifacts_instance_uuid", table_name="ferry_sim_artifacts")
    op.drop_table("ferry_sim_artifacts")
    op.drop_table("ferry_sim_check_markers")
    op.drop_index("ix_ferry_sim_faults_host_phase", table_name="ferry_sim_faults")
    op.drop_table("ferry_sim_faults")
    op.drop_index("ix_ferry_sim_instances_host", table_name="ferry_sim_instances")
    op.drop_table("ferry_sim_instances")
    op.drop_table("ferry_sim_hosts")
    op.drop_table("ferry_sim_clock")
    op.drop_table("ferry_sim_meta")
