""":class:`Runner`: the one way a migration runs.

The embedding API (``live_migrate``, ``wait=False`` threads, ``resume``, ``abort`` of a run
nobody drives), the CLI's ``--detach`` child and ``ferry resume``, and the job store's conductor
all run a migration through :meth:`Runner.run`:

1. the lease: taken under the one rule of :mod:`ferry.runner.lease` (a conductor takes its own,
   with the board claim, before), and renewed by the one :class:`~ferry.runner.lease.Heartbeat`
   of its lifetime;
2. the engine: loaded from the run's logbook (rebuilt from the record when a crash came between
   the record and the logbook), the store's inputs and the resolver injected, writes through the
   lease's backend and waits on its clock;
3. the run: the engine runs until the flow ends, the lease is lost, or the runner is asked to
   stop (then it suspends); TaskFlow re-runs the atom a crash interrupted, which reconciles with
   the hypervisor first;
4. the outcome: :meth:`Runner.outcome` turns the record the flow left into the completed record
   or its typed error (:mod:`ferry.outcome`).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc
from taskflow import exceptions as tf_exc, states
from taskflow.types import notifier

from ferry import errors
from ferry.context import Context, Event
from ferry.model import Migration, MigrationRequest
from ferry.outcome import outcome_error
from ferry.persistence.repository import LeaseRepository
from ferry.runner.engine import Logbooks, policy_for
from ferry.runner.lease import Heartbeat, Lease
from ferry.tasks.base import primary_failure

LOG = logging.getLogger(__name__)

#: flow states after which a run is over (a job is consumed, never run again)
FINISHED_FLOW_STATES = frozenset({states.SUCCESS, states.REVERTED, states.FAILURE})

_PHASE_EVENTS = {
    states.RUNNING: "phase_started",
    states.SUCCESS: "phase_done",
    states.FAILURE: "phase_failed",
    states.REVERTED: "phase_reverted",
}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How one :meth:`Runner.run` ended: the flow's persisted state, the exception the engine
    raised (a reverted flow raises its failure), and why the lease was lost, if it was."""

    migration_id: str
    flow_state: str | None
    failure: BaseException | None = None
    lost: str | None = None

    @property
    def finished(self) -> bool:
        return self.flow_state in FINISHED_FLOW_STATES


