"""How the server runs what it accepted: a bounded pool of in-process workers calling the
Orchestrator's ``resume`` (the runner: lease, engine, outcome), or the job store when
``[jobboard] url`` is configured (then conductors run the jobs).

Drains (:meth:`Workers.start_drain`) are driven by the same pool, in process also with a job
store (the drain's driver runs its migrations through the runner). On stop a drain starts no new
migration and is left ``running`` once those in flight have ended.

On start, :meth:`Workers.recover` hands every unfinished migration and drain to the pool: a run
whose server was killed (SIGKILL) is continued from its logbook; the runner's lease refuses a run
that another live process still holds, so each accepted migration runs exactly once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

from ferry import errors
from ferry.api import Orchestrator
from ferry.model import MigrationRequest, MigrationStatus
from ferry.runner.lease import HandOff, Lease
from ferry.runner.runner import FINISHED_FLOW_STATES

LOG = logging.getLogger(__name__)
DEFAULT_WORKERS = 4


class Workers:
    """Accepts migration requests and runs them within ``max_workers`` at once."""

    def __init__(self, orch: Orchestrator, max_workers: int | None = None) -> None:
        self.orch = orch
        self.use_jobstore = bool(orch.settings.jobboard.url)
        limit = max_workers or orch.settings.limits.total or DEFAULT_WORKERS
        self.max_workers = limit
        self._pool = concurrent.futures.ThreadPoolExecutor(limit, thread_name_prefix="ferry-serve")
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self.stopping = threading.Event()

    def accept(self, request: MigrationRequest) -> str:
        """Validate and persist the request (record, instance lock, logbook; or the job), then
        queue its run. Returns the migration id once it is durable. Bad requests raise the
        Orchestrator's typed errors and change nothing."""
        if self.use_jobstore:
            return self.orch.submit(request)
        migration_id = self.orch.create(request)
        self.start(migration_id)
        return migration_id

    def start(self, migration_id: str) -> bool:
        """Queue a run of ``migration_id`` unless one is queued or running here already."""
        return self._submit(migration_id, self._run)

    def start_drain(self, drain_id: str) -> bool:
        """Queue the drive of a recorded drain (``DrainService.start``) unless it is queued or
        running here already."""
        return self._submit(drain_id, self._run_drain)

    def _submit(self, key: str, fn: Callable[[str], None]) -> bool:
        with self._lock:
            if self.stopping.is_set():
                return False
            if key in self._queued:
                return False
            self._queued.add(key)
        self._pool.submit(fn, key)
        return True

    def _run_drain(self, drain_id: str) -> None:
        try:
            self.orch.drain_service.run(drain_id, stopping=self.stopping)
        except errors.MigrationInProgress as exc:
            LOG.info("drain %s: not run here: %s", drain_id, exc)
        except errors.FerryError as exc:
            LOG.info("drain %s ended: %s", drain_id, exc)
        except Exception:
            LOG.exception("drain %s: the run failed unexpectedly", drain_id)
        finally:
            with self._lock:
                self._queued.discard(drain_id)

    def _run(self, migration_id: str) -> None:
        runner = self.orch.runner
        try:
            record = self.orch.migrations.get(migration_id)
            if record.done and runner.flow_state(migration_id) in (*FINISHED_FLOW_STATES, None):
                return
            # the same run as Orchestrator.resume, with a lease that suspends the run at its
            # next step when the server stops (the next start resumes it)
            lease = Lease(
                runner.leases,
                migration_id,
                runner.owner,
                self.orch.settings.runner.lease_seconds,
                stopping=self.stopping,
            )
            result = runner.run(migration_id, lease)
            if not self.stopping.is_set():
                runner.outcome(result)
        except HandOff:
            LOG.info("migration %s suspended: the server is stopping", migration_id)
        except errors.MigrationInProgress as exc:
            LOG.info("migration %s: not run here: %s", migration_id, exc)
        except errors.FerryError as exc:
            LOG.info("migration %s ended: %s", migration_id, exc)
        except Exception:
            LOG.exception("migration %s: the run failed unexpectedly", migration_id)
        finally:
            with self._lock:
                self._queued.discard(migration_id)

    def recover(self) -> list[str]:
        """Queue every unfinished drain, and every unfinished migration (not with a job store:
        its conductors own them, and a drain's own migrations are resumed by their drain)."""
        unfinished = [d for d in self.orch.drains() if not d.done]
        drains = [d.id for d in unfinished]
        for drain_id in reversed(drains):
            self.start_drain(drain_id)
        if self.use_jobstore:
            return drains
        theirs = {g.migration for d in unfinished for g in d.guests if g.migration}
        pending = [
            m.id
            for m in self.orch.migrations.list()
            if not MigrationStatus(m.status).terminal
            and m.status != MigrationStatus.QUEUED
            and m.id not in theirs
        ]
        for migration_id in reversed(pending):  # oldest first
            self.start(migration_id)
        if pending or drains:
            LOG.info("resuming %d unfinished migration(s), %d drain(s)", len(pending), len(drains))
        return drains + pending

    def busy(self) -> int:
        with self._lock:
            return len(self._queued)

    def close(self) -> None:
        """Stop: runs in progress suspend at their next step (their leases are released, so
        the next start, or any runner, continues them); queued runs do not start."""
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
