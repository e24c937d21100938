"""One driver per migration: a conductor owns a migration while it holds *both* the board claim
on its job and ferry's lease row, taken in the same name, with the same lifetime, renewed together.

Four layers keep a conductor that lost them (it stalled past the lease, its network went away)
from driving the migration any further once it runs again:

* the runner's heartbeat (:class:`ferry.runner.lease.Heartbeat`) renews the lease row and the
  claim every third of the lease (the claim only while it is still this conductor's:
  :meth:`extend_claim` is atomic); a failed renewal marks the ownership lost and suspends the
  engine;
* :class:`OwnershipListener` (TaskFlow's ``CheckingClaimListener``) checks the claim at every
  state change of the flow and its atoms and suspends the engine when it is gone;
* :class:`FencedBackend`: every TaskFlow write of the run happens in a transaction that first
  reads the lease row with a lock (``FOR SHARE``) and refuses to write unless this conductor is
  still the owner, so a takeover and a stale write can never interleave;
* :class:`GuardedClock`: the tasks' waits (the transfer monitor's polls, the roll-forward's
  backoff) check the ownership, re-verifying it when the last confirmation is older than half a
  lease.

A refusal raises :class:`~ferry.runner.lease.OwnershipLost`, a ``BaseException``: tasks do not
catch it and TaskFlow does not turn it into a task failure, so the engine unwinds exactly as if
the process had died (the running atom stays RUNNING, nothing is reverted) and the new owner
resumes the run. An :class:`Ownership` is a :class:`~ferry.runner.lease.Lease` whose run hooks
add the board claim, the fence and the guard.
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
from ferry.runner.lease import HandOff, Lease, OwnershipLost

__all__ = [
    "FencedBackend",
    "GuardedClock",
    "HandOff",
    "Ownership",
    "OwnershipListener",
    "OwnershipLost",
]

LOG = logging.getLogger(__name__)


class Ownership(Lease):
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
        super().__init__(leases, migration_id, owner, ttl, stopping=stopping)
        self.board = board
        self.job = job

    def _renew_more(self) -> str | None:
        if not self.board.extend_claim(self.job, self.owner, self.ttl):
            return "its board claim expired or belongs to another conductor now"
        return None

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

    def check(self) -> None:
        """Raise OwnershipLost / HandOff when this run must stop now (called between polls);
        re-verifies the claim and lease when the last confirmation is older than half a lease."""
        super().check()
        if time.monotonic() - self._confirmed > self.ttl / 2:
            if self.claim_is_mine() and (not self.leased or self.lease_is_mine()):
                self._confirmed = time.monotonic()
            else:
                self.lose("found taken over when it resumed")
                raise OwnershipLost(self.lost_reason)

    # the run's hooks (see ferry.runner.lease.Lease)
    def backend(self, backend: Any) -> Any:
        return FencedBackend(backend, self)

    def clock(self, clock: Any) -> Any:
        return GuardedClock(clock, self)

    @contextlib.contextmanager
    def watch(self, engine: Any) -> Iterator[None]:
        with OwnershipListener(engine, self):
            yield


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
