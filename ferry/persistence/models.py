"""ferry's own tables, as SQLAlchemy Core tables on one :data:`METADATA` (the job store's and
the simulated cluster's tables join it from their own modules). Schema changes go through Alembic
(``ferry/persistence/migrations``); TaskFlow's logbook tables live in the same database.

Core, not the ORM: ferry reads and writes with Core statements only, and declaring the tables
as ORM classes cost every command the import of ``sqlalchemy.orm`` and the mapping of the classes
(about a fifth of a second of a read command's start-up on this project's machine type).
"""

from __future__ import annotations

import sqlalchemy as sa

#: the metadata of every ferry table (Alembic's ``target_metadata``)
METADATA = sa.MetaData()


# One live migration: the user's truth (TaskFlow's logbook is the engine's).
MIGRATIONS = sa.Table(
    "ferry_migrations",
    METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("instance_uuid", sa.String(64), index=True, nullable=False),
    sa.Column("instance_name", sa.String(255)),
    sa.Column("source", sa.String(255), index=True),
    sa.Column("destination", sa.String(255), index=True),
    sa.Column("requested_destination", sa.String(255)),
    sa.Column("block_migration", sa.Boolean),
    sa.Column("status", sa.String(32), index=True, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("progress", sa.JSON, default=dict, nullable=False),
    sa.Column("leftovers", sa.JSON, default=list, nullable=False),
    sa.Column("request", sa.JSON, default=dict, nullable=False),
    sa.Column("abort_requested", sa.Boolean, default=False, nullable=False),
    sa.Column(
        "force_complete_requested",
        sa.Boolean,
        default=False,
        server_default=sa.false(),
        nullable=False,
    ),
    # when the transfer was (last) started; None = never (a resumed run then starts it)
    sa.Column("transfer_started_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# Status history: one row per status change, with its time.
MIGRATION_EVENTS = sa.Table(
    "ferry_migration_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "migration_id",
        sa.ForeignKey("ferry_migrations.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    ),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)


# A destination tried for a migration, with the outcome and the reason.
#
# TaskFlow wipes a retry controller's history when it reverts; this table keeps it.
ATTEMPTS = sa.Table(
    "ferry_migration_attempts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "migration_id",
        sa.ForeignKey("ferry_migrations.id", ondelete="CASCADE"),
        index=True,
        nullable=False,
    ),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # chosen | rejected | used
    sa.Column("reason", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
    sa.UniqueConstraint("migration_id", "host", name="uq_attempt_host"),
)


# At most one migration per instance at a time.
INSTANCE_LOCKS = sa.Table(
    "ferry_instance_locks",
    METADATA,
    sa.Column("instance_uuid", sa.String(64), primary_key=True),
    sa.Column("migration_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


# Cached host capacity/usage plus the resources claimed by migrations in flight.
#
# Claims are taken with one conditional UPDATE of the ``claimed_*`` columns, so two
# concurrent claims can never both fit into the same free space.
HOST_STATES = sa.Table(
    "ferry_host_states",
    METADATA,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("driver", sa.String(32), nullable=False),
    sa.Column("hypervisor_type", sa.String(64), nullable=False),
    sa.Column("hypervisor_version", sa.BigInteger, nullable=False),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("disk_gb", sa.BigInteger, nullable=False),
    sa.Column("vcpus_used", sa.Integer, default=0, nullable=False),
    sa.Column("memory_mb_used", sa.BigInteger, default=0, nullable=False),
    sa.Column("disk_gb_used", sa.BigInteger, default=0, nullable=False),
    sa.Column("claimed_vcpus", sa.Integer, default=0, nullable=False),
    sa.Column("claimed_memory_mb", sa.BigInteger, default=0, nullable=False),
    sa.Column("claimed_disk_gb", sa.BigInteger, default=0, nullable=False),
    sa.Column("up", sa.Boolean, default=True, nullable=False),
    sa.Column("enabled", sa.Boolean, default=True, nullable=False),
    sa.Column("storage_group", sa.String(255)),
    # why the driver reported the host down (None when up)
    sa.Column("down_reason", sa.String(1024)),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the host's labels as its driver reports them (the NUMA state is in ferry_host_numa_cells)
    sa.Column("labels", sa.JSON),
    # the host aggregates it belongs to, as ",a,b," (from its labels ``group`` / ``groups``)
    sa.Column("groups", sa.String(1024), default=",", server_default=",", nullable=False),
    # when ferry last changed the usage itself (a claim turned into usage, a source released):
    # a driver report read before that no longer overwrites the usage
    sa.Column("accounted_at", sa.Float, default=0.0, server_default="0", nullable=False),
)


# One NUMA cell of a cached host: its pCPUs and memory, what guests pin / use in it (the
# driver's report, then ferry's accounting) and what migrations in flight claimed in it.
#
# Free pCPUs = ``n_cpus - n_pinned - claimed_pcpus``; free MiB = ``memory_mb - used_mb -
# claimed_mb`` (the scheduler filters on these in SQL).
HOST_NUMA_CELLS = sa.Table(
    "ferry_host_numa_cells",
    METADATA,
    sa.Column(
        "host", sa.ForeignKey("ferry_host_states.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("cell", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("cpus", sa.JSON, nullable=False),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("pinned", sa.JSON, nullable=False),
    sa.Column("n_cpus", sa.Integer, nullable=False),
    sa.Column("n_pinned", sa.Integer, nullable=False),
    sa.Column("used_mb", sa.BigInteger, nullable=False),
    sa.Column("claimed_pcpus", sa.Integer, default=0, nullable=False),
    sa.Column("claimed_mb", sa.BigInteger, default=0, nullable=False),
)


# Resources held by one migration: on its destination (``kind = "destination"``: released
# on revert, turned into usage on completion) and on its source (``kind = "source"``: the
# instance's usage there, released only after post-migration at the source).
CLAIMS = sa.Table(
    "ferry_claims",
    METADATA,
    sa.Column("migration_id", sa.String(36), primary_key=True),
    sa.Column("host", sa.ForeignKey("ferry_host_states.name"), primary_key=True),
    sa.Column("instance_uuid", sa.String(64), nullable=False),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("disk_gb", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column(
        "kind", sa.String(16), default="destination", server_default="destination", nullable=False
    ),
    # the NUMA cell and pinning (``Pinning.to_dict()``) of a pinned guest
    sa.Column("numa_cell", sa.Integer),
    sa.Column("pinning", sa.JSON),
    sa.Index("ix_ferry_claims_host", "host"),
)


# A pCPU of a host claimed by a migration in flight. The primary key makes two claims of
# the same pCPU impossible, whatever the isolation level or the number of processes.
PCPU_CLAIMS = sa.Table(
    "ferry_pcpu_claims",
    METADATA,
    sa.Column(
        "host", sa.ForeignKey("ferry_host_states.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("pcpu", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("migration_id", sa.String(36), index=True, nullable=False),
    sa.Column("cell", sa.Integer, nullable=False),
    sa.Column("vcpu", sa.Integer, nullable=False),
)


# Who runs a migration now. A live lease refuses a second runner; an expired one can be
# taken over.
LEASES = sa.Table(
    "ferry_leases",
    METADATA,
    sa.Column("migration_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


# A bearer token of ``ferry serve``: its public id, role and a salted hash of its secret
# (the token itself is shown once, at creation, and stored nowhere).
API_TOKENS = sa.Table(
    "ferry_api_tokens",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), unique=True, nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)


# A drain: one host emptied by live migrations (see :mod:`ferry.model.drain`).
DRAINS = sa.Table(
    "ferry_drains",
    METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("host", sa.String(255), index=True, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("options", sa.JSON, default=dict, nullable=False),
    sa.Column("status", sa.String(32), index=True, nullable=False),
    sa.Column("abort_requested", sa.Boolean, default=False, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)


# A guest of a drain: its state, its migration (an ordinary record) and destination.
DRAIN_GUESTS = sa.Table(
    "ferry_drain_guests",
    METADATA,
    sa.Column("drain_id", sa.ForeignKey("ferry_drains.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("instance_uuid", sa.String(64), primary_key=True),
    sa.Column("instance_name", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("migration_id", sa.String(36), index=True),
    sa.Column("destination", sa.String(255)),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# A host disabled for scheduling, by a drain (``drain_id``) or an operator (``drain_id`` None),
# until it is enabled again (``undrain`` / ``enable_host``); one row per host.
HOST_MAINTENANCE = sa.Table(
    "ferry_host_maintenance",
    METADATA,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("drain_id", sa.String(36)),
    sa.Column("reason", sa.Text),
    sa.Column("since", sa.Float, nullable=False),
)
