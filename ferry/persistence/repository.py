"""Reads and writes of ferry's tables. Every write is one short transaction; every
concurrency-sensitive write (instance lock, claim, lease) is a single conditional statement, so
it stays correct with many threads or processes on SQLite and on PostgreSQL."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferry.errors import MigrationInProgress, MigrationNotFound
from ferry.model import Attempt, Instance, Migration, MigrationStatus, StatusChange
from ferry.persistence.db import Database, dialect_insert
from ferry.persistence.models import (
    ATTEMPTS as AT,
    INSTANCE_LOCKS as LOCK,
    LEASES as LS,
    MIGRATION_EVENTS as EV,
    MIGRATIONS as M,
)


class Requests(NamedTuple):
    """What users asked of a running migration (read by the transfer monitor at every poll)."""

    abort: bool
    force_complete: bool


StatusListener = Callable[[str, str, str | None], None]

# Statements built once: building a statement costs more than running it on SQLite. UPDATEs carry
# no values(): their SET clause comes from the parameter names, and SQLAlchemy caches the
# compiled form for each set of names.
_ID: sa.BindParameter[Any] = sa.bindparam("_id")
UPDATE_M = M.update().where(M.c.id == _ID)
SELECT_STATUS = sa.select(M.c.status, M.c.abort_requested).where(M.c.id == _ID)
SELECT_REQUESTS = sa.select(M.c.abort_requested, M.c.force_complete_requested).where(M.c.id == _ID)
INSERT_EV = EV.insert()
DELETE_LOCK = LOCK.delete().where(
    LOCK.c.instance_uuid == sa.bindparam("_uuid"), LOCK.c.migration_id == _ID
)
SELECT_REJECTED = sa.select(AT.c.host, AT.c.reason).where(
    AT.c.migration_id == _ID, AT.c.outcome == "rejected"
)


@functools.cache
def _select_fields(names: tuple[str, ...]) -> sa.Select[Any]:
    return sa.select(*(M.c[n] for n in names)).where(M.c.id == _ID)


@functools.cache
def _upsert_stmt(
    dialect: str, table: sa.Table, keys: tuple[str, ...], cols: tuple[str, ...]
) -> Any:
    ins = dialect_insert(dialect, table)
    if cols:
        return ins.on_conflict_do_update(
            index_elements=list(keys), set_={c: ins.excluded[c] for c in cols}
        )
    return ins.on_conflict_do_nothing(index_elements=list(keys))


def _upsert(
    conn: Connection,
    table: sa.Table,
    values: dict[str, Any] | list[dict[str, Any]],
    keys: Iterable[str],
    update: Iterable[str] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE ``update`` columns (or DO NOTHING); one statement,
    executed for every row of ``values`` (executemany)."""
    rows = values if isinstance(values, list) else [values]
    if not rows:
        return
    keys = tuple(keys)
    cols = tuple(update) if update is not None else tuple(k for k in rows[0] if k not in keys)
    conn.execute(_upsert_stmt(conn.dialect.name, table, keys, cols), rows)


