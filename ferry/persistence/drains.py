"""Drain records (:mod:`ferry.model.drain`): the drain, its guests, and the host maintenance row
that disables a host for scheduling -- written by a drain, or by an operator
(:meth:`DrainRepository.disable`, no drain id). Each write is one short transaction; recording a
drain and disabling its host is one. :func:`_disable` is the one way a host is disabled."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import sqlalchemy as sa

from ferry.errors import DrainNotFound, HostDraining
from ferry.model.drain import Drain, DrainGuest, DrainStatus
from ferry.persistence.db import Database
from ferry.persistence.models import DRAIN_GUESTS as DG, DRAINS as DR, HOST_MAINTENANCE as HM

_ACTIVE = (DrainStatus.PLANNING.value, DrainStatus.RUNNING.value)


class DrainRepository:
    """Drains, their guests and the hosts they disabled."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now

    # ------------------------------------------------------------------ create
    def create(
        self,
        drain_id: str,
        host: str,
        *,
        reason: str | None,
        options: dict[str, Any],
        guests: Iterable[DrainGuest],
    ) -> None:
        """Record the drain (status ``running``) with its guests and disable ``host`` for
        scheduling, in one transaction. Raises :class:`HostDraining` while another drain of
        ``host`` is not finished (a finished one's maintenance row is taken over)."""
        now = self.now()
        with self.db.connect() as conn:
            busy = conn.execute(
                sa.select(DR.c.id).where(DR.c.host == host, DR.c.status.in_(_ACTIVE))
            ).scalar()
            if busy is not None:
                raise HostDraining(f"host {host!r} is already being drained (drain {busy})")
            conn.execute(
                DR.insert().values(
                    id=drain_id,
                    host=host,
                    reason=reason,
                    options=options,
                    status=DrainStatus.RUNNING.value,
                    abort_requested=False,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )
            rows = [_guest_row(drain_id, g, now) for g in guests]
            if rows:
                conn.execute(DG.insert(), rows)
            _disable(conn, host, drain_id, reason, now)

    # ------------------------------------------------------------------- reads
    def get(self, drain_id: str) -> Drain:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(DR).where(DR.c.id == drain_id)).mappings().first()
            if row is None:
                raise DrainNotFound(drain_id)
            guests = (
                conn.execute(sa.select(DG).where(DG.c.drain_id == drain_id).order_by(DG.c.position))
                .mappings()
                .all()
            )
        return _to_model(row, guests)

    def exists(self, drain_id: str) -> bool:
        with self.db.connect() as conn:
            return conn.execute(sa.select(DR.c.id).where(DR.c.id == drain_id)).first() is not None

    def list(self) -> list[Drain]:
        """Every drain, newest first, with its guests."""
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(DR).order_by(DR.c.created_at.desc())).mappings().all()
            guests = conn.execute(sa.select(DG).order_by(DG.c.position)).mappings().all()
        by_drain: dict[str, list[Any]] = {}
        for g in guests:
            by_drain.setdefault(g["drain_id"], []).append(g)
        return [_to_model(r, by_drain.get(r["id"], [])) for r in rows]

    def active(self, host: str) -> str | None:
        """The id of the drain of ``host`` that is not finished, if any."""
        with self.db.connect() as conn:
            return cast(
                str | None,
                conn.execute(
                    sa.select(DR.c.id).where(DR.c.host == host, DR.c.status.in_(_ACTIVE))
                ).scalar(),
            )

    def maintenance(self) -> dict[str, dict[str, Any]]:
        """Host -> ``{"drain": id or None, "reason": ...}`` of every disabled host (``drain``
        None: an operator disabled it)."""
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(HM)).mappings().all()
        return {r["host"]: {"drain": r["drain_id"], "reason": r["reason"]} for r in rows}

    # ------------------------------------------------------------------ writes
    def add_guest(self, drain_id: str, guest: DrainGuest) -> bool:
        """Add a guest found on the host during the drain; False when it is there already."""
        try:
            with self.db.connect() as conn:
                conn.execute(DG.insert().values(**_guest_row(drain_id, guest, self.now())))
        except sa.exc.IntegrityError:
            return False
        return True

    def update_guest(self, drain_id: str, instance_uuid: str, **fields: Any) -> None:
        values = {("migration_id" if k == "migration" else k): v for k, v in fields.items()}
        with self.db.connect() as conn:
            conn.execute(
                DG.update()
                .where(DG.c.drain_id == drain_id, DG.c.instance_uuid == instance_uuid)
                .values(updated_at=self.now(), **values)
            )

    def set_status(self, drain_id: str, status: DrainStatus) -> None:
        now = self.now()
        with self.db.connect() as conn:
            conn.execute(
                DR.update()
                .where(DR.c.id == drain_id)
                .values(
                    status=status.value,
                    updated_at=now,
                    finished_at=now if status.terminal else None,
                )
            )

    def request_abort(self, drain_id: str) -> None:
        with self.db.connect() as conn:
            res = conn.execute(DR.update().where(DR.c.id == drain_id).values(abort_requested=True))
            if res.rowcount == 0:
                raise DrainNotFound(drain_id)

    def abort_requested(self, drain_id: str) -> bool:
        with self.db.connect() as conn:
            return bool(
                conn.execute(sa.select(DR.c.abort_requested).where(DR.c.id == drain_id)).scalar()
            )

    def disable(self, host: str, reason: str | None) -> None:
        """Disable ``host`` for scheduling by an operator (no drain), with ``reason``; a host
        disabled already gets the new reason. Raises :class:`HostDraining` while a drain of
        ``host`` is running (its row stays the drain's until it ends)."""
        with self.db.connect() as conn:
            _refuse_while_draining(conn, host)
            _disable(conn, host, None, reason, self.now())

    def enable(self, host: str) -> str | None:
        """Enable ``host`` again (the drain id that disabled it, None when none did). Raises
        :class:`HostDraining` while a drain of ``host`` is not finished (checked in the same
        transaction)."""
        with self.db.connect() as conn:
            _refuse_while_draining(conn, host)
            drain_id = conn.execute(sa.select(HM.c.drain_id).where(HM.c.host == host)).scalar()
            conn.execute(HM.delete().where(HM.c.host == host))
        return cast(str | None, drain_id)


