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
    updated_at: Mapped[float] = mapped_column(sa.Float)


class ClaimRow(Base):
    """Resources held on a destination by one migration (released on revert/completion)."""

    __tablename__ = "ferry_claims"

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    host: Mapped[str] = mapped_column(sa.ForeignKey("ferry_host_states.name"), primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(64))
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger)
    disk_gb: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[float] = mapped_column(sa.Float)


class LeaseRow(Base):
    """Who runs a migration now. A live lease refuses a second runner; an expired one can be
    taken over."""

    __tablename__ = "ferry_leases"

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(255))
    acquired_at: Mapped[float] = mapped_column(sa.Float)
    heartbeat_at: Mapped[float] = mapped_column(sa.Float)
    expires_at: Mapped[float] = mapped_column(sa.Float)
