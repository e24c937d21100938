"""A transfer row and its life: inserted with its parameters, its state computed with the
pre-copy model (:mod:`.precopy`) whenever it is observed, and its end -- on completion the
switchover: the instance moved to the destination -- written once, the first time anybody
observes it as ended (:func:`observe`, :func:`settle`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import sqlalchemy as sa

from ferry.drivers.base import TransferPolicy
from ferry.model import MigrateData, PowerState, TransferProgress
from ferry.model.numa import Pinning

from . import precopy
from .cluster import DEFAULT_FAIL_AT
from .faults import fire
from .rows import INCOMING, LIVE, Row, put_artifacts
from .tables import ARTIFACTS, INSTANCES, TRANSFERS, insert_ignore

#: the driver's logger (its records keep the name they had before the driver was split)
log = logging.getLogger("ferry.drivers.simulated.driver")

#: a ``never_converge`` fault makes the guest dirty memory this many times faster than the link
NEVER_CONVERGE_FACTOR = 2.0


def latest(conn: sa.Connection, instance_uuid: str, *, for_update: bool = False) -> Row | None:
    """The instance's most recent transfer row (locked with ``for_update``)."""
    stmt = (
        sa.select(TRANSFERS)
        .where(TRANSFERS.c.instance_uuid == instance_uuid)
        .order_by(TRANSFERS.c.id.desc())
        .limit(1)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


def matches(row: Row, data: MigrateData) -> bool:
    """Whether the transfer row belongs to the migration ``data`` describes."""
    if row.source != data.source or row.destination != data.destination:
        return False
    token = data.driver_data.get("token")
    return token is None or row.token is None or row.token == token


def insert(
    conn: sa.Connection,
    inst: Row,
    source: Row,
    dest: Row,
    data: MigrateData,
    policy: TransferPolicy,
    now: float,
    pinning: Pinning | None = None,
) -> None:
    """Start a transfer of ``inst`` (once: a racing second insert is a no-op); the destination's
    ``never_converge`` and ``transfer`` faults fire here."""
    bandwidth = min(float(source.bandwidth_mbps), float(dest.bandwidth_mbps))
    if policy.bandwidth_mbps > 0:
        bandwidth = min(bandwidth, float(policy.bandwidth_mbps))
    dirty = float(inst.dirty_rate_mbps) if inst.power_state == PowerState.RUNNING else 0.0
    values = {
        "instance_uuid": inst.uuid,
        "active_key": inst.uuid,
        "source": data.source,
        "destination": data.destination,
        "state": precopy.RUNNING,
        "started_at": now,
        "ended_at": None,
        "memory_mb": int(inst.memory_mb),
        "dirty_rate_mbps": dirty,
        "bandwidth_mbps": bandwidth,
        "downtime_history": [[now, int(policy.initial_downtime_ms)]],
        "force_at": None,
        "force_lever": None,
        "fail_at": None,
        "fail_message": None,
        "token": data.driver_data.get("token"),
        "policy": dataclasses.asdict(policy),
        "result": None,
        "numa_pinning": pinning.to_dict() if pinning is not None else None,
    }
    if not insert_ignore(conn, TRANSFERS, [values]):
        return  # another process started it a moment ago
    updates: dict[str, Any] = {}
    if fire(conn, dest.name, "never_converge") is not None:
        updates["dirty_rate_mbps"] = max(dirty, bandwidth * NEVER_CONVERGE_FACTOR)
    fault = fire(conn, dest.name, "transfer")
    if fault is not None:
        updates["fail_at"] = fault.at if fault.at is not None else DEFAULT_FAIL_AT
        updates["fail_message"] = fault.message or f"simulated transfer fault on {dest.name}"
    if updates:
        conn.execute(
            sa.update(TRANSFERS).where(TRANSFERS.c.active_key == inst.uuid).values(**updates)
        )
    put_artifacts(conn, dest.name, inst.uuid, INCOMING, {"guest": "incoming"}, now)


def compute(row: Row, now: float) -> TransferProgress:
    """The running transfer's state at ``now`` (pure: nothing written)."""
    started = float(row.started_at)
    return precopy.simulate(
        memory_mb=float(row.memory_mb),
        dirty_rate_mbps=float(row.dirty_rate_mbps),
        bandwidth_mbps=float(row.bandwidth_mbps),
        downtime_history=[(float(t) - started, float(ms)) for t, ms in row.downtime_history],
        elapsed_s=now - started,
        force_at=None if row.force_at is None else float(row.force_at) - started,
        post_copy=row.force_lever == "post-copy",
        fail_fraction=row.fail_at,
        fail_message=row.fail_message,
    )


def observe(conn: sa.Connection, row: Row, now: float) -> TransferProgress:
    """The transfer's state now; its end is materialised the first time it is seen."""
    if row.state != precopy.RUNNING:
        if row.result:
            return TransferProgress.from_dict(row.result)
        return TransferProgress(state=row.state)
    progress = compute(row, now)
    if progress.state != precopy.RUNNING:
        finish(conn, row, progress)
    return progress


def settle(conn: sa.Connection, now: float) -> None:
    """Materialise every transfer that has ended by ``now`` (one query when none runs)."""
    rows = conn.execute(sa.select(TRANSFERS).where(TRANSFERS.c.state == precopy.RUNNING)).all()
    for row in rows:
        observe(conn, row, now)


def finish(conn: sa.Connection, row: Row, progress: TransferProgress) -> None:
    """Write a transfer's end once (conditional UPDATE); on completion, the switchover."""
    done = conn.execute(
        sa.update(TRANSFERS)
        .where(TRANSFERS.c.id == row.id, TRANSFERS.c.state == precopy.RUNNING)
        .values(
            state=progress.state,
            active_key=None,
            ended_at=float(row.started_at) + progress.elapsed_s,
            result=progress.to_dict(),
        )
    ).rowcount
    if not done or progress.state != precopy.COMPLETED:
        return
    uuid, src, dest = row.instance_uuid, row.source, row.destination
    moved: dict[str, Any] = {"host": dest}
    if row.numa_pinning:  # the guest runs pinned as the transfer was told
        moved["numa_pinning"] = row.numa_pinning
    conn.execute(
        sa.update(INSTANCES)
        .where(INSTANCES.c.uuid == uuid, INSTANCES.c.host == src)
        .values(**moved)
    )
    put_artifacts(conn, dest, uuid, LIVE, {"guest": "running"}, float(row.started_at))
    conn.execute(
        sa.update(ARTIFACTS)
        .where(ARTIFACTS.c.host == dest, ARTIFACTS.c.instance_uuid == uuid)
        .values(origin=LIVE)
    )
    conn.execute(
        sa.update(ARTIFACTS)
        .where(ARTIFACTS.c.instance_uuid == uuid, ARTIFACTS.c.name == "guest")
        .values(state=sa.case((ARTIFACTS.c.host == dest, "running"), else_="migrated"))
    )
    log.info("simulated switchover of %s from %s to %s", uuid, src, dest)


def cancel(conn: sa.Connection, row: Row, progress: TransferProgress, now: float) -> None:
    """End a running transfer as ``cancelled`` (the instance stays on the source)."""
    result = dataclasses.replace(progress, state="cancelled", error="aborted by request")
    conn.execute(
        sa.update(TRANSFERS)
        .where(TRANSFERS.c.id == row.id, TRANSFERS.c.state == precopy.RUNNING)
        .values(state="cancelled", active_key=None, ended_at=now, result=result.to_dict())
    )
