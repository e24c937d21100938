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
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from taskflow import engines, states
from taskflow import exceptions as tf_exc
from taskflow.persistence import models as tf_models
from taskflow.types import notifier

from ferry import errors
from ferry.clock import Clock, SystemClock
from ferry.config import Settings, load_settings
from ferry.context import Callback, Context, Event, EventBus
from ferry.drivers.base import Driver
from ferry.drivers.registry import DriverRegistry
from ferry.flows import constants as c
from ferry.flows.live_migration import get_live_migration_flow
from ferry.model import Instance, Migration, MigrationRequest, MigrationStatus, PhaseState
from ferry.persistence.db import Database, default_database_url
from ferry.persistence.repository import LeaseRepository, MigrationRepository
from ferry.persistence.taskflow_backend import FerryBackend
from ferry.scheduler.repository import ClaimRepository
from ferry.tasks.base import primary_failure
from ferry.tasks.scheduling import validate_placement
from ferry.tasks.validate import validate_request

LOG = logging.getLogger(__name__)
STORE_META_KEY = "ferry_store"
_PHASE_EVENTS = {
    states.RUNNING: "phase_started",
    states.SUCCESS: "phase_done",
    states.FAILURE: "phase_failed",
    states.REVERTED: "phase_reverted",
}


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


class _Heartbeat(threading.Thread):
    """Keeps this runner's lease alive; suspends the engine if the lease is lost."""

    def __init__(self, leases: LeaseRepository, migration_id: str, owner: str, ttl: float) -> None:
        super().__init__(name=f"ferry-lease-{migration_id[:8]}", daemon=True)
        self.leases, self.migration_id, self.owner, self.ttl = leases, migration_id, owner, ttl
        self.engine: Any = None
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.ttl / 3):
            try:
                ok = self.leases.renew(self.migration_id, self.owner, self.ttl)
            except Exception:
                LOG.exception("migration %s: lease renewal failed", self.migration_id)
                continue
            if not ok:
                LOG.error("migration %s: lease lost; stopping this runner", self.migration_id)
                self.lost = True
                if self.engine is not None:
                    self.engine.suspend()
                return

    def stop(self) -> None:
        self._stop_event.set()


