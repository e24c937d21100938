"""One runner per migration: the lease row, how it is taken, and the one heartbeat renewing it.

A runner (an embedding process, ``ferry resume``, a ``--detach`` child, a conductor) drives a
migration only while it holds the migration's lease row (owner, expiry, heartbeat) in ferry's
database. A :class:`Lease` is that hold:

* :meth:`Lease.take` is the one acquisition rule: a free or expired lease is taken; a lease of
  a runner of this machine whose process is provably gone (SIGKILL, a power cut of the process)
  is taken over at once; a live runner's lease is respected; with ``wait_stale`` (a conductor
  whose board claim is newer than the lease) a lease not renewed within a third of its lifetime
  is waited out until it expires.
* :class:`Heartbeat` renews every lease of one lifetime every third of it; a failed renewal, or
  none for longer than the lease, marks the lease lost and suspends its engine.
* A lost lease raises :class:`OwnershipLost` (a ``BaseException``) where a run checks it: tasks do
  not catch it and TaskFlow does not turn it into a task failure, so the engine unwinds exactly
  as if the process had died (the running atom stays RUNNING, nothing is reverted) and the new
  owner resumes the run.

A conductor's :class:`~ferry.jobs.ownership.Ownership` is a lease that also holds the job board's
claim, fences every write and guards every wait (the hooks :meth:`Lease.backend`,
:meth:`Lease.clock` and :meth:`Lease.watch`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ferry.metrics import COUNTERS, LEASE_RENEWALS_FAILED
from ferry.persistence.repository import LeaseRepository

LOG = logging.getLogger(__name__)


class OwnershipLost(BaseException):
    """This runner no longer owns the migration: unwind the run like a crash (no revert)."""


class HandOff(OwnershipLost):
    """The runner is shutting down: leave the migration to another runner."""


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


class Lease:
    """One runner's hold on one migration's lease row (see the module doc).

    :param stopping: set when the runner is shutting down: the run suspends at its next step and
        the migration is left to another runner.
    """

    def __init__(
        self,
        leases: LeaseRepository,
        migration_id: str,
        owner: str,
        ttl: float,
        *,
        stopping: threading.Event | None = None,
    ) -> None:
        self.leases = leases
        self.migration_id = migration_id
        self.owner = owner
        self.ttl = ttl
        self.stopping = stopping if stopping is not None else threading.Event()
        self.leased = False
        self.engine: Any = None
        self.lost_reason: str | None = None
        self.closed = False
        self._confirmed = time.monotonic()
        self._lock = threading.Lock()
        self._renewing = threading.Lock()
        #: the dead runner whose lease this one took over (None: it was free or expired)
        self.taken_from: str | None = None

    # ------------------------------------------------------------------ taking
    def take(self, *, wait_stale: bool = False) -> bool:
        """Take the lease row (the rule of the module doc); False when another runner has it."""
        leases = self.leases
        deadline = time.monotonic() + self.ttl + 1.0
        while not (self.lost or self.stopping.is_set()):
            if leases.acquire(self.migration_id, self.owner, self.ttl):
                return self._taken()
            lease = leases.get(self.migration_id)
            if lease is None:
                continue  # released meanwhile: try again
            holder = str(lease["owner"])
            if runner_process_gone(holder) and leases.take_over(
                self.migration_id, holder, self.owner, self.ttl
            ):
                LOG.warning(
                    "migration %s: taking over from dead runner %s", self.migration_id, holder
                )
                self.taken_from = holder
                return self._taken()
            if not wait_stale:
                return False
            now = time.time()
            lifetime = max(0.0, float(lease["expires_at"]) - float(lease["heartbeat_at"]))
            stale = now - float(lease["heartbeat_at"]) > lifetime / 3 + 0.5
            if not stale or time.monotonic() > deadline:
                return False
            self.stopping.wait(min(0.2, max(0.02, float(lease["expires_at"]) - now)))
        return False

    def _taken(self) -> bool:
        self.leased = True
        self._confirmed = time.monotonic()
        return True

    def holder(self) -> str:
        """Who holds the lease row now, for messages ("another runner" when nobody)."""
        lease = self.leases.get(self.migration_id) or {}
        return str(lease.get("owner") or "another runner")

    def expires_in(self) -> float:
        lease = self.leases.get(self.migration_id) or {}
        return max(0.0, float(lease.get("expires_at", 0)) - time.time())

    # ----------------------------------------------------------------- holding
    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def lose(self, reason: str, *, suspend: bool = True) -> None:
        """Mark the migration lost (logged once) and ask the engine to suspend: it stops at the
        next atom boundary, if its own next write has not stopped it already."""
        with self._lock:
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
            engine = self.engine
        LOG.warning(
            "migration %s: %s lost it (%s); it stops driving it",
            self.migration_id,
            self.owner,
            reason,
        )
        if suspend and engine is not None:
            # with a fenced backend the suspension is itself a write: refused when the lease is
            # gone, and then the engine's next write stops it anyway
            with contextlib.suppress(Exception, OwnershipLost):
                engine.suspend()

    def renew(self) -> None:
        """Renew the lease (the heartbeat's beat)."""
        with self._renewing:
            if self.lost or self.closed:
                return
            try:
                ok = not self.leased or self.leases.renew(self.migration_id, self.owner, self.ttl)
                if not ok:
                    COUNTERS.inc(LEASE_RENEWALS_FAILED)
                    self.lose("its lease row belongs to another runner now")
                    return
                reason = self._renew_more()
                if reason is not None:
                    COUNTERS.inc(LEASE_RENEWALS_FAILED)
                    self.lose(reason)
                    return
            except Exception as exc:
                COUNTERS.inc(LEASE_RENEWALS_FAILED)
                late = time.monotonic() - self._confirmed
                LOG.warning("migration %s: could not renew its lease (%s)", self.migration_id, exc)
                if late > self.ttl:
                    self.lose(f"not renewed for {late:.0f} s")
                return
            self._confirmed = time.monotonic()

    def _renew_more(self) -> str | None:
        """What else a beat renews (a conductor's board claim); the reason when that was lost."""
        return None

    def lease_is_mine(self) -> bool:
        lease = self.leases.get(self.migration_id)
        return bool(lease and lease["owner"] == self.owner)

    def check(self) -> None:
        """Raise OwnershipLost / HandOff when this run must stop now (called between waits)."""
        if self.lost:
            raise OwnershipLost(self.lost_reason)
        if self.stopping.is_set():
            raise HandOff("the runner is shutting down")

    def end(self) -> None:
        """The run is over: no more renewals, and the lease row is released if held (safe to
        call twice)."""
        with self._renewing:
            self.closed = True
        if self.leased:
            self.leased = False
            self.leases.release(self.migration_id, self.owner)

    # -------------------------------------------------------- a run's hooks
    def backend(self, backend: Any) -> Any:
        """The TaskFlow backend the run writes through (a conductor's is fenced)."""
        return backend

    def clock(self, clock: Any) -> Any:
        """The clock the run's tasks wait on (a conductor's checks its ownership)."""
        return clock

    @contextlib.contextmanager
    def watch(self, engine: Any) -> Iterator[None]:
        """Around the engine's run (a conductor checks its claim at every state change)."""
        yield


class Heartbeat(threading.Thread):
    """Renews every lease it holds every third of ``ttl`` (the leases' lifetime)."""

    def __init__(self, ttl: float, name: str = "ferry-lease-heartbeat") -> None:
        super().__init__(name=name, daemon=True)
        self.ttl = ttl
        self._held: set[Lease] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._held.add(lease)

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._held.discard(lease)

    def run(self) -> None:
        while not self._stop_event.wait(self.ttl / 3):
            with self._lock:
                held = list(self._held)
            for lease in held:
                try:
                    lease.renew()
                except Exception:  # pragma: no cover - renew logs its own failures
                    LOG.exception("migration %s: lease renewal failed", lease.migration_id)

    def stop(self) -> None:
        self._stop_event.set()
