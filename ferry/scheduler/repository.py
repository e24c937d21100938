"""The scheduler's repository: the host state cache (:mod:`.state`) and the claims on it
(:mod:`.claims`), each call one short transaction on ferry's database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferry.model import Host, Instance
from ferry.model.numa import Pinning
from ferry.persistence.db import Database
from ferry.scheduler import claims as claim_ops, state as host_state
from ferry.scheduler.state import CL, HM, HS


class ClaimRepository:
    """Destination claims and source holds on the host state cache (see
    :mod:`ferry.scheduler.claims`: atomic on SQLite and PostgreSQL, idempotent)."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now

    def refresh_hosts(
        self,
        hosts: Iterable[Host],
        *,
        reported_at: float | None = None,
        complete: bool = False,
    ) -> dict[str, tuple[int, int, int]]:
        """Cache drivers' reports, read at ``reported_at`` (default: now) or later, with their
        NUMA cells (see :mod:`ferry.scheduler.state`: hosts with migrations in flight keep their
        usage, claims are left alone; ``complete``: hosts missing from ``hosts`` are marked
        down). Returns what is claimed on every host (:meth:`claimed`), read in the same
        transaction."""
        at = self.now() if reported_at is None else reported_at
        with self.db.connect() as conn:
            host_state.write_reports(conn, list(hosts), at, complete=complete)
            return self._claimed(conn)

    def host_states(self, names: Iterable[str] | None = None) -> list[host_state.HostState]:
        """The cached hosts (all, or ``names``) with claims, NUMA cells and migrations in
        flight."""
        with self.db.connect() as conn:
            return host_state.load_states(conn, None if names is None else list(names))

    def cache_age(self) -> tuple[int, float | None]:
        """(cached hosts that are up, the oldest of their reports' times)."""
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.count(), sa.func.min(HS.c.updated_at)).where(HS.c.up.is_(True))
            ).one()
        return int(row[0]), (float(row[1]) if row[1] is not None else None)

    def maintenance_of(self, host: str) -> dict[str, Any] | None:
        """``{"drain": id or None, "reason": text}`` when ``host`` is disabled for scheduling
        (by a drain, or by an operator: drain None); None when it is not."""
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(HM.c.drain_id, HM.c.reason).where(HM.c.host == host)
            ).first()
        return None if row is None else {"drain": row[0], "reason": row[1]}

    def claimed(self) -> dict[str, tuple[int, int, int]]:
        """host -> (vcpus, memory_mb, disk_gb) held by migrations in flight."""
        with self.db.connect() as conn:
            return self._claimed(conn)

    @staticmethod
    def _claimed(conn: Connection) -> dict[str, tuple[int, int, int]]:
        rows = conn.execute(
            sa.select(HS.c.name, HS.c.claimed_vcpus, HS.c.claimed_memory_mb, HS.c.claimed_disk_gb)
        ).all()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def claim(
        self, migration_id: str, host: str, instance: Instance, *, source: str | None = None
    ) -> bool:
        """Hold the instance's resources on ``host``. True when held (also when already held by
        this migration); False when the host has no room after other claims."""
        return self.claim_resources(migration_id, host, instance, source=source).ok

    def claim_resources(
        self, migration_id: str, host: str, instance: Instance, *, source: str | None = None
    ) -> claim_ops.ClaimResult:
        """Hold the instance's vCPUs, RAM, disk and, for a pinned guest, the exact pCPUs of one
        NUMA cell on ``host``; with ``source``, also hold its usage there until
        :meth:`release_source`. One transaction; the result says what was held or why not."""
        try:
            with self.db.connect() as conn:
                return claim_ops.take(
                    conn, migration_id, host, instance, source=source, now=self.now()
                )
        except claim_ops.ClaimRefused as exc:
            return claim_ops.ClaimResult(False, reason=exc.reason)

    def pinning(self, migration_id: str, host: str) -> Pinning | None:
        """The pinning ``migration_id`` claimed on ``host`` (None: unpinned or no claim)."""
        with self.db.connect() as conn:
            return claim_ops.pinning(conn, migration_id, host)

    def release(self, migration_id: str, host: str | None = None) -> int:
        """Give back the claims of ``migration_id`` (on ``host`` only, if given) and drop its
        source hold (the usage there stays: the guest did not leave). Idempotent."""
        with self.db.connect() as conn:
            return claim_ops.release(conn, migration_id, host)

    def release_source(self, migration_id: str) -> str | None:
        """After post-migration at the source: the instance's usage and pinned pCPUs there are
        released. Returns the source (None when already done). Idempotent."""
        with self.db.connect() as conn:
            return claim_ops.release_source(conn, migration_id, self.now())

    def complete(self, migration_id: str) -> str | None:
        """The destination claim becomes usage (its pCPUs pinned). Returns the destination
        (None when already done). Idempotent."""
        with self.db.connect() as conn:
            return claim_ops.complete(conn, migration_id, self.now())

    def list(self, migration_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(CL)
        if migration_id:
            q = q.where(CL.c.migration_id == migration_id)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]
