"""The transfer phase of the simulated driver: start, progress, max downtime, force-complete and
abort, each inside the caller's transaction (``conn``, read at simulated time ``now``).

An operation returns the error to raise instead of raising it, so that the driver raises it
*after* the transaction commits (a fired fault's count and any partial work persist).
"""

from __future__ import annotations

import sqlalchemy as sa

from ferry.drivers.base import TransferPolicy
from ferry.errors import DriverError, FerryError, TransferFailed
from ferry.model import MigrateData, TransferProgress

from . import precopy, transfers
from .numa import transfer_pinning
from .rows import MIGRATABLE_STATES, host_row, require_instance
from .tables import TRANSFERS


def start(
    conn: sa.Connection, now: float, data: MigrateData, policy: TransferPolicy
) -> FerryError | None:
    """See :meth:`SimulatedDriver.start_transfer`."""
    latest = transfers.latest(conn, data.instance_uuid, for_update=True)
    token = data.driver_data.get("token")
    if latest is not None and token is not None and latest.token == token:
        transfers.observe(conn, latest, now)  # this migration's transfer: never twice
        return None
    if latest is not None and latest.state == precopy.RUNNING:
        if transfers.observe(conn, latest, now).state == precopy.RUNNING:
            return None
        latest = transfers.latest(conn, data.instance_uuid)
    inst = require_instance(conn, data.instance_uuid)
    if (
        latest is not None
        and latest.state == precopy.COMPLETED
        and transfers.matches(latest, data)
        and inst.host == data.destination
    ):
        return None
    source = host_row(conn, data.source)
    dest = host_row(conn, data.destination)
    if inst.host != data.source:
        return TransferFailed(
            data.source, f"the instance runs on {inst.host}, not on {data.source}"
        )
    if inst.power_state not in MIGRATABLE_STATES:
        return TransferFailed(data.source, f"the instance is {inst.power_state}")
    if source is None or not source.up:
        return TransferFailed(data.source, "the source host is down")
    if dest is None or not dest.up:
        return TransferFailed(data.destination, "the destination host is down")
    pinning = transfer_pinning(conn, inst, dest, data)
    if isinstance(pinning, str):
        return TransferFailed(data.destination, pinning)
    transfers.insert(conn, inst, source, dest, data, policy, now, pinning)
    return None


def progress(conn: sa.Connection, now: float, data: MigrateData) -> TransferProgress:
    """This migration's transfer at ``now`` (``none`` when it has none)."""
    latest = transfers.latest(conn, data.instance_uuid)
    if latest is None or not transfers.matches(latest, data):
        return TransferProgress(state="none")
    return transfers.observe(conn, latest, now)


def set_max_downtime(conn: sa.Connection, now: float, data: MigrateData, downtime_ms: int) -> None:
    """Append ``downtime_ms`` from ``now`` on to the running transfer's downtime history."""
    latest = transfers.latest(conn, data.instance_uuid, for_update=True)
    if latest is None or not transfers.matches(latest, data):
        return
    if transfers.observe(conn, latest, now).state != precopy.RUNNING:
        return
    history = [list(e) for e in latest.downtime_history]
    at = max(now, max((float(t) for t, _ in history), default=now))
    history.append([at, int(downtime_ms)])
    conn.execute(
        sa.update(TRANSFERS).where(TRANSFERS.c.id == latest.id).values(downtime_history=history)
    )


def force_complete(conn: sa.Connection, now: float, data: MigrateData) -> str | FerryError:
    """The lever that finishes the transfer (see :meth:`SimulatedDriver.force_complete`)."""
    latest = transfers.latest(conn, data.instance_uuid, for_update=True)
    observed = None
    if latest is not None and transfers.matches(latest, data):
        observed = transfers.observe(conn, latest, now)
    if latest is None or observed is None:
        return DriverError(data.source, "force_complete", "no transfer is in flight")
    if observed.state == precopy.COMPLETED:
        return latest.force_lever or "none"
    if observed.state != precopy.RUNNING:
        return DriverError(data.source, "force_complete", f"the transfer {observed.state}")
    if latest.force_lever:
        return latest.force_lever
    lever = "post-copy" if (latest.policy or {}).get("permit_post_copy") else "pause"
    conn.execute(
        sa.update(TRANSFERS)
        .where(TRANSFERS.c.id == latest.id)
        .values(force_at=now, force_lever=lever)
    )
    return lever


def abort(conn: sa.Connection, now: float, data: MigrateData) -> FerryError | None:
    """Cancel this migration's transfer in flight (see :meth:`SimulatedDriver.abort_transfer`)."""
    latest = transfers.latest(conn, data.instance_uuid, for_update=True)
    if latest is None or not transfers.matches(latest, data):
        return None
    observed = transfers.observe(conn, latest, now)
    if observed.state == precopy.RUNNING:
        transfers.cancel(conn, latest, observed, now)
    elif observed.state == precopy.COMPLETED:
        return DriverError(
            data.destination,
            "abort_transfer",
            f"the switchover already happened: the instance runs on {data.destination}",
        )
    return None
