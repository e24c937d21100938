"""The simulated cluster's tables (Core tables on ferry's ``METADATA``; Alembic revision
``0002_simulated`` creates them). All state of the simulated cluster lives here, so it survives a
SIGKILL and every process opening the same database sees the same cluster and transfers."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import sqlalchemy as sa

from ferry.persistence.db import Database, dialect_insert
from ferry.persistence.models import METADATA

# Singleton (``id = 1``): the cluster is seeded. Its primary key settles seeding races.
META = sa.Table(
    "ferry_sim_meta",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("cluster_name", sa.String(255), nullable=False),
    sa.Column("cluster_file", sa.Text),
    sa.Column("builtin", sa.Boolean, nullable=False),
    sa.Column("seeded_at", sa.Float, nullable=False),
)


# Singleton (``id = 1``): simulated time = ``sim_epoch + (wall - wall_epoch) * speed``.
CLOCK = sa.Table(
    "ferry_sim_clock",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sim_epoch", sa.Float, nullable=False),
    sa.Column("wall_epoch", sa.Float, nullable=False),
    sa.Column("speed", sa.Float, nullable=False),
)


# A simulated hypervisor host (usage is derived from the instances on it).
HOSTS = sa.Table(
    "ferry_sim_hosts",
    METADATA,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("hypervisor_type", sa.String(64), nullable=False),
    sa.Column("hypervisor_version", sa.BigInteger, nullable=False),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("disk_gb", sa.BigInteger, nullable=False),
    sa.Column("bandwidth_mbps", sa.Float, nullable=False),
    sa.Column("up", sa.Boolean, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("storage_group", sa.String(255)),
    sa.Column("labels", sa.JSON, nullable=False),
    # NUMA cells ``[{"id", "cpus", "memory_mb"}]`` (None: the host models no NUMA topology)
    sa.Column("numa_cells", sa.JSON),
)


# A simulated guest; ``host`` moves to the destination at the switchover.
INSTANCES = sa.Table(
    "ferry_sim_instances",
    METADATA,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), unique=True, nullable=False),
    sa.Column("host", sa.ForeignKey("ferry_sim_hosts.name"), index=True, nullable=False),
    sa.Column("power_state", sa.String(32), nullable=False),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("disk_gb", sa.BigInteger, nullable=False),
    sa.Column("dirty_rate_mbps", sa.Float, nullable=False),
    sa.Column("volumes", sa.JSON, nullable=False),
    sa.Column("vifs", sa.JSON, nullable=False),
    # ``dedicated`` for a guest with pinned vCPUs (None: floating vCPUs)
    sa.Column("cpu_policy", sa.String(32)),
    # where a pinned guest's vCPUs are pinned now (``Pinning.to_dict()``)
    sa.Column("numa_pinning", sa.JSON),
)


# An injected fault: fires ``times`` times (0 = always); ``fired`` counts the firings.
FAULTS = sa.Table(
    "ferry_sim_faults",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    sa.Column("times", sa.Integer, nullable=False),
    sa.Column("fired", sa.Integer, nullable=False),
    sa.Column("at", sa.Float),
    sa.Column("message", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_ferry_sim_faults_host_phase", "host", "phase"),
)


# Left on a destination by its live-migration check (removed by the check cleanup).
MARKERS = sa.Table(
    "ferry_sim_check_markers",
    METADATA,
    sa.Column("instance_uuid", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


# Something an instance has on a host: ``guest``, ``instance_dir``, ``volume:<id>``,
# ``vif:<id>``. ``origin`` says who made it (``seed``, ``pre``, ``transfer``).
ARTIFACTS = sa.Table(
    "ferry_sim_artifacts",
    METADATA,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("instance_uuid", sa.String(64), primary_key=True, index=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


# One memory transfer. Its state is *computed* from these parameters at the clock's time;
# ``state`` is ``running`` until somebody observes the end, which then is materialised once.
#
# ``active_key`` holds the instance UUID while running (NULL afterwards): its unique
# constraint keeps at most one transfer per instance in flight, even across processes.
TRANSFERS = sa.Table(
    "ferry_sim_transfers",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_uuid", sa.String(64), index=True, nullable=False),
    sa.Column("active_key", sa.String(64)),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("destination", sa.String(255), nullable=False),
    sa.Column("state", sa.String(16), index=True, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("memory_mb", sa.BigInteger, nullable=False),
    sa.Column("dirty_rate_mbps", sa.Float, nullable=False),
    sa.Column("bandwidth_mbps", sa.Float, nullable=False),
    sa.Column("downtime_history", sa.JSON, nullable=False),
    sa.Column("force_at", sa.Float),
    sa.Column("force_lever", sa.String(16)),
    sa.Column("fail_at", sa.Float),
    sa.Column("fail_message", sa.Text),
    sa.Column("token", sa.String(64)),
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON),
    # the pinning the transfer was handed (the guest's pinning on the destination)
    sa.Column("numa_pinning", sa.JSON),
    sa.UniqueConstraint("active_key", name="uq_ferry_sim_transfers_active"),
)


#: the cluster's tables, children first (the order to wipe them in); the clock is not wiped
CLUSTER_TABLES = (TRANSFERS, ARTIFACTS, MARKERS, FAULTS, INSTANCES, HOSTS, META)

_ready: weakref.WeakSet[Database] = weakref.WeakSet()
_ready_lock = threading.Lock()


def ensure_schema(db: Database) -> None:
    """Make sure the simulated tables exist: ``db.upgrade()`` unless they are already there
    (created by an earlier upgrade, or by ``METADATA.create_all`` in a test). Cheap after the
    first call for a given :class:`Database`."""
    if db in _ready:
        return
    with _ready_lock:
        if db in _ready:
            return
        if not sa.inspect(db.engine).has_table(TRANSFERS.name):
            db.upgrade()
        _ready.add(db)


def insert_ignore(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping those whose primary key already exists. Returns how many went in.

    One ``INSERT .. ON CONFLICT DO NOTHING`` per row on SQLite and PostgreSQL (a concurrent
    inserter of the same key never makes it fail); a savepoint per row elsewhere.
    """
    inserted = 0
    dialect = conn.dialect.name
    for row in rows:
        if dialect in ("sqlite", "postgresql"):
            stmt: Any = dialect_insert(dialect, table).values(**row).on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING
            stmt = stmt.returning(*table.primary_key.columns)
            inserted += len(conn.execute(stmt).all())
        else:  # pragma: no cover - ferry supports SQLite and PostgreSQL
            try:
                with conn.begin_nested():
                    conn.execute(table.insert().values(**row))
                inserted += 1
            except sa.exc.IntegrityError:
                pass
    return inserted
