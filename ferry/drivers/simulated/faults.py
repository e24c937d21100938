"""Injected faults of the simulated cluster: persisted rows, each failing one phase on one host
the next ``times`` times (0 = every time), taken atomically so that racing processes fire a
fault exactly as often as it allows."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from ferry.errors import DriverError, FerryError, MigrationPreCheckError

from .cluster import PHASES
from .rows import Row, host_row
from .tables import FAULTS


def fault_values(
    host: str, phase: str, times: int, at: float | None, message: str | None
) -> dict[str, Any]:
    """A new fault row (never fired)."""
    return {
        "host": host,
        "phase": phase,
        "times": times,
        "fired": 0,
        "at": at,
        "message": message,
        "created_at": time.time(),
    }


def check_fault(phase: str, times: int, at: float | None) -> None:
    """:raises ValueError: bad phase, times or at (see :meth:`SimulatedDriver.inject_fault`)."""
    if phase not in PHASES:
        raise ValueError(f"unknown fault phase {phase!r} (expected one of {', '.join(PHASES)})")
    if times < 0:
        raise ValueError("times must be >= 0 (0 = every time)")
    if at is not None and (phase != "transfer" or not 0 <= at < 1):
        raise ValueError("at only applies to phase 'transfer' and must be in [0, 1)")


def inject(
    conn: sa.Connection,
    host: str,
    phase: str,
    times: int,
    at: float | None,
    message: str | None,
) -> int:
    """Insert a fault (checked by :func:`check_fault`); returns its id. :raises HostNotFound:"""
    host_row(conn, host, required=True)
    result = conn.execute(FAULTS.insert().values(**fault_values(host, phase, times, at, message)))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def clear(conn: sa.Connection, host: str | None, phase: str | None) -> int:
    """Remove faults (all, or those of ``host`` / ``phase``); returns how many."""
    stmt = FAULTS.delete()
    if host is not None:
        stmt = stmt.where(FAULTS.c.host == host)
    if phase is not None:
        stmt = stmt.where(FAULTS.c.phase == phase)
    return conn.execute(stmt).rowcount or 0


def listing(conn: sa.Connection) -> list[dict[str, Any]]:
    """The faults in force, with how often each has fired."""
    rows = conn.execute(sa.select(FAULTS).order_by(FAULTS.c.id)).all()
    return [dict(r._mapping) for r in rows]


def fire(conn: sa.Connection, host: str, phase: str) -> Row | None:
    """Take one firing of a live fault for (host, phase), atomically; None when none."""
    live = sa.or_(FAULTS.c.times == 0, FAULTS.c.fired < FAULTS.c.times)
    rows = conn.execute(
        sa.select(FAULTS)
        .where(FAULTS.c.host == host, FAULTS.c.phase == phase, live)
        .order_by(FAULTS.c.id)
    ).all()
    for row in rows:
        taken = conn.execute(
            sa.update(FAULTS).where(FAULTS.c.id == row.id, live).values(fired=FAULTS.c.fired + 1)
        ).rowcount
        if taken:
            return row
    return None


def fault_error(
    fault: Row, kind: type[FerryError], host: str, operation: str | None = None
) -> FerryError:
    """The error a fired fault raises: a :class:`MigrationPreCheckError` for the checks, else a
    :class:`DriverError` of ``operation`` (the fault's phase by default)."""
    message = fault.message or f"simulated {fault.phase} fault on {host}"
    if kind is MigrationPreCheckError:
        return MigrationPreCheckError(host, message, fault.phase)
    return DriverError(host, operation or fault.phase, message)