class MigrationRepository:
    """Migration records, their status history, attempts and instance locks."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now
        self._listeners: list[StatusListener] = []

    def on_status(self, listener: StatusListener) -> None:
        """Call ``listener(migration_id, status, detail)`` after every status change."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ create
    def create(
        self,
        migration_id: str,
        instance: Instance,
        request: dict[str, Any],
        status: MigrationStatus = MigrationStatus.ACCEPTED,
    ) -> None:
        """Insert the record and take the instance lock, atomically.

        Raises :class:`MigrationInProgress` when another migration holds the instance.
        """
        now = self.now()
        try:
            with self.db.connect() as conn:
                holder = conn.execute(
                    sa.select(LOCK.c.migration_id).where(LOCK.c.instance_uuid == instance.uuid)
                ).scalar()
                if holder is not None:
                    raise MigrationInProgress(
                        f"instance {instance.name!r} is already being migrated (migration {holder})"
                    )
                conn.execute(
                    M.insert().values(
                        id=migration_id,
                        instance_uuid=instance.uuid,
                        instance_name=instance.name,
                        source=instance.host,
                        destination=request.get("destination"),
                        requested_destination=request.get("destination"),
                        block_migration=request.get("block_migration"),
                        status=status.value,
                        error=None,
                        progress={},
                        leftovers=[],
                        request=request,
                        abort_requested=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    EV.insert().values(migration_id=migration_id, status=status.value, at=now)
                )
                conn.execute(
                    LOCK.insert().values(
                        instance_uuid=instance.uuid, migration_id=migration_id, created_at=now
                    )
                )
        except sa.exc.IntegrityError:
            raise MigrationInProgress(
                f"instance {instance.name!r} is already being migrated"
            ) from None
        self._notify(migration_id, status.value, None)

    # ------------------------------------------------------------------- reads
    def get(self, migration_id: str) -> Migration:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(M).where(M.c.id == migration_id)).mappings().first()
            if row is None:
                raise MigrationNotFound(migration_id)
            events = (
                conn.execute(
                    sa.select(EV).where(EV.c.migration_id == migration_id).order_by(EV.c.id)
                )
                .mappings()
                .all()
            )
            attempts = (
                conn.execute(
                    sa.select(AT).where(AT.c.migration_id == migration_id).order_by(AT.c.id)
                )
                .mappings()
                .all()
            )
        return self._to_model(row, events, attempts)

    def exists(self, migration_id: str) -> bool:
        with self.db.connect() as conn:
            return conn.execute(sa.select(M.c.id).where(M.c.id == migration_id)).first() is not None

    def list(self, status: str | None = None, limit: int | None = None) -> list[Migration]:
        q = sa.select(M).order_by(M.c.created_at.desc())
        if status:
            q = q.where(M.c.status == status)
        if limit:
            q = q.limit(limit)
        with self.db.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [self._to_model(r, [], []) for r in rows]

    def field(self, migration_id: str, name: str) -> Any:
        with self.db.connect() as conn:
            return conn.execute(_select_fields((name,)), {"_id": migration_id}).scalar()

    @staticmethod
    def _to_model(row: Any, events: Any, attempts: Any) -> Migration:
        return Migration(
            id=row["id"],
            instance=row["instance_uuid"],
            instance_name=row["instance_name"],
            source=row["source"],
            destination=row["destination"],
            status=row["status"],
            block_migration=row["block_migration"],
            requested_destination=row["requested_destination"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            history=[
                StatusChange(status=e["status"], at=e["at"], detail=e["detail"]) for e in events
            ],
            attempts=[
                Attempt(host=a["host"], outcome=a["outcome"], reason=a["reason"], at=a["at"])
                for a in attempts
            ],
            progress=dict(row["progress"] or {}),
            error=row["error"],
            leftovers=list(row["leftovers"] or []),
            abort_requested=bool(row["abort_requested"]),
            transfer_started_at=row["transfer_started_at"],
        )

    # ------------------------------------------------------------------ writes
    def fields(self, migration_id: str, *names: str) -> tuple[Any, ...]:
        with self.db.connect() as conn:
            row = conn.execute(_select_fields(names), {"_id": migration_id}).first()
        if row is None:
            raise MigrationNotFound(migration_id)
        return tuple(row)

    def start(self, migration_id: str, status: MigrationStatus) -> bool:
        """Move to ``status`` unless an abort was requested (then False). One transaction."""
        return self.set_status(migration_id, status, unless_aborted=True) is not None

    def set_status(
        self,
        migration_id: str,
        status: MigrationStatus,
        detail: str | None = None,
        *,
        unlock: str | None = None,
        unless_aborted: bool = False,
        **fields: Any,
    ) -> bool | None:
        """Move to ``status`` and update ``fields`` in one transaction; ``unlock`` also releases
        that instance's lock. Returns whether the status changed, or None (and changes nothing)
        when ``unless_aborted`` and an abort was requested."""
        now = self.now()
        with self.db.connect() as conn:
            row = conn.execute(SELECT_STATUS, {"_id": migration_id}).first()
            if row is None:
                raise MigrationNotFound(migration_id)
            if unless_aborted and row.abort_requested:
                return None
            changed = row.status != status.value
            conn.execute(
                UPDATE_M, {"_id": migration_id, **fields, "status": status.value, "updated_at": now}
            )
            if changed:
                conn.execute(
                    INSERT_EV,
                    {
                        "migration_id": migration_id,
                        "status": status.value,
                        "detail": detail,
                        "at": now,
                    },
                )
            if unlock is not None:
                conn.execute(DELETE_LOCK, {"_id": migration_id, "_uuid": unlock})
        if changed:
            self._notify(migration_id, status.value, detail)
        return changed

    def note(self, migration_id: str, detail: str) -> bool:
        """Add ``detail`` to the status history under the current status (why a run stopped,
        who resumed it) unless the migration has ended (its last entry stays its end)."""
        with self.db.connect() as conn:
            row = conn.execute(SELECT_STATUS, {"_id": migration_id}).first()
            if row is None:
                raise MigrationNotFound(migration_id)
            if MigrationStatus(row.status).terminal:
                return False
            conn.execute(
                INSERT_EV,
                {
                    "migration_id": migration_id,
                    "status": row.status,
                    "detail": detail,
                    "at": self.now(),
                },
            )
        return True

    def update(self, migration_id: str, **fields: Any) -> None:
        with self.db.connect() as conn:
            conn.execute(UPDATE_M, {"_id": migration_id, **fields, "updated_at": self.now()})

    def report_progress(self, migration_id: str, progress: dict[str, Any]) -> Requests:
        """Store the transfer progress; returns what users asked of the run meanwhile (abort,
        force-complete) in the same round trip."""
        with self.db.connect() as conn:
            params = {"_id": migration_id, "progress": progress, "updated_at": self.now()}
            conn.execute(UPDATE_M, params)
            row = conn.execute(SELECT_REQUESTS, {"_id": migration_id}).first()
        if row is None:
            return Requests(False, False)
        return Requests(bool(row[0]), bool(row[1]))

    def add_leftover(self, migration_id: str, text: str) -> None:
        with self.db.connect() as conn:
            current = (
                conn.execute(sa.select(M.c.leftovers).where(M.c.id == migration_id)).scalar() or []
            )
            if text not in current:
                conn.execute(
                    M.update().where(M.c.id == migration_id).values(leftovers=[*current, text])
                )

    def record_attempt(
        self, migration_id: str, host: str, outcome: str, reason: str | None = None, **fields: Any
    ) -> None:
        """Upsert the attempt on ``host`` (and update the record's ``fields`` in the same write)."""
        with self.db.connect() as conn:
            if fields:
                conn.execute(UPDATE_M, {"_id": migration_id, **fields, "updated_at": self.now()})
            _upsert(
                conn,
                AT,
                {
                    "migration_id": migration_id,
                    "host": host,
                    "outcome": outcome,
                    "reason": reason,
                    "at": self.now(),
                },
                keys=["migration_id", "host"],
                update=["outcome", "reason"],
            )

    def rejected_hosts(self, migration_id: str) -> dict[str, str]:
        with self.db.connect() as conn:
            rows = conn.execute(SELECT_REJECTED, {"_id": migration_id}).all()
        return {h: r or "" for h, r in rows}

    def request_force_complete(self, migration_id: str) -> None:
        with self.db.connect() as conn:
            res = conn.execute(
                M.update().where(M.c.id == migration_id).values(force_complete_requested=True)
            )
            if res.rowcount == 0:
                raise MigrationNotFound(migration_id)

    def request_abort(self, migration_id: str) -> None:
        with self.db.connect() as conn:
            res = conn.execute(
                M.update().where(M.c.id == migration_id).values(abort_requested=True)
            )
            if res.rowcount == 0:
                raise MigrationNotFound(migration_id)

    def release_lock(self, instance_uuid: str, migration_id: str) -> None:
        with self.db.connect() as conn:
            conn.execute(DELETE_LOCK, {"_id": migration_id, "_uuid": instance_uuid})

    def locks(self) -> dict[str, str]:
        with self.db.connect() as conn:
            return {
                r[0]: r[1]
                for r in conn.execute(sa.select(LOCK.c.instance_uuid, LOCK.c.migration_id))
            }

    def _notify(self, migration_id: str, status: str, detail: str | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(migration_id, status, detail)
            except Exception:  # a user callback must never break a migration
                import logging

                logging.getLogger(__name__).exception("status listener failed")

    # ------------------------------------------------------------ resume state
    def mark_transfer_started(self, migration_id: str, progress: dict[str, Any]) -> None:
        """Move to running with ``progress`` and note that the transfer is being started, in one
        transaction (set before the driver is asked: a resumed run then asks the driver whether
        it really started)."""
        self.set_status(
            migration_id, MigrationStatus.RUNNING, progress=progress, transfer_started_at=self.now()
        )

    def transfer_started_at(self, migration_id: str) -> float | None:
        """When the transfer was last started; None when it never was."""
        return cast(float | None, self.field(migration_id, "transfer_started_at"))


class LeaseRepository:
    """One runner per migration: a lease row with an owner, a heartbeat and an expiry."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now

    def acquire(self, migration_id: str, owner: str, ttl: float) -> bool:
        """Take the lease if free, expired, or already ours. One conditional write: atomic."""
        now = self.now()
        with self.db.connect() as conn:
            _upsert(
                conn,
                LS,
                {
                    "migration_id": migration_id,
                    "owner": owner,
                    "acquired_at": now,
                    "heartbeat_at": now,
                    "expires_at": now + ttl,
                },
                keys=["migration_id"],
                update=[],
            )
            taken = conn.execute(
                LS.update()
                .where(
                    LS.c.migration_id == migration_id,
                    sa.or_(LS.c.owner == owner, LS.c.expires_at < now),
                )
                .values(owner=owner, heartbeat_at=now, expires_at=now + ttl)
            )
            return taken.rowcount == 1

    def take_over(self, migration_id: str, dead_owner: str, owner: str, ttl: float) -> bool:
        """Take the lease from ``dead_owner`` (known dead) before it expires. Atomic: fails if
        anyone else took it meanwhile."""
        now = self.now()
        with self.db.connect() as conn:
            res = conn.execute(
                LS.update()
                .where(LS.c.migration_id == migration_id, LS.c.owner == dead_owner)
                .values(owner=owner, acquired_at=now, heartbeat_at=now, expires_at=now + ttl)
            )
            return res.rowcount == 1

    def renew(self, migration_id: str, owner: str, ttl: float) -> bool:
        now = self.now()
        with self.db.connect() as conn:
            res = conn.execute(
                LS.update()
                .where(LS.c.migration_id == migration_id, LS.c.owner == owner)
                .values(heartbeat_at=now, expires_at=now + ttl)
            )
            return res.rowcount == 1

    def release(self, migration_id: str, owner: str) -> None:
        with self.db.connect() as conn:
            conn.execute(LS.delete().where(LS.c.migration_id == migration_id, LS.c.owner == owner))

    def get(self, migration_id: str) -> dict[str, Any] | None:
        with self.db.connect() as conn:
            row = (
                conn.execute(sa.select(LS).where(LS.c.migration_id == migration_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(LS)).mappings().all()]
