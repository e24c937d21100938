"""The conductor: TaskFlow's non-blocking conductor running migrations posted to the job board.

``ferry conductor`` builds one :class:`Conductor`: it claims jobs (oldest first, ``max_jobs`` at
once), runs each migration's flow from its logbook and consumes the job when the flow has ended
-- completed, failed or reverted alike, so a failed migration is never retried forever. A job is
given back to the board (abandoned), never consumed, when its run was suspended: the claim was
lost, the conductor is shutting down, or a concurrency limit is full.

For one dispatched job, in order:

1. the record and the flow: a migration already finished (by an abort run elsewhere, or by a
   conductor that died before consuming) is only consumed;
2. the concurrency limits: its slots (``total``, ``source:HOST`` and, once known,
   ``destination:HOST``) are taken atomically; a full limit leaves the record ``queued`` and the
   job on the board (see :mod:`ferry.jobs.limits`);
3. ownership: ferry's lease row is taken in the claim's name (from an expired or dead runner, or
   after a short wait when the previous owner's lease is about to expire), then renewed with the
   claim by the runner's heartbeat (see :mod:`ferry.jobs.ownership`);
4. the run: the runner (:class:`ferry.runner.Runner`, the one way any migration runs) loads the
   engine from the logbook with a fenced backend and a guarded clock; when the scheduler picks
   a destination whose limit is full, the engine is suspended right after ``schedule`` and the
   migration waits ``queued`` again, holding nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import sqlalchemy as sa
from taskflow.conductors.backends import impl_nonblocking

from ferry import errors
from ferry.metrics import COUNTERS, JOBS_CLAIMED, JOBS_TAKEN_OVER
from ferry.model import MigrationStatus
from ferry.persistence.repository import LS, M
from ferry.runner.lease import HandOff, OwnershipLost
from ferry.runner.runner import FINISHED_FLOW_STATES, Runner

from .board import for_conductor, open_board
from .limits import (
    WAITING_STATUSES,
    Blocked,
    SlotRepository,
    unsuspend,
    wait_queued,
    watch_destination,
)
from .ownership import Ownership
from .store import JobRepository, JobStore

LOG = logging.getLogger(__name__)

#: migrations one conductor runs at once at most (each holds a database connection while it
#: runs; ferry's pool has 8 + 16 overflow)
MAX_JOBS = 16
#: statuses of migrations not finished yet (an index scan, unlike NOT IN the terminal ones)
OPEN_STATUSES = tuple(s.value for s in MigrationStatus if not s.terminal)


def conductor_owner(name: str) -> str:
    """The owner name of a conductor's claims and leases: ``host:pid:name``."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}"


class _Snapshot:
    """What the claim filter needs, read at most once per scan: slot usage, who holds slots,
    and the unfinished migrations (source, destination, abort flag)."""

    def __init__(self, slots: SlotRepository, db: Any) -> None:
        self.usage = slots.usage()
        self.held = slots.held()
        with db.connect() as conn:
            rows = conn.execute(
                sa.select(M.c.id, M.c.source, M.c.destination, M.c.abort_requested).where(
                    M.c.status.in_(OPEN_STATUSES)
                )
            ).all()
        self.open = {r[0]: (r[1], r[2], bool(r[3])) for r in rows}
        self.taken = time.monotonic()


