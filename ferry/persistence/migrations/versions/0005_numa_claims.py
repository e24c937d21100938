"""NUMA-aware host state cache and pCPU claims (issue 7)

Revision ID: 0005_numa_claims
Revises: 0004_jobstore
Create Date: 2026-11-28 09:00:00.000000

* ``ferry_host_states``: ``labels``, ``groups`` (host aggregates, ",a,b,") and ``accounted_at``
  (when ferry last changed the usage itself; older driver reports no longer overwrite it).
* ``ferry_host_numa_cells``: every cached host's NUMA cells with pinned / used / claimed
  resources, so the scheduler filters NUMA fit in SQL.
* ``ferry_claims``: ``kind`` (``destination`` or ``source``), ``numa_cell`` and ``pinning``.
* ``ferry_pcpu_claims``: one row per claimed pCPU; its primary key (host, pcpu) makes two claims
  of one pCPU impossible.
* the simulated cluster: NUMA cells per host, CPU policy and pinning per instance, the pinning a
  transfer was handed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_numa_claims"
down_revision = "0004_jobstore"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ferry_host_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("groups", sa.String(length=1024), nullable=False, server_default=",")
        )
        batch_op.add_column(
            sa.Column("accounted_at", sa.Float(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("ferry_claims", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="destination")
        )
        batch_op.add_column(sa.Column("numa_cell", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pinning", sa.JSON(), nullable=True))
        batch_op.create_index("ix_ferry_claims_host", ["host"], unique=False)
    op.create_table(
        "ferry_host_numa_cells",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("cell", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cpus", sa.JSON(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("pinned", sa.JSON(), nullable=False),
        sa.Column("n_cpus", sa.Integer(), nullable=False),
        sa.Column("n_pinned", sa.Integer(), nullable=False),
        sa.Column("used_mb", sa.BigInteger(), nullable=False),
        sa.Column("claimed_pcpus", sa.Integer(), nullable=False),
        sa.Column("claimed_mb", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["host"], ["ferry_host_states.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host", "cell"),
    )
    op.create_table(
        "ferry_pcpu_claims",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pcpu", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=False),
        sa.Column("cell", sa.Integer(), nullable=False),
        sa.Column("vcpu", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["host"], ["ferry_host_states.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host", "pcpu"),
    )
    with op.batch_alter_table("ferry_pcpu_claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ferry_pcpu_claims_migration_id"), ["migration_id"], unique=False
        )
    with op.batch_alter_table("ferry_sim_hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("numa_cells", sa.JSON(), nullable=True))
    with op.batch_alter_table("ferry_sim_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_policy", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("numa_pinning", sa.JSON(), nullable=True))
    with op.batch_alter_table("ferry_sim_transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("numa_pinning", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ferry_sim_transfers", schema=None) as batch_op:
        batch_op.drop_column("numa_pinning")
    with op.batch_alter_table("ferry_sim_instances", schema=None) as batch_op:
        batch_op.drop_column("numa_pinning")
        batch_op.drop_column("cpu_policy")
    with op.batch_alter_table("ferry_sim_hosts", schema=None) as batch_op:
        batch_op.drop_column("numa_cells")
    with op.batch_alter_table("ferry_pcpu_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ferry_pcpu_claims_migration_id"))
    op.drop_table("ferry_pcpu_claims")
    op.drop_table("ferry_host_numa_cells")
    with op.batch_alter_table("ferry_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_ferry_claims_host")
        batch_op.drop_column("pinning")
        batch_op.drop_column("numa_cell")
        batch_op.drop_column("kind")
    with op.batch_alter_table("ferry_host_states", schema=None) as batch_op:
        batch_op.drop_column("accounted_at")
        batch_op.drop_column("groups")
        batch_op.drop_column("labels")
