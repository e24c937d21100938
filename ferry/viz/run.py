"""A migration run as it is stored: the record, the flow's state and every atom's persisted details.

Everything here is read from the database (ferry's tables and TaskFlow's logbook, whose logbook and
flow detail both carry the migration id as uuid); no hypervisor is ever contacted, so a run can be
inspected while it runs, after it finished, and after its runner died.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from taskflow import exceptions as tf_exc, states

from ferry.flows import constants as c
from ferry.model import Migration, PhaseState
from ferry.persistence import db as db_module
from ferry.persistence.db import Database
from ferry.persistence.drains import DrainRepository
from ferry.persistence.repository import LeaseRepository, MigrationRepository
from ferry.persistence.taskflow_backend import FerryBackend
from ferry.runner.lease import runner_process_gone

#: TaskFlow states that end an execution, and those that end a revert
EXECUTE_ENDS = (states.SUCCESS, states.FAILURE)
REVERT_ENDS = (states.REVERTED, states.REVERT_FAILURE)

#: what ``RunnerInfo.state`` can be
FINISHED, LIVE, INTERRUPTED, NOT_STARTED = "finished", "live", "interrupted", "not started"


@dataclass(frozen=True)
class Span:
    """One execution or revert of an atom, from the persisted state timestamps."""

    kind: str  # "execute" | "revert"
    start: float
    end: float | None  # None: not finished (still running, or its runner died)
    outcome: str  # the state that ended it (SUCCESS, FAILURE, REVERTED, ...) or the current one

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else round(self.end - self.start, 3)


@dataclass
class AtomView:
    """One task or retry controller of a run, as persisted by TaskFlow."""

    name: str
    kind: str  # "task" | "retry"
    state: str
    intention: str | None = None
    timestamps: dict[str, float] = field(default_factory=dict)
    progress: float | None = None
    error: str | None = None
    error_type: str | None = None
    tries: int | None = None  # retry controllers: how many times their subflow has been run

    @property
    def execute(self) -> Span | None:
        """The latest execution (TaskFlow keeps the last time an atom entered each state)."""
        start = self.timestamps.get(states.RUNNING)
        if start is None:
            return None
        ends = [(t, s) for s in EXECUTE_ENDS if (t := self.timestamps.get(s)) and t >= start]
        if ends:
            end, outcome = min(ends)
            return Span("execute", start, end, outcome)
        if self.state == states.RUNNING:
            return Span("execute", start, None, states.RUNNING)
        return None

    @property
    def revert(self) -> Span | None:
        """The latest revert: of this run of the atom, or of an earlier try (a reschedule)."""
        start = self.timestamps.get(states.REVERTING)
        if start is None:
            return None
        ends = [(t, s) for s in REVERT_ENDS if (t := self.timestamps.get(s)) and t >= start]
        if ends:
            end, outcome = min(ends)
            return Span("revert", start, end, outcome)
        if self.state == states.REVERTING:
            return Span("revert", start, None, states.REVERTING)
        return None

    @property
    def spans(self) -> list[Span]:
        return sorted((s for s in (self.execute, self.revert) if s), key=lambda s: s.start)

    @property
    def seconds(self) -> float | None:
        span = self.execute
        return span.seconds if span else None

    @property
    def done_fraction(self) -> float | None:
        """Progress in [0, 1]: TaskFlow's persisted progress; a finished execution counts 1."""
        if self.state == states.SUCCESS:
            return 1.0
        return self.progress

    @property
    def failed(self) -> bool:
        """The atom's latest execution failed (it may have been reverted since)."""
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        ex, rv = self.execute, self.revert
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "intention": self.intention,
            "started_at": ex.start if ex else None,
            "finished_at": ex.end if ex else None,
            "seconds": ex.seconds if ex else None,
            "revert_started_at": rv.start if rv else None,
            "reverted_at": rv.end if rv else None,
            "revert_seconds": rv.seconds if rv else None,
            "progress": self.done_fraction,
            "error": self.error,
            "error_type": self.error_type,
            "tries": self.tries,
            "timestamps": dict(self.timestamps),
        }


@dataclass
class RunnerInfo:
    """Who runs the migration now, from its lease (one runner per migration)."""

    state: str  # finished | live | interrupted | not started
    owner: str | None = None
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "owner": self.owner, "expires_at": self.expires_at}


@dataclass
class RunView:
    """A migration run read from the database at ``read_at``."""

    record: Migration
    flow_state: str | None
    atoms: dict[str, AtomView]
    runner: RunnerInfo
    read_at: float

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def started(self) -> bool:
        return any(states.RUNNING in a.timestamps for a in self.atoms.values())

    def first_time(self) -> float:
        """When the first atom started (the record's creation if none has)."""
        stamps = [
            t for a in self.atoms.values() for s, t in a.timestamps.items() if s != states.PENDING
        ]
        return min(stamps, default=self.record.created_at or self.read_at)

    def last_time(self) -> float:
        """The right edge of the run: now while a live runner drives it, else the last write."""
        if self.runner.state == LIVE:
            return self.read_at
        stamps = [t for a in self.atoms.values() for t in a.timestamps.values()]
        return max([*stamps, self.record.updated_at, self.first_time()])


