"""Concurrency limits of the job store: at most ``per_source`` migrations out of one host,
``per_destination`` into one host and ``total`` in flight (0 = no limit).

A migration holds *slots* from the moment a conductor starts it until its record is terminal:
``total``, ``source:HOST`` and, once the destination is known, ``destination:HOST``. All of a
migration's slots are taken in one transaction with one conditional ``UPDATE`` per counter
(``used = used + 1 WHERE used < limit``, in key order so concurrent takers never deadlock); when
one counter is full the transaction rolls back and nothing is held. Taking is idempotent (a
migration resumed by another conductor keeps what it holds) and so is releasing.

The conductor and a drain run in-process (:mod:`ferry.drain.run`) use the same slots and the
same steps: :func:`watch_destination` takes the destination's slot once the scheduler has chosen
it (suspending the engine when it is full), :func:`wait_queued` records why a migration waits,
:func:`unsuspend` puts a migration suspended after its destination was chosen back to
``preparing`` before it runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from taskflow import states as tf_states

from ferry.config import LimitSettings
from ferry.flows import constants as c
from ferry.model import Migration, MigrationStatus
from ferry.persistence.db import Database, dialect_insert
from ferry.persistence.repository import MigrationRepository

from .tables import COUNTERS, SLOTS

LOG = logging.getLogger(__name__)

TOTAL = "total"
#: statuses in which a migration has not reached its transfer yet (a full limit may hold it:
#: it is put back to ``queued``)
WAITING_STATUSES = frozenset(
    {MigrationStatus.ACCEPTED.value, MigrationStatus.QUEUED.value, MigrationStatus.PREPARING.value}
)


def source_key(host: str) -> str:
    return f"source:{host}"


def destination_key(host: str) -> str:
    return f"destination:{host}"


@dataclass(frozen=True)
class Blocked:
    """Why a migration cannot start now: ``key`` is full (``used`` of ``limit``)."""

    key: str
    used: int
    limit: int

    def __str__(self) -> str:
        if self.limit <= 0:
            return "waiting for a slot (the limits could not be read)"
        kind, _, host = self.key.partition(":")
        what = {"total": "migrations in flight", "source": "out of", "destination": "into"}[kind]
        if kind == TOTAL:
            return f"waiting for a slot: {self.used} of {self.limit} {what}"
        return f"waiting for a slot: {self.used} of {self.limit} migrations {what} {host}"


class _Full(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class SlotRepository:
    """Slots of the concurrency limits (see the module doc)."""

    def __init__(
        self, db: Database, limits: LimitSettings, now: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.limits = limits
        self.now = now

    def needed(
        self, source: str | None, destination: str | None, source_limit: int | None = None
    ) -> dict[str, int]:
        """key -> limit (0 = unlimited) of the slots a migration needs (``source_limit``: the
        limit out of ``source`` instead of ``per_source``, as a drain's ``--max-parallel``)."""
        keys = {TOTAL: self.limits.total}
        if source:
            keys[source_key(source)] = (
                self.limits.per_source if source_limit is None else source_limit
            )
        if destination:
            keys[destination_key(destination)] = self.limits.per_destination
        return keys

    def acquire(self, migration_id: str, needed: Mapping[str, int]) -> Blocked | None:
        """Hold every slot in ``needed`` (key -> limit), all or nothing; None when held.

        Slots this migration holds already are kept (not counted twice); a ``destination:`` slot
        it holds that is no longer needed (the reschedule moved on) is given back in the same
        transaction. Returns what blocked it otherwise (nothing is then taken).
        """
        now = self.now()
        try:
            with self.db.connect() as conn:
                held = set(
                    conn.execute(
                        sa.select(SLOTS.c.key).where(SLOTS.c.migration_id == migration_id)
                    ).scalars()
                )
                stale = sorted(k for k in held - set(needed) if k.startswith("destination:"))
                if stale:
                    self._give_back(conn, migration_id, stale)
                for key in sorted(set(needed) - held):
                    _insert_ignore(conn, key)
                    limit = int(needed[key])
                    stmt = COUNTERS.update().where(COUNTERS.c.key == key)
                    if limit > 0:
                        stmt = stmt.where(COUNTERS.c.used < limit)
                    if conn.execute(stmt.values(used=COUNTERS.c.used + 1)).rowcount != 1:
                        raise _Full(key)
                    conn.execute(
                        SLOTS.insert().values(migration_id=migration_id, key=key, acquired_at=now)
                    )
        except _Full as full:
            with self.db.connect() as conn:
                used = conn.execute(
                    sa.select(COUNTERS.c.used).where(COUNTERS.c.key == full.key)
                ).scalar()
            return Blocked(full.key, int(used or 0), int(needed[full.key]))
        return None

    def release(self, migration_id: str, keys: Iterable[str] | None = None) -> int:
        """Give back the migration's slots (only ``keys``, if given). Idempotent."""
        with self.db.connect() as conn:
            q = sa.select(SLOTS.c.key).where(SLOTS.c.migration_id == migration_id)
            held = sorted(conn.execute(q).scalars())
            if keys is not None:
                wanted = set(keys)
                held = [k for k in held if k in wanted]
            return self._give_back(conn, migration_id, held)

    @staticmethod
    def _give_back(conn: sa.Connection, migration_id: str, keys: list[str]) -> int:
        released = 0
        for key in keys:  # sorted by the callers: same lock order as acquire
            gone = conn.execute(
                SLOTS.delete().where(SLOTS.c.migration_id == migration_id, SLOTS.c.key == key)
            ).rowcount
            if gone:
                conn.execute(
                    COUNTERS.update()
                    .where(COUNTERS.c.key == key, COUNTERS.c.used > 0)
                    .values(used=COUNTERS.c.used - 1)
                )
                released += 1
        return released

    def held(self, migration_id: str | None = None) -> dict[str, list[str]]:
        """migration id -> the keys it holds."""
        q = sa.select(SLOTS.c.migration_id, SLOTS.c.key).order_by(SLOTS.c.key)
        if migration_id is not None:
            q = q.where(SLOTS.c.migration_id == migration_id)
        out: dict[str, list[str]] = {}
        with self.db.connect() as conn:
            for mid, key in conn.execute(q):
                out.setdefault(mid, []).append(key)
        return out

    def usage(self) -> dict[str, int]:
        """key -> migrations holding one of its slots (counters at 0 left out)."""
        with self.db.connect() as conn:
            q = sa.select(COUNTERS.c.key, COUNTERS.c.used).where(COUNTERS.c.used > 0)
            rows = conn.execute(q)
            return {k: int(u) for k, u in rows}

    def would_block(
        self, needed: Mapping[str, int], usage: Mapping[str, int], holds: Iterable[str] = ()
    ) -> Blocked | None:
        """What would block taking ``needed`` given a snapshot of :meth:`usage` (read-only: a
        hint to skip jobs that cannot start; :meth:`acquire` decides)."""
        have = set(holds)
        for key in sorted(needed):
            limit = int(needed[key])
            if key in have or limit <= 0:
                continue
            used = int(usage.get(key, 0))
            if used >= limit:
                return Blocked(key, used, limit)
        return None


def _insert_ignore(conn: sa.Connection, key: str) -> None:
    conn.execute(dialect_insert(conn, COUNTERS).values(key=key, used=0).on_conflict_do_nothing())


def watch_destination(
    slots: SlotRepository,
    migrations: MigrationRepository,
    migration_id: str,
    source: str | None,
    waiting: list[Blocked],
    source_limit: int | None = None,
) -> Callable[[Any], None]:
    """An ``on_engine`` hook for :meth:`ferry.runner.Runner.run`: when the scheduler has chosen
    the destination, take its slot; when that limit is full, append what blocked to ``waiting``
    and suspend the engine right after ``schedule`` (the caller then :func:`wait_queued` and
    gives the slots back)."""

    def hook(engine: Any) -> None:
        def on_destination(_state: str, details: dict[str, Any]) -> None:
            if details.get("task_name") != c.SCHEDULE or not isinstance(details.get("result"), str):
                return
            try:
                if migrations.field(migration_id, "abort_requested"):
                    return
                needed = slots.needed(source, details["result"], source_limit)
                blocked = slots.acquire(migration_id, needed)
            except Exception as exc:
                LOG.warning("migration %s: cannot take the destination slot: %s", migration_id, exc)
                blocked = Blocked(f"destination:{details['result']}", 0, 0)
            if blocked is not None:
                waiting.append(blocked)
                engine.suspend()

        engine.atom_notifier.register(tf_states.SUCCESS, on_destination)

    return hook


def wait_queued(
    migrations: MigrationRepository, migration_id: str, status: str, blocked: Blocked
) -> None:
    """Record that the migration waits for a slot (status ``queued``, detail: which limit)."""
    if status != MigrationStatus.QUEUED.value:
        migrations.set_status(migration_id, MigrationStatus.QUEUED, detail=str(blocked))
    LOG.info("migration %s queued: %s", migration_id, blocked)


def unsuspend(migrations: MigrationRepository, record: Migration, by: str) -> None:
    """A migration suspended after its destination was chosen goes back to ``preparing`` before
    it runs again (its sentinel does not run again)."""
    if record.status == MigrationStatus.QUEUED.value and any(
        h.status == MigrationStatus.PREPARING.value for h in record.history
    ):
        migrations.set_status(record.id, MigrationStatus.PREPARING, detail=f"resumed by {by}")
