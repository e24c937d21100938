"""ferry's own tables (SQLAlchemy 2 declarative). Schema changes go through Alembic
(``ferry/persistence/migrations``); TaskFlow's logbook tables live in the same database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


class MigrationRow(Base):
    """One live migration: the user's truth (TaskFlow's logbook is the engine's)."""

    __tablename__ = "ferry_migrations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(64), index=True)
    instance_name: Mapped[str | None] = mapped_column(sa.String(255))
    source: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    destination: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    requested_destination: Mapped[str | None] = mapped_column(sa.String(255))
    block_migration: Mapped[bool | None] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    progress: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    leftovers: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    request: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    abort_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    force_complete_requested: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    #: when the transfer was (last) started; None = never (a resumed run then starts it)
    transfer_started_at: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float)


class MigrationEventRow(Base):
    """Status history: one row per status change, with its time."""

    __tablename__ = "ferry_migration_events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("ferry_migrations.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(sa.String(32))
    detail: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[float] = mapped_column(sa.Float)


class AttemptRow(Base):
    """A destination tried for a migration, with the outcome and the reason.

    TaskFlow wipes a retry controller's history when it reverts; this table keeps it.
    """

    __tablename__ = "ferry_migration_attempts"
    __table_args__ = (sa.UniqueConstraint("migration_id", "host", name="uq_attempt_host"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(
        sa.ForeignKey("ferry_migrations.id", ondelete="CASCADE"), index=True
    )
    host: Mapped[str] = mapped_column(sa.String(255))
    outcome: Mapped[str] = mapped_column(sa.String(16))  # chosen | rejected | used
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[float] = mapped_column(sa.Float)


class InstanceLockRow(Base):
    """At most one migration per instance at a time."""

    __tablename__ = "ferry_instance_locks"

    instance_uuid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    migration_id: Mapped[str] = mapped_column(sa.String(36))
    created_at: Mapped[float] = mapped_column(sa.Float)


class HostStateRow(Base):
    """Cached host capacity/usage plus the resources claimed by migrations in flight.

    Claims are taken with one conditional UPDATE of the ``claimed_*`` columns, so two
    concurrent claims can never both fit into the same free space.
    """

    __tablename__ = "ferry_host_states"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    driver: Mapped[str] = mapped_column(sa.String(32))
    hypervisor_type: Mapped[str] = mapped_column(sa.String(64))
    hypervisor_version: Mapped[int] = mapped_column(sa.BigInteger)
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    disk_gb: Mapped[int] = mapped_column(sa.BigInteger)
    vcpus_used: Mapped[int] = mapped_column(sa.Integer, default=0)
    memory_mb_used: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    disk_gb_used: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    claimed_vcpus: Mapped[int] = mapped_column(sa.Integer, default=0)
    claimed_memory_mb: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    claimed_disk_gb: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    up: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    storage_group: Mapped[str | None] = mapped_column(sa.String(255))
    #: why the driver reported the host down (None when up)
    down_reason: Mapped[str | None] = mapped_column(sa.String(1024))
    updated_at: Mapped[float] = mapped_column(sa.Float)
    #: the host's labels as its driver reports them (the NUMA state is in ferry_host_numa_cells)
    labels: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    #: the host aggregates it belongs to, as ",a,b," (from its labels ``group`` / ``groups``)
    groups: Mapped[str] = mapped_column(sa.String(1024), default=",", server_default=",")
    #: when ferry last changed the usage itself (a claim turned into usage, a source released):
    #: a driver report read before that no longer overwrites the usage
    accounted_at: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")


class HostNumaCellRow(Base):
    """One NUMA cell of a cached host: its pCPUs and memory, what guests pin / use in it (the
    driver's report, then ferry's accounting) and what migrations in flight claimed in it.

    Free pCPUs = ``n_cpus - n_pinned - claimed_pcpus``; free MiB = ``memory_mb - used_mb -
    claimed_mb`` (the scheduler filters on these in SQL).
    """

    __tablename__ = "ferry_host_numa_cells"

    host: Mapped[str] = mapped_column(
        sa.ForeignKey("ferry_host_states.name", ondelete="CASCADE"), primary_key=True
    )
    cell: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    cpus: Mapped[list[Any]] = mapped_column(sa.JSON)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    pinned: Mapped[list[Any]] = mapped_column(sa.JSON)
    n_cpus: Mapped[int] = mapped_column(sa.Integer)
    n_pinned: Mapped[int] = mapped_column(sa.Integer)
    used_mb: Mapped[int] = mapped_column(sa.BigInteger)
    claimed_pcpus: Mapped[int] = mapped_column(sa.Integer, default=0)
    claimed_mb: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class ClaimRow(Base):
    """Resources held by one migration: on its destination (``kind = "destination"``: released
    on revert, turned into usage on completion) and on its source (``kind = "source"``: the
    instance's usage there, released only after post-migration at the source)."""

    __tablename__ = "ferry_claims"
    __table_args__ = (sa.Index("ix_ferry_claims_host", "host"),)

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    host: Mapped[str] = mapped_column(sa.ForeignKey("ferry_host_states.name"), primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(64))
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    disk_gb: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[float] = mapped_column(sa.Float)
    kind: Mapped[str] = mapped_column(
        sa.String(16), default="destination", server_default="destination"
    )
    #: the NUMA cell and pinning (``Pinning.to_dict()``) of a pinned guest
    numa_cell: Mapped[int | None] = mapped_column(sa.Integer)
    pinning: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class PcpuClaimRow(Base):
    """A pCPU of a host claimed by a migration in flight. The primary key makes two claims of
    the same pCPU impossible, whatever the isolation level or the number of processes."""

    __tablename__ = "ferry_pcpu_claims"

    host: Mapped[str] = mapped_column(
        sa.ForeignKey("ferry_host_states.name", ondelete="CASCADE"), primary_key=True
    )
    pcpu: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    migration_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    cell: Mapped[int] = mapped_column(sa.Integer)
    vcpu: Mapped[int] = mapped_column(sa.Integer)


class LeaseRow(Base):
    """Who runs a migration now. A live lease refuses a second runner; an expired one can be
    taken over."""

    __tablename__ = "ferry_leases"

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(255))
    acquired_at: Mapped[float] = mapped_column(sa.Float)
    heartbeat_at: Mapped[float] = mapped_column(sa.Float)
    expires_at: Mapped[float] = mapped_column(sa.Float)


class ApiTokenRow(Base):
    """A bearer token of ``ferry serve``: its public id, role and a salted hash of its secret
    (the token itself is shown once, at creation, and stored nowhere)."""

    __tablename__ = "ferry_api_tokens"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    role: Mapped[str] = mapped_column(sa.String(32))
    salt: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[float] = mapped_column(sa.Float)
    revoked_at: Mapped[float | None] = mapped_column(sa.Float)


class DrainRow(Base):
    """A drain: one host emptied by live migrations (see :mod:`ferry.model.drain`)."""

    __tablename__ = "ferry_drains"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255), index=True)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    abort_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float)
    finished_at: Mapped[float | None] = mapped_column(sa.Float)


class DrainGuestRow(Base):
    """A guest of a drain: its state, its migration (an ordinary record) and destination."""

    __tablename__ = "ferry_drain_guests"

    drain_id: Mapped[str] = mapped_column(
        sa.ForeignKey("ferry_drains.id", ondelete="CASCADE"), primary_key=True
    )
    instance_uuid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    instance_name: Mapped[str] = mapped_column(sa.String(255))
    position: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(32))
    migration_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    destination: Mapped[str | None] = mapped_column(sa.String(255))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[float] = mapped_column(sa.Float)


class HostMaintenanceRow(Base):
    """A host disabled for scheduling, by a drain (``drain_id``) or an operator (``drain_id``
    None), until it is enabled again (``undrain`` / ``enable_host``); one row per host."""

    __tablename__ = "ferry_host_maintenance"

    host: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    drain_id: Mapped[str | None] = mapped_column(sa.String(36))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    since: Mapped[float] = mapped_column(sa.Float)
