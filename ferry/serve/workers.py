"""How the server runs what it accepted: a bounded pool of in-process workers calling the
Orchestrator's ``resume`` (the runner: lease, engine, outcome), or the job store when
``[jobboard] url`` is configured (then conductors run the jobs).

On start, :meth:`Workers.recover` hands every unfinished migration to the pool: a run whose
server was killed (SIGKILL) is continued from its logbook; the runner's lease refuses a run that
another live process still holds, so each accepted migration runs exactly once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

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
        with self._lock:
            if self.stopping.is_set():
                return False
            if migration_id in self._queued:
                return False
            self._queued.add(migration_id)
        self._pool.submit(self._run, migration_id)
        return True

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
        """Queue every unfinished migration (not with a job store: its conductors own them)."""
        if self.use_jobstore:
            return []
        pending = [
            m.id
            for m in self.orch.migrations.list()
            if not MigrationStatus(m.status).terminal and m.status != MigrationStatus.QUEUED
        ]
        for migration_id in reversed(pending):  # oldest first
            self.start(migration_id)
        if pending:
            LOG.info("resuming %d unfinished migration(s)", len(pending))
        return pending

    def busy(self) -> int:
        with self._lock:
            return len(self._queued)

    def close(self) -> None:
        """Stop: runs in progress suspend at their next step (their leases are released, so
        the next start, or any runner, continues them); queued runs do not start."""
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