class _TaskFlowConductor(impl_nonblocking.NonBlockingConductor):
    """TaskFlow's non-blocking conductor with ferry's dispatch (see :class:`Conductor`)."""

    def __init__(self, ferry_conductor: Conductor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ferry = ferry_conductor

    def _dispatch_job(self, job: Any) -> bool:
        return self._ferry.dispatch(job)


class Conductor:
    """Runs posted migrations until :meth:`stop` (see the module doc).

    :param runner: the runner (database, drivers, settings) the runs go through.
    :param name: this conductor's name (``[conductor] name``, else the host name); its claims and
        leases are owned by ``host:pid:name``.
    :param max_jobs: migrations run at once (``[conductor] max_jobs``).
    :raises ConfigError: no or a bad job board configured. :raises JobBoardUnavailable:
    """

    def __init__(
        self,
        runner: Runner,
        *,
        name: str | None = None,
        max_jobs: int | None = None,
        lease_seconds: float | None = None,
        poll_interval: float | None = None,
    ) -> None:
        settings = runner.settings.conductor
        self.runner = runner
        self.name = name or settings.name or socket.gethostname()
        if any(ch in self.name for ch in ": \t\n"):
            raise errors.ConfigError(f"conductor name {self.name!r}: no ':' or blanks")
        self.owner = conductor_owner(self.name)
        self.max_jobs = int(max_jobs or settings.max_jobs)
        if not 1 <= self.max_jobs <= MAX_JOBS:
            raise errors.ConfigError(f"max_jobs must be between 1 and {MAX_JOBS}")
        self.ttl = float(lease_seconds or settings.lease_seconds)
        self.poll_interval = float(poll_interval or settings.poll_interval)
        self.slots = SlotRepository(runner.db, runner.settings.limits)
        self.jobs = JobRepository(runner.db)
        self.stopping = threading.Event()
        self._rebuilt = threading.Event()  # set when run() returns: the rebuild loop ends
        self.board = open_board(
            runner.settings.jobboard,
            f"ferry-conductor-{self.name}",
            persistence=runner.backend,
            timeout=max(2.0, min(self.ttl, 10.0)),
            session_timeout=self.ttl,  # ZooKeeper: ephemeral claims live as long as the lease
        )
        for_conductor(
            self.board, ttl=self.ttl, claim_filter=self._may_claim, claim_failed=self._claim_failed
        )
        self._not_before: dict[str, float] = {}
        self._snapshot: _Snapshot | None = None
        self._snapshot_lock = threading.Lock()
        self._pending: dict[str, list[str]] = {}  # claimed, slots not taken yet
        self._pending_lock = threading.Lock()
        self.active: dict[str, Ownership] = {}
        self._active_lock = threading.Lock()
        self._tf = _TaskFlowConductor(
            self,
            name=self.owner,
            jobboard=self.board,
            persistence=runner.backend,
            engine="serial",
            wait_timeout=self.poll_interval,
            max_simultaneous_jobs=self.max_jobs,
        )
        self.store = JobStore(runner, board=self.board)
        self.rebuild_interval = max(self.poll_interval, self.ttl)
        self._tf.notifier.register("job_consumed", self._on_consumed)
        self._tf.notifier.register("job_abandoned", self._on_abandoned)

    @property
    def safe_url(self) -> str:
        return str(self.board.safe_url)

    # ----------------------------------------------------------------- lifecycle
    def run(self, max_dispatches: int | None = None) -> None:
        """Claim and run jobs until :meth:`stop` (or ``max_dispatches`` jobs)."""
        LOG.info(
            "conductor %s: %d job(s) at once from %s, lease %.0f s",
            self.owner,
            self.max_jobs,
            self.safe_url,
            self.ttl,
        )
        rebuilder = threading.Thread(
            target=self._rebuild_loop, name=f"ferry-rebuild-{self.name}", daemon=True
        )
        rebuilder.start()
        try:
            self._tf.run(max_dispatches=max_dispatches)
        finally:
            self._rebuilt.set()

    def rebuild_board(self) -> list[str]:
        """Post again the jobs the board lost (:meth:`JobStore.rebuild`); never raises (a board
        or database that cannot be reached now is tried again at the next round)."""
        try:
            return self.store.rebuild()
        except Exception as exc:
            LOG.warning("conductor %s: cannot rebuild the board now: %s", self.owner, exc)
            return []

    def _rebuild_loop(self) -> None:
        """Every ``rebuild_interval`` seconds until stopped: the board checked against the
        database, whose truth wins (a board restarted without its data loses no migration)."""
        while True:
            self.rebuild_board()
            if self.stopping.wait(self.rebuild_interval) or self._rebuilt.is_set():
                return

    def stop(self) -> None:
        """Stop claiming; the runs in progress hand their migrations over to another conductor
        at their next step or wait (claim abandoned, lease released). Returns at once."""
        self.stopping.set()
        self._tf.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._tf.wait(timeout))

    def close(self) -> None:
        try:
            self.board.close()
        except Exception:  # pragma: no cover - closing a broken connection
            LOG.debug("closing the board failed", exc_info=True)

    # ------------------------------------------------------------- claim filter
    def _defer(self, job: Any, seconds: float) -> None:
        """Do not claim ``job`` again for ``seconds`` (it was just given back)."""
        now = time.monotonic()
        if len(self._not_before) > 10_000:  # forget jobs consumed elsewhere meanwhile
            for uuid, until in list(self._not_before.items()):
                if until < now:
                    self._not_before.pop(uuid, None)
        self._not_before[job.uuid] = now + seconds

    def _snap(self) -> _Snapshot:
        with self._snapshot_lock:
            snap = self._snapshot
            if snap is None or time.monotonic() - snap.taken > self.poll_interval / 2:
                snap = self._snapshot = _Snapshot(self.slots, self.runner.db)
            return snap

    def _may_claim(self, job: Any) -> bool:
        """False for jobs that cannot start now (deferred, or a limit is full): not claimed."""
        if self.stopping.is_set():
            return False
        not_before = self._not_before.get(job.uuid)
        if not_before is not None:
            if time.monotonic() < not_before:
                return False
            self._not_before.pop(job.uuid, None)
        mid = str((job.details or {}).get("migration_id") or "")
        try:
            snap = self._snap()
        except Exception:
            LOG.warning("conductor %s: cannot read the limits", self.owner, exc_info=True)
            return False
        if mid not in snap.open:
            return True  # finished or unknown: claim it to consume it
        source, destination, aborted = snap.open[mid]
        if aborted:
            return True
        needed = self.slots.needed(source, destination)
        held = snap.held.get(mid, [])
        with self._pending_lock:
            # slots of jobs this conductor has claimed but not started yet count as taken, so
            # one scan claims jobs oldest first without claiming more than the limits admit
            usage = dict(snap.usage)
            for other, keys in self._pending.items():
                if other != mid and other not in snap.held:
                    for key in keys:
                        usage[key] = usage.get(key, 0) + 1
            if self.slots.would_block(needed, usage, held) is not None:
                return False
            self._pending[mid] = [k for k in needed if k not in held]
        return True

    def _claim_failed(self, job: Any) -> None:
        with self._pending_lock:
            self._pending.pop(str((job.details or {}).get("migration_id") or ""), None)

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, job: Any) -> bool:
        """Run one claimed job; True = consume it, False = give it back to the board."""
        mid = (job.details or {}).get("migration_id")
        if not mid:
            LOG.error("job %s (%s) is not a ferry migration; consumed unrun", job.uuid, job.name)
            return True
        try:
            COUNTERS.inc(JOBS_CLAIMED)
            before = self.jobs.get(mid) or {}
            if before.get("last_owner") not in (None, self.owner):
                COUNTERS.inc(JOBS_TAKEN_OVER)
            self.jobs.dispatched(mid, self.owner)
            try:
                done = self._dispatch(job, mid)
            finally:
                with self._pending_lock:
                    self._pending.pop(mid, None)
            if done:
                self._finished(mid)
            return done
        except errors.MigrationNotFound:
            LOG.error("job %s: migration %s does not exist; consumed unrun", job.uuid, mid)
            return True
        except errors.MigrationInProgress as exc:
            # a second job of a migration this conductor runs already (a board rebuilt while
            # the run went on): given back; consumed unrun once the migration is finished
            LOG.info("job %s: %s; given back", job.uuid, exc)
            self._defer(job, max(1.0, self.ttl / 3))
            return False
        except Exception:
            LOG.exception("conductor %s: job %s (migration %s) failed", self.owner, job.uuid, mid)
            self._defer(job, max(1.0, self.ttl / 3))
            return False

    def _dispatch(self, job: Any, mid: str) -> bool:
        runner = self.runner
        record = runner.migrations.get(mid)
        flow_state = runner.flow_state(mid)
        if flow_state in FINISHED_FLOW_STATES or (record.done and flow_state is None):
            LOG.info("migration %s already finished (%s); its job is consumed", mid, record.status)
            return True
        if not record.abort_requested:
            blocked = self.slots.acquire(mid, self.slots.needed(record.source, record.destination))
            with self._pending_lock:
                self._pending.pop(mid, None)
            if blocked is not None:
                if record.status in WAITING_STATUSES:
                    self._wait_queued(mid, record.status, blocked)
                    self._defer(job, self.poll_interval)
                    return False
                LOG.warning("migration %s is %s past its limits: %s", mid, record.status, blocked)
        ownership = Ownership(
            board=self.board,
            job=job,
            leases=runner.leases,
            migration_id=mid,
            owner=self.owner,
            ttl=self.ttl,
            stopping=self.stopping,
        )
        heartbeat = runner.heartbeat(self.ttl)
        heartbeat.add(ownership)  # the claim is renewed while the lease is waited for
        with self._active_lock:
            self.active[mid] = ownership
        try:
            # a stale lease (its runner died or stalled, and the claim expired first) is waited
            # out, our claim kept alive by the heartbeat meanwhile
            if not ownership.take(wait_stale=True):
                LOG.info(
                    "migration %s: runner %s holds its lease; job given back",
                    mid,
                    ownership.holder(),
                )
                self._defer(job, max(self.poll_interval, self.ttl / 3))
                return False
            return self._run(job, ownership)
        finally:
            heartbeat.remove(ownership)
            ownership.end()
            with self._active_lock:
                self.active.pop(mid, None)

    def _wait_queued(self, mid: str, status: str, blocked: Blocked) -> None:
        wait_queued(self.runner.migrations, mid, status, blocked)

    def _run(self, job: Any, own: Ownership) -> bool:
        runner = self.runner
        mid = own.migration_id
        record = runner.migrations.get(mid)
        if record.done and runner.flow_state(mid) in FINISHED_FLOW_STATES:
            return True
        unsuspend(runner.migrations, record, f"conductor {self.name}")
        try:
            return self._drive(job, own, record.source)
        except HandOff:
            LOG.info("migration %s handed over: conductor %s is stopping", mid, self.name)
            return False
        except OwnershipLost:
            return False

    def _drive(self, job: Any, own: Ownership, source: str | None) -> bool:
        mid = own.migration_id
        waiting: list[Blocked] = []
        hook = watch_destination(self.slots, self.runner.migrations, mid, source, waiting)
        result = self.runner.run(mid, own, on_engine=hook)
        if result.lost is not None:
            return False
        if result.finished:
            return True
        if waiting:
            # queued first, then the slots given back: the record never shows a migration
            # being prepared that holds no slot (another could take it meanwhile)
            self._wait_queued(mid, MigrationStatus.PREPARING.value, waiting[0])
            self.slots.release(mid)
            self._defer(job, self.poll_interval)
            return False
        if result.failure is not None:
            LOG.warning(
                "migration %s: its run stopped without finishing (%s); the job is given back",
                mid,
                result.failure,
            )
            self._defer(job, max(1.0, self.ttl / 3))
        return False

    # -------------------------------------------------------------- bookkeeping
    def _finished(self, mid: str) -> None:
        """The migration's run is over and its job is about to be consumed: record that first
        (a conductor killed between the two leaves the job on the board, and the next one
        consumes it unrun), give back its slots, and drop any lease left by a runner that died
        before releasing it (a finished migration has nothing left to protect)."""
        try:
            status = self.runner.migrations.field(mid, "status")
        except errors.FerryError:
            status = None
        self.jobs.consumed(mid, self.owner, status)
        self.slots.release(mid)
        with self.runner.db.connect() as conn:
            conn.execute(LS.delete().where(LS.c.migration_id == mid))

    def _on_consumed(self, _event: str, details: dict[str, Any]) -> None:
        job = details.get("job")
        mid = (getattr(job, "details", None) or {}).get("migration_id")
        LOG.info("migration %s: job %s consumed", mid, getattr(job, "uuid", "?"))

    def _on_abandoned(self, _event: str, details: dict[str, Any]) -> None:
        job = details.get("job")
        LOG.debug("job %s given back to the board", getattr(job, "uuid", "?"))