def _refuse_while_draining(conn: sa.Connection, host: str) -> None:
    busy = conn.execute(
        sa.select(DR.c.id).where(DR.c.host == host, DR.c.status.in_(_ACTIVE))
    ).scalar()
    if busy is not None:
        raise HostDraining(
            f"drain {busy} of {host} is running; abort it first (`ferry abort {busy}`)"
        )


def _disable(
    conn: sa.Connection, host: str, drain_id: str | None, reason: str | None, now: float
) -> None:
    """The one way a host is disabled for scheduling: its maintenance row (one per host)."""
    conn.execute(HM.delete().where(HM.c.host == host))
    conn.execute(HM.insert().values(host=host, drain_id=drain_id, reason=reason, since=now))


def _guest_row(drain_id: str, g: DrainGuest, now: float) -> dict[str, Any]:
    return {
        "drain_id": drain_id,
        "instance_uuid": g.instance_uuid,
        "instance_name": g.instance,
        "position": g.position,
        "state": g.state,
        "migration_id": g.migration,
        "destination": g.destination,
        "reason": g.reason,
        "updated_at": now,
    }


def _to_model(row: Any, guests: Iterable[Any]) -> Drain:
    return Drain(
        id=row["id"],
        host=row["host"],
        status=row["status"],
        reason=row["reason"],
        options=dict(row["options"] or {}),
        abort_requested=bool(row["abort_requested"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        finished_at=row["finished_at"],
        guests=[
            DrainGuest(
                instance_uuid=g["instance_uuid"],
                instance=g["instance_name"],
                state=g["state"],
                migration=g["migration_id"],
                destination=g["destination"],
                reason=g["reason"],
                position=int(g["position"]),
            )
            for g in guests
        ],
    )
