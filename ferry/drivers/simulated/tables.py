"""The simulated cluster's tables (on ferry's declarative ``Base``; Alembic revision
``0002_simulated`` creates them). All state of the simulated cluster lives here, so it survives a
SIGKILL and every process opening the same database sees the same cluster and transfers."""

from __future__ import annotations

import threading
import weakref
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from ferry.persistence.db import Database
from ferry.persistence.models import Base


class SimMetaRow(Base):
    """Singleton (``id = 1``): the cluster is seeded. Its primary key settles seeding races."""

    __tablename__ = "ferry_sim_meta"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    cluster_name: Mapped[str] = mapped_column(sa.String(255))
    cluster_file: Mapped[str | None] = mapped_column(sa.Text)
    builtin: Mapped[bool] = mapped_column(sa.Boolean)
    seeded_at: Mapped[float] = mapped_column(sa.Float)


class SimClockRow(Base):
    """Singleton (``id = 1``): simulated time = ``sim_epoch + (wall - wall_epoch) * speed``."""

    __tablename__ = "ferry_sim_clock"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    sim_epoch: Mapped[float] = mapped_column(sa.Float)
    wall_epoch: Mapped[float] = mapped_column(sa.Float)
    speed: Mapped[float] = mapped_column(sa.Float)


class SimHostRow(Base):
    """A simulated hypervisor host (usage is derived from the instances on it)."""

    __tablename__ = "ferry_sim_hosts"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    hypervisor_type: Mapped[str] = mapped_column(sa.String(64))
    hypervisor_version: Mapped[int] = mapped_column(sa.BigInteger)
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    disk_gb: Mapped[int] = mapped_column(sa.BigInteger)
    bandwidth_mbps: Mapped[float] = mapped_column(sa.Float)
    up: Mapped[bool] = mapped_column(sa.Boolean)
    enabled: Mapped[bool] = mapped_column(sa.Boolean)
    storage_group: Mapped[str | None] = mapped_column(sa.String(255))
    labels: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    #: NUMA cells ``[{"id", "cpus", "memory_mb"}]`` (None: the host models no NUMA topology)
    numa_cells: Mapped[list[Any] | None] = mapped_column(sa.JSON)


class SimInstanceRow(Base):
    """A simulated guest; ``host`` moves to the destination at the switchover."""

    __tablename__ = "ferry_sim_instances"

    uuid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    host: Mapped[str] = mapped_column(sa.ForeignKey("ferry_sim_hosts.name"), index=True)
    power_state: Mapped[str] = mapped_column(sa.String(32))
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    disk_gb: Mapped[int] = mapped_column(sa.BigInteger)
    dirty_rate_mbps: Mapped[float] = mapped_column(sa.Float)
    volumes: Mapped[list[Any]] = mapped_column(sa.JSON)
    vifs: Mapped[list[Any]] = mapped_column(sa.JSON)
    #: ``dedicated`` for a guest with pinned vCPUs (None: floating vCPUs)
    cpu_policy: Mapped[str | None] = mapped_column(sa.String(32))
    #: where a pinned guest's vCPUs are pinned now (``Pinning.to_dict()``)
    numa_pinning: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class SimFaultRow(Base):
    """An injected fault: fires ``times`` times (0 = always); ``fired`` counts the firings."""

    __tablename__ = "ferry_sim_faults"
    __table_args__ = (sa.Index("ix_ferry_sim_faults_host_phase", "host", "phase"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    phase: Mapped[str] = mapped_column(sa.String(32))
    times: Mapped[int] = mapped_column(sa.Integer)
    fired: Mapped[int] = mapped_column(sa.Integer)
    at: Mapped[float | None] = mapped_column(sa.Float)
    message: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[float] = mapped_column(sa.Float)


class SimCheckMarkerRow(Base):
    """Left on a destination by its live-migration check (removed by the check cleanup)."""

    __tablename__ = "ferry_sim_check_markers"

    instance_uuid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[float] = mapped_column(sa.Float)


class SimArtifactRow(Base):
    """Something an instance has on a host: ``guest``, ``instance_dir``, ``volume:<id>``,
    ``vif:<id>``. ``origin`` says who made it (``seed``, ``pre``, ``transfer``)."""

    __tablename__ = "ferry_sim_artifacts"

    host: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)
    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    origin: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[float] = mapped_column(sa.Float)


class SimTransferRow(Base):
    """One memory transfer. Its state is *computed* from these parameters at the clock's time;
    ``state`` is ``running`` until somebody observes the end, which then is materialised once.

    ``active_key`` holds the instance UUID while running (NULL afterwards): its unique
    constraint keeps at most one transfer per instance in flight, even across processes.
    """

    __tablename__ = "ferry_sim_transfers"
    __table_args__ = (sa.UniqueConstraint("active_key", name="uq_ferry_sim_transfers_active"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(64), index=True)
    active_key: Mapped[str | None] = mapped_column(sa.String(64))
    source: Mapped[str] = mapped_column(sa.String(255))
    destination: Mapped[str] = mapped_column(sa.String(255))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    started_at: Mapped[float] = mapped_column(sa.Float)
    ended_at: Mapped[float | None] = mapped_column(sa.Float)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    dirty_rate_mbps: Mapped[float] = mapped_column(sa.Float)
    bandwidth_mbps: Mapped[float] = mapped_column(sa.Float)
    downtime_history: Mapped[list[Any]] = mapped_column(sa.JSON)
    force_at: Mapped[float | None] = mapped_column(sa.Float)
    force_lever: Mapped[str | None] = mapped_column(sa.String(16))
    fail_at: Mapped[float | None] = mapped_column(sa.Float)
    fail_message: Mapped[str | None] = mapped_column(sa.Text)
    token: Mapped[str | None] = mapped_column(sa.String(64))
    policy: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    #: the pinning the transfer was handed (the guest's pinning on the destination)
    numa_pinning: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


META = cast(sa.Table, SimMetaRow.__table__)
CLOCK = cast(sa.Table, SimClockRow.__table__)
HOSTS = cast(sa.Table, SimHostRow.__table__)
INSTANCES = cast(sa.Table, SimInstanceRow.__table__)
FAULTS = cast(sa.Table, SimFaultRow.__table__)
MARKERS = cast(sa.Table, SimCheckMarkerRow.__table__)
ARTIFACTS = cast(sa.Table, SimArtifactRow.__table__)
TRANSFERS = cast(sa.Table, SimTransferRow.__table__)

#: the cluster's tables, children first (the order to wipe them in); the clock is not wiped
CLUSTER_TABLES = (TRANSFERS, ARTIFACTS, MARKERS, FAULTS, INSTANCES, HOSTS, META)

_ready: weakref.WeakSet[Database] = weakref.WeakSet()
_ready_lock = threading.Lock()


def ensure_schema(db: Database) -> None:
    """Make sure the simulated tables exist: ``db.upgrade()`` unless they are already there
    (created by an earlier upgrade, or by ``Base.metadata.create_all`` in a test). Cheap after the
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
            stmt: Any
            if dialect == "sqlite":
                stmt = sqlite.insert(table).values(**row).on_conflict_do_nothing()
            else:
                stmt = postgresql.insert(table).values(**row).on_conflict_do_nothing()
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