@dataclass
class RunStore:
    """Read access to runs: TaskFlow's persistence backend plus ferry's record and lease tables.

    ``RunStore.of(orchestrator)`` shares an :class:`~ferry.api.Orchestrator`'s;
    ``RunStore.open(url)`` opens the database alone (no drivers, no hypervisor).
    """

    backend: Any
    migrations: MigrationRepository
    leases: LeaseRepository | None = None
    db: Database | None = None  # set when this store opened the database itself

    @classmethod
    def open(cls, database_url: str) -> RunStore:
        """Open the database for reading runs (the schema is created or upgraded first, as any
        ferry command does)."""
        db = Database(database_url)
        db.upgrade()
        if db.is_sqlite and sa.event.contains(db.engine, "begin", db_module._sqlite_on_begin):
            # a reader needs a consistent snapshot, not the write lock ferry's writers take up
            # front: deferred transactions never block a running migration's writes (WAL)
            sa.event.remove(db.engine, "begin", db_module._sqlite_on_begin)
            sa.event.listen(db.engine, "begin", _begin_deferred)
        return cls(FerryBackend(db), MigrationRepository(db), LeaseRepository(db), db)

    @classmethod
    def of(cls, source: Any) -> RunStore:
        """A store over an Orchestrator (anything with ``backend`` and ``migrations``)."""
        if isinstance(source, RunStore):
            return source
        return cls(source.backend, source.migrations, getattr(source, "leases", None))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def list(self, status: str | None = None, limit: int | None = None) -> list[Migration]:
        return self.migrations.list(status=status, limit=limit)

    @property
    def drains(self) -> DrainRepository:
        """The drains (host maintenance) of the same database."""
        return DrainRepository(self.migrations.db)

    def load(self, migration_id: str) -> RunView:
        """The run ``migration_id``; raises MigrationNotFound for an unknown id."""
        record = self.migrations.get(migration_id)
        flow_state, atoms = self._atoms(migration_id)
        record.phases = [
            PhaseState(name=a.name, state=a.state, seconds=a.seconds, error=a.error)
            for name in c.ALL_ATOMS
            if (a := atoms.get(name)) is not None
        ]
        now = time.time()
        view = RunView(record, flow_state, atoms, RunnerInfo(FINISHED), now)
        view.runner = self._runner(view, now)
        return view

    def _atoms(self, migration_id: str) -> tuple[str | None, dict[str, AtomView]]:
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                fd = conn.get_flow_details(migration_id, lazy=True)
                details = list(conn.get_atoms_for_flow(migration_id))
        except (tf_exc.NotFound, tf_exc.StorageFailure):
            return None, {}
        return str(fd.state or states.PENDING), {ad.name: atom_view(ad) for ad in details}

    def _runner(self, view: RunView, now: float) -> RunnerInfo:
        lease = self.leases.get(view.id) if self.leases is not None else None
        owner = lease["owner"] if lease else None
        expires = float(lease["expires_at"]) if lease else None
        if view.record.done:
            return RunnerInfo(FINISHED, owner, expires)
        if lease and expires is not None and expires > now and not owner_gone(owner or ""):
            return RunnerInfo(LIVE, owner, expires)
        return RunnerInfo(INTERRUPTED if view.started else NOT_STARTED, owner, expires)


def owner_gone(owner: str) -> bool:
    """True when a lease owner ("host:pid:token") is a process of this machine that is gone."""
    return runner_process_gone(owner)


def atom_view(ad: Any) -> AtomView:
    """An :class:`AtomView` of a TaskFlow atom detail (a TaskDetail or a RetryDetail)."""
    meta = ad.meta or {}
    failure = ad.failure
    kind = "retry" if type(ad).__name__ == "RetryDetail" else "task"
    progress = meta.get("progress")
    return AtomView(
        name=ad.name,
        kind=kind,
        state=str(ad.state or states.PENDING),
        intention=ad.intention,
        timestamps={str(k): float(v) for k, v in (meta.get("timestamps") or {}).items()},
        progress=float(progress) if isinstance(progress, int | float) else None,
        error=failure.exception_str if failure is not None else None,
        error_type=_error_type(failure),
        tries=len(ad.results or []) if kind == "retry" else None,
    )


def _error_type(failure: Any) -> str | None:
    """The failure's exception class ("ferry.errors.NoValidHost"), as persisted."""
    if failure is None:
        return None
    names = failure.to_dict().get("exc_type_names") or [None]
    return names[0]


def _begin_deferred(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")
