"""One driver per migration: a conductor owns a migration while it holds *both* the board claim
on its job and ferry's lease row, taken in the same name, with the same lifetime, renewed together.

Four layers keep a conductor that lost them (it stalled past the lease, its network went away)
from driving the migration any further once it runs again:

* the heartbeat (:class:`Heartbeat`) renews the lease row and the claim every third of the lease
  (the claim only while it is still this conductor's: :meth:`extend_claim` is atomic); a failed
  renewal marks the ownership lost and suspends the engine;
* :class:`OwnershipListener` (TaskFlow's ``CheckingClaimListener``) checks the claim at every
  state change of the flow and its atoms and suspends the engine when it is gone;
* :class:`FencedBackend`: every TaskFlow write of the run happens in a transaction that first
  reads the lease row with a lock (``FOR SHARE``) and refuses to write unless this conductor is
  still the owner, so a takeover and a stale write can never interleave;
* :class:`GuardedClock`: the tasks' waits (the transfer monitor's polls, the roll-forward's
  backoff) check the ownership, re-verifying it when the last confirmation is older than half a
  lease.

A refusal raises :class:`OwnershipLost`, a ``BaseException``: tasks do not catch it and TaskFlow
does not turn it into a task failure, so the engine unwinds exactly as if the process had died
(the running atom stays RUNNING, nothing is reverted) and the new owner resumes the run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from taskflow import exceptions as tf_exc
from taskflow.listeners import claims

from ferry.persistence.repository import LS, LeaseRepository
from ferry.persistence.taskflow_backend import FerryBackend, FerryConnection

LOG = logging.getLogger(__name__)


class OwnershipLost(BaseException):
    """This conductor no longer owns the migration: unwind the run like a crash (no revert)."""


class HandOff(OwnershipLost):
    """The conductor is shutting down: leave the migration to another conductor."""


class Ownership:
    """The claim + lease a conductor holds on one migration (shared by the heartbeat, the
    listener, the fenced backend and the clock of that run)."""

    def __init__(
        self,
        *,
        board: Any,
        job: Any,
        leases: LeaseRepository,
        migration_id: str,
        owner: str,
        ttl: float,
        stopping: threading.Event,
    ) -> None:
        self.board = board
        self.job = job
        self.leases = leases
        self.migration_id = migration_id
        self.owner = owner
        self.ttl = ttl
        self.stopping = stopping
        self.leased = False
        self.engine: Any = None
        self.lost_reason: str | None = None
        self.closed = False
        self._confirmed = time.monotonic()
        self._lock = threading.Lock()
        self._renewing = threading.Lock()

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
            # the suspension is itself a (fenced) write: refused when the lease is gone, and
            # then the engine's next write stops it anyway
            with contextlib.suppress(Exception, OwnershipLost):
                engine.suspend()

    def close(self) -> None:
        """The run is over: no more renewals (call before releasing the lease)."""
        with self._renewing:
            self.closed = True

    def renew(self) -> None:
        """Renew the lease row and the claim (the heartbeat's beat)."""
        with self._renewing:
            if not (self.lost or self.closed):
                self._renew()

    def _renew(self) -> None:
        try:
            ok = not self.leased or self.leases.renew(self.migration_id, self.owner, self.ttl)
            if not ok:
                self.lose("its lease row belongs to another runner now")
                return
            if not self.board.extend_claim(self.job, self.owner, self.ttl):
                self.lose("its board claim expired or belongs to another conductor now")
                return
        except Exception as exc:
            late = time.monotonic() - self._confirmed
            LOG.warning(
                "migration %s: could not renew the claim and lease (%s)", self.migration_id, exc
            )
            if late > self.ttl:
                self.lose(f"not renewed for {late:.0f} s")
            return
        self._confirmed = time.monotonic()

    def claim_is_mine(self) -> bool:
        try:
            return bool(self.board.find_owner(self.job) == self.owner)
        except (tf_exc.NotFound, tf_exc.JobFailure, TypeError):
            return False

    def surely_mine(self) -> bool:
        """Whether the claim is still this conductor's, asking the board only when the last
        renewal is older than half a lease (a claim cannot expire, so nobody else can have
        taken it, within a lease of its last renewal). The fenced writes, not this check, are
        what guarantees a stale owner writes nothing."""
        if self.lost:
            return False
        if time.monotonic() - self._confirmed < self.ttl / 2:
            return True
        if self.claim_is_mine():
            self._confirmed = time.monotonic()
            return True
        return False

    def lease_is_mine(self) -> bool:
        lease = self.leases.get(self.migration_id)
        return bool(lease and lease["owner"] == self.owner)

    def check(self) -> None:
        """Raise OwnershipLost / HandOff when this run must stop now (called between polls)."""
        if self.lost:
            raise OwnershipLost(self.lost_reason)
        if self.stopping.is_set():
            raise HandOff("the conductor is shutting down")
        if time.monotonic() - self._confirmed > self.ttl / 2:
            if self.claim_is_mine() and (not self.leased or self.lease_is_mine()):
                self._confirmed = time.monotonic()
            else:
                self.lose("found taken over when it resumed")
                raise OwnershipLost(self.lost_reason)


class Heartbeat(threading.Thread):
    """Renews every ownership of one conductor every third of the lease."""

    def __init__(self, ttl: float) -> None:
        super().__init__(name="ferry-conductor-heartbeat", daemon=True)
        self.ttl = ttl
        self._owned: set[Ownership] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def add(self, ownership: Ownership) -> None:
        with self._lock:
            self._owned.add(ownership)

    def remove(self, ownership: Ownership) -> None:
        with self._lock:
            self._owned.discard(ownership)

    def run(self) -> None:
        while not self._stop_event.wait(self.ttl / 3):
            with self._lock:
                owned = list(self._owned)
            for ownership in owned:
                ownership.renew()

    def stop(self) -> None:
        self._stop_event.set()


class OwnershipListener(claims.CheckingClaimListener):
    """TaskFlow's claim-checking listener: at every flow/atom state change, suspend the engine
    if the claim is gone (asking the board only when the heartbeat has not renewed it for half
    a lease: see :meth:`Ownership.surely_mine`)."""

    def __init__(self, engine: Any, ownership: Ownership) -> None:
        super().__init__(
            engine,
            ownership.job,
            ownership.board,
            ownership.owner,
            on_job_loss=lambda _engine, _state, _details: ownership.lose("its board claim is gone"),
        )
        self._ownership = ownership

    def _has_been_lost(self) -> bool:
        return not self._ownership.surely_mine()


class GuardedClock:
    """The run's clock: every wait first checks that this conductor still owns the migration."""

    def __init__(self, inner: Any, ownership: Ownership) -> None:
        self._inner = inner
        self._ownership = ownership

    def now(self) -> float:
        return float(self._inner.now())

    def sleep(self, seconds: float) -> None:
        self._ownership.check()
        self._inner.sleep(seconds)
        self._ownership.check()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_FENCE = sa.select(LS.c.owner).where(LS.c.migration_id == sa.bindparam("_mid"))


class _FencedEngine:
    """An SQLAlchemy engine whose write transactions first check (and lock) the lease row."""

    def __init__(self, engine: sa.Engine, ownership: Ownership) -> None:
        self._engine = engine
        self._ownership = ownership
        self._stmt = _FENCE.with_for_update(read=True)

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        with self._engine.begin() as conn:
            owner = conn.execute(self._stmt, {"_mid": self._ownership.migration_id}).scalar()
            if owner != self._ownership.owner:
                # no suspension from here: it would write while this transaction holds the lock
                reason = f"its lease row belongs to {owner or 'nobody'} now"
                self._ownership.lose(reason, suspend=False)
                raise OwnershipLost(self._ownership.lost_reason)
            yield conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class FencedBackend:
    """ferry's TaskFlow backend for one run, every write fenced by the run's lease (see module
    doc). Reads and everything else go to the shared backend."""

    def __init__(self, backend: FerryBackend, ownership: Ownership) -> None:
        self._backend = backend
        self._engine = _FencedEngine(backend.engine, ownership)

    def get_connection(self) -> FerryConnection:
        return FerryConnection(self._backend, self._engine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)
