"""The read side of ferry: migration records with their phases, hosts and instances.

:class:`ReadSide` answers the queries of :class:`~ferry.api.Orchestrator` (which delegates to
one) and of the read commands (``ferry list``, ``show``, ``hosts``, ``instances``), which open
one alone with :meth:`ReadSide.open`: the database, the repositories and the drivers, but no
runner, so no TaskFlow engine, flow graph (networkx) or TaskFlow SQL backend (Alembic) is
imported.
"""

from __future__ import annotations

import builtins
import functools
import os
from collections.abc import Callable
from typing import Any

from ferry import errors
from ferry.clock import Clock, SystemClock
from ferry.config import load_settings
from ferry.context import Context, EventBus, refresh_host_states
from ferry.drivers.registry import DriverRegistry
from ferry.model import Instance, Migration, MigrationStatus, PhaseState
from ferry.model.drain import Drain
from ferry.persistence.db import Database, default_database_url
from ferry.persistence.drains import DrainRepository
from ferry.persistence.repository import MigrationRepository
from ferry.runner.phases import read_phases
from ferry.scheduler.repository import ClaimRepository


def clock_of(drivers: DriverRegistry) -> Clock:
    """The clock of the drivers (the simulated cluster's), else the system clock."""
    return next((d.clock for d in drivers.drivers if hasattr(d, "clock")), SystemClock())


class ReadSide:
    """Queries over one context. ``phases``: how a migration's phases are read (default: from
    the logbook tables in the context's database)."""

    def __init__(
        self, context: Context, phases: Callable[[str], list[PhaseState]] | None = None
    ) -> None:
        self.context = context
        self.phases = phases or functools.partial(read_phases, context.db)
        self.drain_records = DrainRepository(context.db)

    @classmethod
    def open(
        cls, database_url: str | None = None, *, config: str | os.PathLike[str] | None = None
    ) -> ReadSide:
        """The read side of a database and the configured drivers (the schema is created or
        upgraded first, as for the Orchestrator)."""
        settings = load_settings(config)
        db = Database(database_url or settings.database_url or default_database_url())
        db.upgrade()
        drivers = DriverRegistry.from_settings(settings, db)
        context = Context(
            db=db,
            settings=settings,
            drivers=drivers,
            clock=clock_of(drivers),
            migrations=MigrationRepository(db),
            claims=ClaimRepository(db),
            events=EventBus(),
        )
        return cls(context)

    def hosts(self) -> builtins.list[dict[str, Any]]:
        """Every host with capacity, usage, what migrations in flight have claimed on it, how
        many migrations are in flight into or out of it, its host groups and its NUMA cells (free
        pCPUs and memory per cell). The host state cache is refreshed from the drivers first;
        hosts with migrations in flight show ferry's accounting."""
        self.refresh_host_states()
        drivers = self.context.drivers
        return [
            s.to_dict() for s in self.context.claims.host_states() if drivers.has_host(s.host.name)
        ]

    def refresh_host_states(self) -> None:
        """Refresh the scheduler's host state cache from every driver now."""
        refresh_host_states(self.context, force=True)

    def instances(self) -> builtins.list[Instance]:
        return self.context.drivers.list_instances()

    def get(self, migration_id: str) -> Migration:
        """The migration record with its phases (state, seconds, error) from the logbook."""
        record = self.context.migrations.get(migration_id)
        record.phases = self.phases(migration_id)
        return record

    def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Migration]:
        """Migrations, newest first (``status``: only those; ConfigError for an unknown one)."""
        if status is not None and status not in {s.value for s in MigrationStatus}:
            raise errors.ConfigError(
                f"unknown status {status!r}; one of {', '.join(s.value for s in MigrationStatus)}"
            )
        return self.context.migrations.list(status=status, limit=limit)

    def drains(self) -> builtins.list[Drain]:
        """Every drain, newest first, with its guests."""
        return self.drain_records.list()

    def get_drain(self, drain_id: str) -> Drain:
        """One drain with its guests (DrainNotFound if there is none)."""
        return self.drain_records.get(drain_id)

    def is_drain(self, record_id: str) -> bool:
        """Whether ``record_id`` names a drain (else it names a migration, or nothing)."""
        return self.drain_records.exists(record_id)

    def close(self) -> None:
        """Close the drivers and the database (only for a read side made by :meth:`open`)."""
        self.context.drivers.close()
        self.context.db.close()


__all__ = ["ReadSide", "clock_of"]
