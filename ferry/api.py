"""The embedding API: :class:`Orchestrator`.

>>> from ferry import Orchestrator
>>> orch = Orchestrator()                      # SQLite + the simulated demo cluster
>>> migration = orch.live_migrate("web-1")     # waits; raises a typed error if it failed
>>> migration.status, migration.destination
('completed', 'node-3')
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from ferry import errors
from ferry.clock import Clock
from ferry.config import Settings, load_settings
from ferry.context import Callback, Context, Event, EventBus
from ferry.drain.service import DrainHandle, DrainOptions, DrainService
from ferry.drivers.base import Driver
from ferry.drivers.registry import DriverRegistry
from ferry.jobs.limits import SlotRepository
from ferry.jobs.store import JobStore
from ferry.model import Instance, Migration, MigrationRequest, MigrationStatus, as_request
from ferry.model.drain import Drain, PlanEntry
from ferry.persistence.db import Database, default_database_url
from ferry.persistence.repository import MigrationRepository
from ferry.persistence.taskflow_backend import FerryBackend
from ferry.readside import ReadSide, clock_of
from ferry.runner.runner import FINISHED_FLOW_STATES, Runner
from ferry.scheduler.repository import ClaimRepository
from ferry.tasks.scheduling import validate_placement
from ferry.tasks.validate import validate_request

LOG = logging.getLogger(__name__)


class MigrationHandle:
    """A migration running in a background thread (``live_migrate(..., wait=False)``)."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        migration_id: str,
        future: concurrent.futures.Future[Migration],
    ) -> None:
        self.id = migration_id
        self._orch = orchestrator
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Migration:
        """The final record; raises the migration's typed error like ``live_migrate(wait=True)``."""
        return self._future.result(timeout)

    @property
    def migration(self) -> Migration:
        """The record as it is now."""
        return self._orch.get(self.id)

    def abort(self) -> Migration:
        return self._orch.abort(self.id)

    def __repr__(self) -> str:
        return f"MigrationHandle({self.id!r}, done={self.done()})"