class Runner:
    """Runs migrations (see the module doc). One per process and database; thread-safe.

    :param context: the resolver handed to every task (database, settings, drivers, clock,
        repositories, events).
    :param backend: the TaskFlow persistence backend of the runs.
    :param owner: this process's name in the lease rows (``host:pid:token``).
    """

    def __init__(self, context: Context, backend: Any, owner: str) -> None:
        self.context = context
        self.db = context.db
        self.settings = context.settings
        self.migrations = context.migrations
        self.events = context.events
        self.backend = backend
        self.owner = owner
        self.leases = LeaseRepository(context.db)
        self.logbooks = Logbooks(backend)
        self._heartbeats: dict[float, Heartbeat] = {}
        self._heartbeats_lock = threading.Lock()
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self._local = threading.local()

    # ------------------------------------------------------------------ creating
    def policy(self, request: MigrationRequest) -> Any:
        """The migration policy of ``request`` (raises ConfigError for bad overrides)."""
        return policy_for(self.settings, request)

    def save(self, migration_id: str, request: MigrationRequest) -> None:
        """The run's logbook (its record exists); nothing runs."""
        self.logbooks.save(migration_id, request, self.policy(request))

    def flow_state(self, migration_id: str) -> str | None:
        return self.logbooks.flow_state(migration_id)

    @property
    def in_run(self) -> bool:
        """True inside a run of this thread (an event callback of a running migration)."""
        return bool(getattr(self._local, "busy", False))

    # ------------------------------------------------------------------- leases
    def lease(self, migration_id: str) -> Lease:
        """A lease of this process on ``migration_id`` (not taken yet)."""
        return Lease(self.leases, migration_id, self.owner, self.settings.runner.lease_seconds)

    def heartbeat(self, ttl: float) -> Heartbeat:
        """The heartbeat renewing the leases of lifetime ``ttl`` (started on first use)."""
        with self._heartbeats_lock:
            beat = self._heartbeats.get(ttl)
            if beat is None:
                beat = self._heartbeats[ttl] = Heartbeat(ttl)
                beat.start()
            return beat

    # ---------------------------------------------------------------------- run
    def load_engine(self, migration_id: str, lease: Lease) -> Any:
        """The engine of a saved run, writing through ``lease``'s backend and waiting on its
        clock; phase events go to the event bus."""
        fd = self.logbooks.find(migration_id)
        if fd is None:
            # crashed between the record and the logbook: rebuild the logbook from the record
            request = MigrationRequest.from_dict(self.migrations.field(migration_id, "request"))
            self.save(migration_id, request)
            fd = self.logbooks.find(migration_id)
        context = self.context
        clock = lease.clock(context.clock)
        if clock is not context.clock:
            context = dataclasses.replace(context, clock=clock)
        engine = self.logbooks.engine(
            fd, context, backend=lease.backend(self.backend), nested=self.in_run
        )

        def on_atom(state: str, details: dict[str, Any]) -> None:
            kind = _PHASE_EVENTS.get(state)
            if kind:
                phase = details.get("task_name") or details.get("retry_name")
                self.events.emit(Event(kind=kind, migration_id=migration_id, phase=phase))

        engine.atom_notifier.register(notifier.Notifier.ANY, on_atom)
        return engine

    def run(
        self,
        migration_id: str,
        lease: Lease | None = None,
        *,
        on_engine: Callable[[Any], None] | None = None,
    ) -> RunResult:
        """Run (or resume) the migration until its flow ends, its lease is lost or the runner
        is asked to stop (``lease.stopping``): then the engine suspends.

        ``lease``: a lease already taken (a conductor's); default: this process's, taken now.
        ``on_engine``: called with the loaded engine before it runs (extra notifications).
        Raises MigrationInProgress while another runner holds the migration.
        """
        with self._running_lock:
            if migration_id in self._running:
                raise errors.MigrationInProgress(
                    f"migration {migration_id} is already being run by this process"
                )
            self._running.add(migration_id)
        lease = lease if lease is not None else self.lease(migration_id)
        try:
            if not lease.leased and not lease.take():
                raise errors.MigrationInProgress(
                    f"migration {migration_id} is being run by {lease.holder()} "
                    f"(its lease expires in {lease.expires_in():.0f} s unless renewed)"
                )
            if lease.taken_from is not None:
                self._note(
                    migration_id,
                    f"resumed by {lease.owner}: its runner {lease.taken_from} had stopped",
                )
            heartbeat = self.heartbeat(lease.ttl)
            heartbeat.add(lease)
            try:
                failure = self._drive(migration_id, lease, on_engine)
            except (tf_exc.StorageFailure, sa_exc.SQLAlchemyError) as exc:
                failure = exc  # the engine could not even be loaded
            finally:
                heartbeat.remove(lease)
                try:
                    lease.end()
                except sa_exc.SQLAlchemyError as exc:
                    # the database refuses writes: the row stays until it expires or this
                    # process is gone (a resume then takes it over)
                    LOG.warning("migration %s: cannot release its lease: %s", migration_id, exc)
        finally:
            with self._running_lock:
                self._running.discard(migration_id)
        try:
            flow_state = self.flow_state(migration_id)
        except (tf_exc.StorageFailure, sa_exc.SQLAlchemyError) as exc:  # a locked database
            flow_state, failure = None, failure or exc
        return RunResult(migration_id, flow_state, failure, lease.lost_reason)

    def _drive(
        self, migration_id: str, lease: Lease, on_engine: Callable[[Any], None] | None
    ) -> BaseException | None:
        engine = self.load_engine(migration_id, lease)
        lease.engine = engine
        if on_engine is not None:
            on_engine(engine)
        if lease.lost:
            return None
        outer = self.in_run
        self._local.busy = True
        try:
            with lease.watch(engine):
                for _state in engine.run_iter():
                    if lease.stopping.is_set():
                        engine.suspend()
        except Exception as exc:  # the flow failed (reverted) or the engine could not go on
            return exc
        finally:
            self._local.busy = outer
        return None

    def outcome(self, result: RunResult) -> Migration:
        """The completed record, or the migration's typed error (``.migration`` attached);
        LeaseLost when another runner took the migration over."""
        if result.lost is not None:
            raise errors.LeaseLost(
                f"migration {result.migration_id}: this runner lost its lease "
                f"({result.lost}); another runner continues it"
            )
        refused = database_failure(result.failure) if not result.finished else None
        if refused is not None:
            stopped = errors.DatabaseUnavailable(result.migration_id, refused)
            LOG.error("%s", stopped)
            self._note(
                result.migration_id, f"run stopped: the database refused a write ({refused})"
            )
            stopped.migration = self._record_if_readable(result.migration_id)
            raise stopped
        record = self.migrations.get(result.migration_id)
        record.phases = self.logbooks.phases(result.migration_id)
        error = outcome_error(record, primary_exception(result.failure))
        if error is not None:
            raise error
        return record

    def _note(self, migration_id: str, detail: str) -> None:
        """Add ``detail`` to the status history, if the database takes it (else only logged)."""
        try:
            self.migrations.note(migration_id, detail)
        except sa_exc.SQLAlchemyError as exc:
            LOG.warning("migration %s: cannot record %r: %s", migration_id, detail, exc)

    def _record_if_readable(self, migration_id: str) -> Migration | None:
        try:
            return self.migrations.get(migration_id)
        except sa_exc.SQLAlchemyError:
            return None

    def close(self) -> None:
        with self._heartbeats_lock:
            for beat in self._heartbeats.values():
                beat.stop()
            self._heartbeats.clear()


def database_failure(exc: BaseException | None) -> str | None:
    """The database's own words when ``exc`` (or what caused it) is a refused write or a lost
    database connection (TaskFlow's StorageFailure, a DB-API error); None otherwise."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    found: BaseException | None = None
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, tf_exc.StorageFailure | sa_exc.DBAPIError | sqlite3.Error):
            found = found or cur
            inner = cur.orig if isinstance(cur, sa_exc.DBAPIError) else None
            if inner is not None or isinstance(cur, sqlite3.Error):
                found = inner or cur
                break
        if isinstance(cur, tf_exc.WrappedFailure):
            stack.extend(f.exception for f in cur)
        stack.extend([cur.__cause__, getattr(cur, "cause", None)])
    if found is None:
        return None
    return " ".join(str(found).split()) or type(found).__name__


def primary_exception(exc: BaseException | None) -> BaseException | None:
    """The failure that explains a run: TaskFlow wraps several when more than one atom failed."""
    if isinstance(exc, tf_exc.WrappedFailure):
        chosen = primary_failure(list(exc))
        return chosen.exception if chosen is not None else exc
    return exc