class _StorageLock:
    """The lock of a run's TaskFlow storage: one re-entrant lock for readers and writers.

    TaskFlow guards every storage call with fasteners' pure-Python reader-writer lock (a
    condition variable, a generator context manager and a thread lookup per call; about 650 per
    migration). One engine thread does nearly all of those calls, so readers gain nothing from
    sharing and an ``RLock`` is as safe (more exclusive) at a fraction of the cost. TaskFlow
    only uses the lock as ``with lock.read_lock():`` / ``with lock.write_lock():``.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def read_lock(self) -> Any:
        return self._lock

    def write_lock(self) -> Any:
        return self._lock


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
        if clock is None:
            clock = next(
                (d.clock for d in self.drivers.drivers if hasattr(d, "clock")), SystemClock()
            )
        self.clock: Clock = clock
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
        self.leases = LeaseRepository(self.db)
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
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="ferry-run")
        self._handles: dict[str, MigrationHandle] = {}
        self._local = threading.local()
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self._jobstore: Any = None
        # the job store's concurrency slots are held until the record is terminal, whichever
        # process makes it so (a conductor, or `ferry abort` reverting a queued job)
        self.migrations.on_status(self._release_job_slots)

    # ------------------------------------------------------------------ queries
    def subscribe(self, callback: Callback) -> Any:
        """Call ``callback(event)`` for phase, progress and status events; returns unsubscribe."""
        return self.events.subscribe(callback)

    def hosts(self) -> builtins.list[dict[str, Any]]:
        """Every host with capacity, usage, what migrations in flight have claimed on it, how
        many migrations are in flight into or out of it, its host groups and its NUMA cells (free
        pCPUs and memory per cell). The host state cache is refreshed from the drivers first;
        hosts with migrations in flight show ferry's accounting."""
        self.refresh_host_states()
        return [
            s.to_dict() for s in self.claims.host_states() if self.drivers.has_host(s.host.name)
        ]

    def refresh_host_states(self) -> None:
        """Refresh the scheduler's host state cache from every driver now."""
        from ferry.tasks.scheduling import refresh_host_states

        refresh_host_states(self.context, force=True)

    def instances(self) -> builtins.list[Instance]:
        return self.drivers.list_instances()

    def get(self, migration_id: str) -> Migration:
        """The migration record with its phases (state, seconds, error) from the logbook."""
        record = self.migrations.get(migration_id)
        record.phases = self._phases(migration_id)
        return record

    def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Migration]:
        if status is not None and status not in {s.value for s in MigrationStatus}:
            raise errors.ConfigError(
                f"unknown status {status!r}; one of {', '.join(s.value for s in MigrationStatus)}"
            )
        return self.migrations.list(status=status, limit=limit)

    def _phases(self, migration_id: str) -> builtins.list[PhaseState]:
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                atoms = {ad.name: ad for ad in conn.get_atoms_for_flow(migration_id)}
        except tf_exc.StorageFailure:
            return []
        phases = []
        for name in c.ALL_ATOMS:
            ad = atoms.get(name)
            if ad is None:
                continue
            ts = (ad.meta or {}).get("timestamps", {})
            start = ts.get(states.RUNNING)
            end = ts.get(states.SUCCESS) or ts.get(states.FAILURE)
            seconds = round(end - start, 3) if start and end and end >= start else None
            error = ad.failure.exception_str if ad.failure is not None else None
            phases.append(
                PhaseState(
                    name=name, state=ad.state or states.PENDING, seconds=seconds, error=error
                )
            )
        return phases

    # ---------------------------------------------------------------- migrate
    def live_migrate(
        self,
        instance: str,
        destination: str | None = None,
        block_migration: bool | None = None,
        wait: bool = True,
        *,
        max_attempts: int | None = None,
        overrides: dict[str, Any] | None = None,
        to_group: str | None = None,
        not_with: Iterable[str] | None = None,
    ) -> Any:
        """Live-migrate ``instance`` (name or UUID) to ``destination`` (None = the scheduler picks).

        ``to_group``: the scheduler picks a host of that host group only; ``not_with``: names or
        UUIDs of instances the instance must not share a host with.

        Bad requests raise at once and change nothing: InstanceNotFound, InstanceInvalidState,
        HostNotFound, ComputeHostUnavailable, UnableToMigrateToSelf, MigrationInProgress,
        ConfigError. With ``wait=True`` returns the completed :class:`Migration` or raises the
        migration's typed error (NoValidHost, MigrationPreCheckError, MigrationCancelled,
        MigrationFailed), whose ``migration`` attribute holds the record. With ``wait=False``
        returns a :class:`MigrationHandle` at once; the run goes on in a background thread.
        """
        migration_id = self.create(
            instance,
            destination,
            block_migration,
            max_attempts=max_attempts,
            overrides=overrides,
            to_group=to_group,
            not_with=not_with,
        )
        if wait:
            return self._run(migration_id)
        return self._background(migration_id)

    def create(
        self,
        instance: str,
        destination: str | None = None,
        block_migration: bool | None = None,
        *,
        max_attempts: int | None = None,
        overrides: dict[str, Any] | None = None,
        status: MigrationStatus = MigrationStatus.ACCEPTED,
        to_group: str | None = None,
        not_with: Iterable[str] | None = None,
    ) -> str:
        """Validate the request, create the record, the instance lock and the logbook; run nothing.

        Returns the migration id (a runner such as :meth:`resume` or a conductor runs it).
        """
        policy = self.settings.migration.with_overrides(overrides)
        if max_attempts is not None:
            if max_attempts < 0:
                raise errors.ConfigError("max_attempts must be >= 0")
            policy = dataclasses.replace(policy, max_attempts=max_attempts)
        request = MigrationRequest(
            instance=instance,
            destination=destination,
            block_migration=block_migration,
            max_attempts=max_attempts,
            overrides=dict(overrides or {}),
            to_group=to_group,
            not_with=[str(v) for v in not_with or ()],
        )
        inst = self.drivers.find_instance(instance)
        validate_request(self.context, inst, request)
        validate_placement(self.context, inst, request)
        migration_id = str(uuid.uuid4())
        self.migrations.create(migration_id, inst, request.to_dict(), status=status)
        try:
            self._save_logbook(migration_id, request.to_dict(), dataclasses.asdict(policy))
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
    def submit(
        self,
        instance: str,
        destination: str | None = None,
        block_migration: bool | None = None,
        *,
        max_attempts: int | None = None,
        overrides: dict[str, Any] | None = None,
        to_group: str | None = None,
        not_with: Iterable[str] | None = None,
    ) -> str:
        """Create the migration (status ``queued``) and post it as a job to the configured job
        board (``[jobboard] url``); a conductor runs it. Returns the migration id at once.

        Bad requests raise like :meth:`create` and change nothing; so does a board that cannot
        be reached (:class:`~ferry.errors.JobBoardUnavailable`, checked before anything is made).
        """
        store = self.jobstore
        store.board  # noqa: B018 - connect first: an unreachable board changes nothing
        migration_id = self.create(
            instance,
            destination,
            block_migration,
            max_attempts=max_attempts,
            overrides=overrides,
            status=MigrationStatus.QUEUED,
            to_group=to_group,
            not_with=not_with,
        )
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
    def jobstore(self) -> Any:
        """The job board of ``[jobboard]`` (a :class:`ferry.jobs.store.JobStore`; it connects on
        first use)."""
        if self._jobstore is None:
            from ferry.jobs.store import JobStore

            self._jobstore = JobStore(self)
        return self._jobstore

    def _release_job_slots(self, migration_id: str, status: str, _detail: str | None) -> None:
        if MigrationStatus(status).terminal:
            from ferry.jobs.limits import SlotRepository

            SlotRepository(self.db, self.settings.limits).release(migration_id)

    def _save_logbook(
        self, migration_id: str, request: dict[str, Any], policy: dict[str, Any]
    ) -> None:
        book = tf_models.LogBook(f"migration-{migration_id}", uuid=migration_id)
        fd = tf_models.FlowDetail(c.FLOW_NAME, uuid=migration_id)
        fd.meta = {
            STORE_META_KEY: {c.MIGRATION_ID: migration_id, c.REQUEST: request, c.SETTINGS: policy}
        }
        book.add(fd)
        engines.save_factory_details(fd, get_live_migration_flow, [], {}, backend=None)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)

    # ----------------------------------------------------------------- resume
    def resume(self, migration_id: str, wait: bool = True) -> Any:
        """Continue a run left behind (a crashed process, or one created without running).

        Raises MigrationInProgress while another runner's lease is live. A finished migration is
        returned as it is.
        """
        record = self.migrations.get(migration_id)
        if record.done and self._flow_state(migration_id) in (
            states.SUCCESS,
            states.REVERTED,
            None,
        ):
            return record if wait else self._finished_handle(record)
        if wait:
            return self._run(migration_id)
        return self._background(migration_id)

    def _flow_state(self, migration_id: str) -> str | None:
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                return str(conn.get_flow_details(migration_id, lazy=True).state or states.PENDING)
        except tf_exc.NotFound:
            return None

    def _finished_handle(self, record: Migration) -> MigrationHandle:
        fut: concurrent.futures.Future[Migration] = concurrent.futures.Future()
        fut.set_result(record)
        return MigrationHandle(self, record.id, fut)

    def abort(self, migration_id: str) -> Migration:
        """Ask the migration to stop and revert (the VM stays on the source).

        Works from any process: the runner notices within one poll. A migration nobody is running
        is reverted here and now. Raises AbortTooLate after the switchover.
        """
        record = self.migrations.get(migration_id)
        if record.done:
            if record.status == MigrationStatus.CANCELLED:
                return record
            raise errors.AbortTooLate(migration_id, record.status)
        if record.status == MigrationStatus.POST_MIGRATING:
            raise errors.AbortTooLate(migration_id, "past the switchover")
        self.migrations.request_abort(migration_id)
        if getattr(self._local, "busy", False):
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
        return record

    def force_complete(self, migration_id: str) -> Migration:
        """Ask the transfer in flight to finish now: post-copy when the migration's policy
        permits it, else the guest is paused for the rest (Nova's
        ``live_migration_force_complete``).

        Works from any process: the runner's monitor acts within one poll. Raises
        :class:`~ferry.errors.InvalidMigrationState` unless the migration is transferring.
        """
        record = self.migrations.get(migration_id)
        if record.status not in (MigrationStatus.RUNNING, MigrationStatus.PREPARING):
            raise errors.InvalidMigrationState(migration_id, record.status, "force-complete")
        self.migrations.request_force_complete(migration_id)
        return self.get(migration_id)

    # ------------------------------------------------------------------ runner
    def _background(self, migration_id: str) -> MigrationHandle:
        future = self._pool.submit(self._run, migration_id)
        handle = MigrationHandle(self, migration_id, future)
        self._handles[migration_id] = handle
        future.add_done_callback(lambda _f: self._handles.pop(migration_id, None))
        return handle

    def _run(self, migration_id: str) -> Migration:
        ttl = self.settings.runner.lease_seconds
        with self._running_lock:
            if migration_id in self._running:
                raise errors.MigrationInProgress(
                    f"migration {migration_id} is already being run by this process"
                )
        if not self._acquire_lease(migration_id, ttl):
            lease = self.leases.get(migration_id) or {}
            left = max(0.0, float(lease.get("expires_at", 0)) - time.time())
            raise errors.MigrationInProgress(
                f"migration {migration_id} is being run by {lease.get('owner', 'another runner')} "
                f"(its lease expires in {left:.0f} s unless renewed)"
            )
        heartbeat = _Heartbeat(self.leases, migration_id, self.owner, ttl)
        failure: BaseException | None = None
        outer_busy = getattr(self._local, "busy", False)
        with self._running_lock:
            self._running.add(migration_id)
        try:
            engine = self._load_engine(migration_id)
            heartbeat.engine = engine
            heartbeat.start()
            self._local.busy = True
            try:
                engine.run()
            except Exception as exc:
                failure = exc
            finally:
                self._local.busy = outer_busy
            if heartbeat.lost:
                raise errors.LeaseLost(
                    f"migration {migration_id}: this runner lost its lease; "
                    "another runner continues it"
                )
        finally:
            heartbeat.stop()
            with self._running_lock:
                self._running.discard(migration_id)
            self.leases.release(migration_id, self.owner)
        record = self.get(migration_id)
        return self._outcome(record, failure)

    def _flow(self, fd: Any) -> Any:
        """The flow of a saved run. Flows are immutable once built but their tasks carry
        notifiers the engine uses while running them, so each thread keeps its own copy."""
        factory = (fd.meta or {}).get("factory", {}).get("name", "")
        if not factory.endswith("get_live_migration_flow"):
            return engines.flow_from_detail(fd)
        if getattr(self._local, "busy", False):  # a run started from a callback of another run
            return get_live_migration_flow()
        flow = getattr(self._local, "flow", None)
        if flow is None:
            flow = self._local.flow = get_live_migration_flow()
        return flow

    def _share_compilation(self, engine: Any, flow: Any) -> None:
        """Engines of this thread's flow share one compiled graph: TaskFlow's PatternCompiler
        compiles once and freezes the graph, which engines only read (each keeps its own
        runtime), so recompiling it for every run only costs time (~2 ms a migration)."""
        if flow is not getattr(self._local, "flow", None) or not hasattr(engine, "_compiler"):
            return
        compiler = getattr(self._local, "compiler", None)
        if compiler is None:
            compiler = self._local.compiler = engine._compiler
        else:
            engine._compiler = compiler

    def _acquire_lease(self, migration_id: str, ttl: float) -> bool:
        if self.leases.acquire(migration_id, self.owner, ttl):
            return True
        # A runner of this machine that died (SIGKILL, power cut of the process) cannot renew its
        # lease; do not make the operator wait for the expiry when its process is provably gone.
        lease = self.leases.get(migration_id)
        if lease and runner_process_gone(lease["owner"]):
            LOG.warning(
                "migration %s: taking over from dead runner %s", migration_id, lease["owner"]
            )
            return self.leases.take_over(migration_id, lease["owner"], self.owner, ttl)
        return False

    def _load_engine(
        self, migration_id: str, *, backend: Any = None, context: Context | None = None
    ) -> Any:
        """The engine of a saved run. A conductor passes its fenced ``backend`` and a ``context``
        with its guarded clock (ferry.jobs.ownership); the defaults are this orchestrator's."""
        with contextlib.closing(self.backend.get_connection()) as conn:
            try:
                book = conn.get_logbook(migration_id)
            except tf_exc.NotFound:
                book = None
        if book is None or book.find(migration_id) is None:
            # crashed between the record and the logbook: rebuild the logbook from the record
            record = self.migrations.get(migration_id)
            request = self.migrations.field(migration_id, "request")
            policy = self.settings.migration.with_overrides(request.get("overrides"))
            if request.get("max_attempts") is not None:
                policy = dataclasses.replace(policy, max_attempts=int(request["max_attempts"]))
            self._save_logbook(record.id, request, dataclasses.asdict(policy))
            with contextlib.closing(self.backend.get_connection()) as conn:
                book = conn.get_logbook(migration_id)
        fd = book.find(migration_id)
        # The store's inputs are persisted once, in the flow detail's meta, when the run is
        # created; every load injects them (and the process-local resolver) transiently.
        store = dict(fd.meta.get(STORE_META_KEY, {}))
        flow = self._flow(fd)
        backend = backend or self.backend
        engine = engines.load(flow, flow_detail=fd, backend=backend, engine="serial")
        self._share_compilation(engine, flow)
        engine.storage._lock = _StorageLock()
        engine.storage.inject({**store, c.CONTEXT: context or self.context}, transient=True)

        def on_atom(state: str, details: dict[str, Any]) -> None:
            kind = _PHASE_EVENTS.get(state)
            if kind:
                phase = details.get("task_name") or details.get("retry_name")
                self.events.emit(Event(kind=kind, migration_id=migration_id, phase=phase))

        engine.atom_notifier.register(notifier.Notifier.ANY, on_atom)
        return engine

    def _outcome(self, record: Migration, failure: BaseException | None) -> Migration:
        """The completed record, or the migration's typed error (with ``.migration`` attached)."""
        if record.status == MigrationStatus.COMPLETED:
            return record
        exc = primary_exception(failure)
        error: errors.FerryError
        if record.status == MigrationStatus.CANCELLED:
            error = errors.MigrationCancelled(record.id)
        elif record.status == MigrationStatus.FAILED and isinstance(exc, errors.NoValidHost):
            error = exc
        elif record.status == MigrationStatus.FAILED and isinstance(
            exc, errors.MigrationPreCheckError
        ):
            if record.requested_destination:
                error = exc
            else:
                error = errors.NoValidHost(
                    {a.host: a.reason or "" for a in record.attempts if a.outcome == "rejected"}
                )
        else:
            error = errors.MigrationFailed(
                record.id, record.status, record.error or (str(exc) if exc else "")
            )
            error.__cause__ = exc
        error.migration = record
        raise error

    def close(self) -> None:
        if self._jobstore is not None:
            self._jobstore.close()
        self._pool.shutdown(wait=True)
        self.drivers.close()
        self.db.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runner_process_gone(owner: str) -> bool:
    """True when ``owner`` ("host:pid:token") names a process of this machine that is gone."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def primary_exception(exc: BaseException | None) -> BaseException | None:
    """The failure that explains a run: TaskFlow wraps several when more than one atom failed."""
    if isinstance(exc, tf_exc.WrappedFailure):
        failures = list(exc)
        chosen = primary_failure(failures)
        return chosen.exception if chosen is not None else exc
    return exc


__all__ = ["MigrationHandle", "Orchestrator"]