class Orchestrator:
    """Runs, resumes, aborts and reports live migrations.

    Build it from a config file (``Orchestrator(config="ferry.toml")``), from settings, or from
    arguments: a database URL and your own drivers (``drivers=[...]``), a clock, a callback for
    events (``on_event``) and, for experiments, another TaskFlow persistence backend. Without
    anything it uses ``$FERRY_DB``/``$FERRY_CONFIG`` or an SQLite file and the simulated demo
    cluster.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        drivers: Iterable[Driver] | DriverRegistry | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        on_event: Callback | None = None,
        taskflow_backend: Any = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings(config)
        self.db = Database(database_url or self.settings.database_url or default_database_url())
        self.db.upgrade()
        if isinstance(drivers, DriverRegistry):
            self.drivers = drivers
        elif drivers is not None:
            self.drivers = DriverRegistry(drivers)
        else:
            self.drivers = DriverRegistry.from_settings(self.settings, self.db)
        self.clock: Clock = clock if clock is not None else clock_of(self.drivers)
        self.events = EventBus()
        if on_event is not None:
            self.events.subscribe(on_event)
        self.migrations = MigrationRepository(self.db)
        self.migrations.on_status(
            lambda mid, status, detail: self.events.emit(
                Event(kind="status", migration_id=mid, status=status, detail=detail)
            )
        )
        self.claims = ClaimRepository(self.db)
        # TaskFlow persistence: ferry's fast durable backend on the same database by default; any
        # TaskFlow backend may be passed (the benchmarks compare the stock and in-memory ones)
        self.backend = taskflow_backend if taskflow_backend is not None else FerryBackend(self.db)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.context = Context(
            db=self.db,
            settings=self.settings,
            drivers=self.drivers,
            clock=self.clock,
            migrations=self.migrations,
            claims=self.claims,
            events=self.events,
        )
        #: the one way this orchestrator's migrations run (lease, engine, outcome)
        self.runner = Runner(self.context, self.backend, self.owner)
        self.leases = self.runner.leases
        #: the queries (records with their phases from this runner's logbooks, hosts, instances)
        self.reads = ReadSide(self.context, self.runner.logbooks.phases)
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="ferry-run")
        self._handles: dict[str, MigrationHandle] = {}
        #: host maintenance: plans, records and drives drains (their migrations are ordinary)
        self.drain_service = DrainService(
            self.runner, lambda request: self.create(request), lambda r: self.submit(r)
        )
        self._jobstore: JobStore | None = None
        # the job store's concurrency slots are held until the record is terminal, whichever
        # process makes it so (a conductor, or `ferry abort` reverting a queued job)
        self.migrations.on_status(self._release_job_slots)

    # ------------------------------------------------------------------ queries
    def subscribe(self, callback: Callback) -> Any:
        """Call ``callback(event)`` for phase, progress and status events; returns unsubscribe."""
        return self.events.subscribe(callback)

    def hosts(self) -> builtins.list[dict[str, Any]]:
        """Every host with capacity, usage, claims, migrations in flight, host groups and NUMA
        cells, the host state cache refreshed first (:meth:`ferry.readside.ReadSide.hosts`)."""
        return self.reads.hosts()

    def refresh_host_states(self) -> None:
        """Refresh the scheduler's host state cache from every driver now."""
        self.reads.refresh_host_states()

    def instances(self) -> builtins.list[Instance]:
        return self.reads.instances()

    def get(self, migration_id: str) -> Migration:
        """The migration record with its phases (state, seconds, error) from the logbook."""
        return self.reads.get(migration_id)

    def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Migration]:
        return self.reads.list(status=status, limit=limit)

    # ---------------------------------------------------------------- migrate
    def live_migrate(
        self,
        instance: str | MigrationRequest,
        destination: str | None = None,
        block_migration: bool | None = None,
        wait: bool = True,
        *,
        max_attempts: int | None = None,
        overrides: dict[str, Any] | None = None,
        to_group: str | None = None,
        not_with: Iterable[str] | None = None,
    ) -> Any:
        """Live-migrate an instance: a :class:`~ferry.model.MigrationRequest`, or the instance's
        name or UUID with the request's fields as arguments (``destination=None``: the scheduler
        picks; ``to_group``: a host of that host group only; ``not_with``: names or UUIDs of
        instances it must not share a host with).

        Bad requests raise at once and change nothing: InstanceNotFound, InstanceInvalidState,
        HostNotFound, ComputeHostUnavailable, UnableToMigrateToSelf, MigrationInProgress,
        ConfigError. With ``wait=True`` returns the completed :class:`Migration` or raises the
        migration's typed error (NoValidHost, MigrationPreCheckError, MigrationCancelled,
        MigrationFailed), whose ``migration`` attribute holds the record. With ``wait=False``
        returns a :class:`MigrationHandle` at once; the run goes on in a background thread.
        """
        request = as_request(
            instance,
            destination=destination,
            block_migration=block_migration,
            max_attempts=max_attempts,
            overrides=overrides,
            to_group=to_group,
            not_with=not_with,
        )
        migration_id = self.create(request)
        if wait:
            return self._run(migration_id)
        return self._background(migration_id)

    def create(
        self,
        request: str | MigrationRequest,
        *,
        status: MigrationStatus = MigrationStatus.ACCEPTED,
        **fields: Any,
    ) -> str:
        """Validate the request, create the record, the instance lock and the logbook; run nothing.

        ``request``: a :class:`~ferry.model.MigrationRequest`, or an instance name or UUID with
        the request's fields as keyword arguments. Returns the migration id (a runner such as
        :meth:`resume` or a conductor runs it).
        """
        request = as_request(request, **fields)
        self.runner.policy(request)  # bad overrides raise here, before anything is made
        inst = self.drivers.find_instance(request.instance)
        validate_request(self.context, inst, request)
        validate_placement(self.context, inst, request)
        migration_id = str(uuid.uuid4())
        self.migrations.create(migration_id, inst, request.to_dict(), status=status)
        try:
            self.runner.save(migration_id, request)
        except Exception:
            # the run cannot exist without its logbook: leave nothing half made
            self.migrations.set_status(
                migration_id,
                MigrationStatus.FAILED,
                detail="could not create the logbook",
                error="could not create the logbook",
            )
            self.migrations.release_lock(inst.uuid, migration_id)
            raise
        return migration_id

    # -------------------------------------------------------------- job store
    def submit(self, request: str | MigrationRequest, **fields: Any) -> str:
        """Create the migration (status ``queued``) and post it as a job to the configured job
        board (``[jobboard] url``); a conductor runs it. Returns the migration id at once.

        ``request`` as for :meth:`create`. Bad requests raise like :meth:`create` and change
        nothing; so does a board that cannot be reached
        (:class:`~ferry.errors.JobBoardUnavailable`, checked before anything is made).
        """
        store = self.jobstore
        store.board  # noqa: B018 - connect first: an unreachable board changes nothing
        migration_id = self.create(request, status=MigrationStatus.QUEUED, **fields)
        try:
            store.post(migration_id)
        except BaseException as exc:
            record = self.migrations.get(migration_id)
            error = f"could not post the job: {exc}"
            self.migrations.set_status(
                migration_id,
                MigrationStatus.FAILED,
                detail=error,
                error=error,
                unlock=record.instance,
            )
            raise
        return migration_id

    @property
    def jobstore(self) -> JobStore:
        """The job board of ``[jobboard]`` (it connects on first use)."""
        if self._jobstore is None:
            self._jobstore = JobStore(self.runner)
        return self._jobstore

    def _release_job_slots(self, migration_id: str, status: str, _detail: str | None) -> None:
        if MigrationStatus(status).terminal:
            SlotRepository(self.db, self.settings.limits).release(migration_id)

    # ------------------------------------------------------------------ drains
    def drain(self, host: str, *, wait: bool = True, **options: Any) -> Any:
        """Empty ``host`` with live migrations: it is disabled for scheduling in the
        transaction that records the drain; at most ``max_parallel`` migrations run at once
        (default: ``[limits] per_source``), within ``[limits]`` too. Options as for
        :meth:`create_drain`. Bad input raises at once and changes nothing
        (:mod:`ferry.drain.service`). ``wait=True``: returns the finished :class:`Drain`;
        ``wait=False``: a :class:`DrainHandle` at once. Progress events: kind ``drain``."""
        drain_id = self.create_drain(host, **options)
        if wait:
            return self.drain_service.run(drain_id)
        return DrainHandle(
            self.drain_service, drain_id, self._pool.submit(self.drain_service.run, drain_id)
        )

    def create_drain(
        self,
        host: str,
        *,
        max_parallel: int | None = None,
        to: str | None = None,
        to_group: str | None = None,
        order: str = "smallest",
        reason: str | None = None,
        submit: bool = False,
        not_together: Iterable[Iterable[str]] = (),
    ) -> str:
        """Plan and record a drain of ``host`` (the host disabled); run nothing (``resume``
        runs it). ``submit``: its migrations are posted to the job store and run by conductors
        (the board is reached first: JobBoardUnavailable changes nothing); ``not_together``:
        anti-affinity groups of guests (names or UUIDs) kept on different hosts."""
        if submit:
            self.jobstore.board  # noqa: B018 - connect first
        groups = tuple(tuple(g) for g in not_together)
        options = DrainOptions(host, max_parallel, to, to_group, order, reason, submit, groups)
        return self.drain_service.start(options)

    def plan_drain(
        self,
        host: str,
        *,
        max_parallel: int | None = None,
        to: str | None = None,
        to_group: str | None = None,
        order: str = "smallest",
        not_together: Iterable[Iterable[str]] = (),
    ) -> builtins.list[PlanEntry]:
        """The plan of draining ``host`` (each guest's destination, or why it is skipped);
        bad input raises as for :meth:`drain`; nothing is recorded or changed."""
        groups = tuple(tuple(g) for g in not_together)
        options = DrainOptions(host, max_parallel, to, to_group, order, not_together=groups)
        return self.drain_service.plan(options)

    def undrain(self, host: str) -> str | None:
        """Enable ``host`` for scheduling again; returns the drain that disabled it. Raises
        HostDraining while a drain of ``host`` is running. (The same as :meth:`enable_host`.)"""
        return self.drain_service.enable_host(host)

    def disable_host(self, host: str, reason: str | None = None) -> None:
        """Disable ``host`` for scheduling (the scheduler and the destination checks skip it)
        until :meth:`enable_host`; the same maintenance row a drain writes, without a drain.
        Raises HostNotFound, and HostDraining while a drain of ``host`` is running."""
        self.drain_service.disable_host(host, reason)

    def enable_host(self, host: str) -> str | None:
        """Enable ``host`` again, whoever disabled it; returns the drain that did (None: an
        operator, or nobody). Raises HostNotFound, and HostDraining while a drain of ``host``
        is running (abort the drain first)."""
        return self.drain_service.enable_host(host)

    def drains(self) -> builtins.list[Drain]:
        """Every drain, newest first."""
        return self.reads.drains()

    def get_drain(self, drain_id: str) -> Drain:
        """One drain with its guests (DrainNotFound if there is none)."""
        return self.reads.get_drain(drain_id)

    def is_drain(self, record_id: str) -> bool:
        """Whether ``record_id`` names a drain (else it names a migration, or nothing)."""
        return self.reads.is_drain(record_id)

    def abort_drain(self, drain_id: str) -> Drain:
        """Stop a drain: no new migrations, the ones in flight abort before their switchover,
        guests already moved stay moved; the drain ends ``cancelled``."""
        return self.drain_service.abort(drain_id)

    # ----------------------------------------------------------------- resume
    def resume(self, migration_id: str, wait: bool = True) -> Any:
        """Continue a run left behind (a crashed process, or one created without running); a
        drain's id continues the drain (its migrations in flight through their own resume).

        Raises MigrationInProgress while another runner's lease is live. A finished migration is
        returned as it is.
        """
        if self.is_drain(migration_id):
            return self.drain_service.run(migration_id)
        record = self.migrations.get(migration_id)
        if record.done and self.runner.flow_state(migration_id) in (*FINISHED_FLOW_STATES, None):
            return record if wait else self._finished_handle(record)
        if wait:
            return self._run(migration_id)
        return self._background(migration_id)

    def _finished_handle(self, record: Migration) -> MigrationHandle:
        fut: concurrent.futures.Future[Migration] = concurrent.futures.Future()
        fut.set_result(record)
        return MigrationHandle(self, record.id, fut)

    def abort(self, migration_id: str) -> Migration:
        """Ask the migration to stop and revert (the VM stays on the source).

        Works from any process: the runner notices within one poll. A migration nobody is running
        is reverted here and now. Aborting a cancelled migration is a no-op. Raises AbortTooLate
        after the switchover, for a finished migration, and when the migration completed or
        passed its switchover meanwhile (before its runner saw the request). (A drain's id: see
        :meth:`abort_drain`.)
        """
        record = self.migrations.get(migration_id)
        if record.done:
            if record.status == MigrationStatus.CANCELLED:
                return record
            raise errors.AbortTooLate(migration_id, f"already {record.status}")
        if record.status == MigrationStatus.POST_MIGRATING:
            raise errors.AbortTooLate(migration_id, "past the switchover")
        self.migrations.request_abort(migration_id)
        if self.runner.in_run:
            # called from an event callback of a run in this thread: its monitor sees the request
            return self.get(migration_id)
        handle = self._handles.get(migration_id)
        if handle is not None:
            with contextlib.suppress(errors.FerryError):
                handle.wait()
        else:
            # Nobody may be running it (a crashed runner, or never started): revert it here.
            # MigrationInProgress means a live runner has it and will see the request in one poll.
            with contextlib.suppress(errors.FerryError):
                self._run(migration_id)
        record = self.get(migration_id)
        if record.done and self.settings.jobboard.url:
            # a queued job reverted here: take it off the board (best effort; a conductor would
            # consume it unrun otherwise)
            try:
                self.jobstore.retire(migration_id)
            except Exception as exc:
                LOG.warning("migration %s: its job stays on the board: %s", migration_id, exc)
        if record.status == MigrationStatus.COMPLETED:
            raise errors.AbortTooLate(migration_id, "already completed")
        if record.status == MigrationStatus.POST_MIGRATING:
            raise errors.AbortTooLate(migration_id, "past the switchover")
        return record

    def force_complete(self, migration_id: str) -> Migration:
        """Ask the transfer in flight to finish now: post-copy when the migration's policy
        permits it, else the guest is paused for the rest (Nova's
        ``live_migration_force_complete``).

        Works from any process: the runner's monitor acts within one poll. Raises
        :class:`~ferry.errors.InvalidMigrationState` unless the migration is transferring.
        """
        if self.is_drain(migration_id):
            raise errors.ConfigError(
                f"{migration_id} is a drain: force-complete one of its migrations "
                f"(`ferry show {migration_id}` lists them)"
            )
        record = self.migrations.get(migration_id)
        if record.status not in (MigrationStatus.RUNNING, MigrationStatus.PREPARING):
            raise errors.InvalidMigrationState(migration_id, record.status, "force-complete")
        self.migrations.request_force_complete(migration_id)
        return self.get(migration_id)

    # ------------------------------------------------------------------ runs
    def _background(self, migration_id: str) -> MigrationHandle:
        future = self._pool.submit(self._run, migration_id)
        handle = MigrationHandle(self, migration_id, future)
        self._handles[migration_id] = handle
        future.add_done_callback(lambda _f: self._handles.pop(migration_id, None))
        return handle

    def _run(self, migration_id: str) -> Migration:
        return self.runner.outcome(self.runner.run(migration_id))

    def close(self) -> None:
        if self._jobstore is not None:
            self._jobstore.close()
        self._pool.shutdown(wait=True)
        self.runner.close()
        self.drivers.close()
        self.db.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DrainHandle", "MigrationHandle", "Orchestrator", "as_request"]
