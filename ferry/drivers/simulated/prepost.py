"""The steps around the transfer: pre_live_migration and its rollback on the destination, and
the post steps at the source and the destination; inside the caller's transaction.

A step returns the error to raise instead of raising it (see :mod:`.transfer`).
"""

from __future__ import annotations

import sqlalchemy as sa

from ferry.errors import DriverError, FerryError
from ferry.model import MigrateData

from . import precopy, transfers
from .checks import remove_marker
from .faults import fault_error, fire
from .rows import INCOMING, LIVE, PRE, Row, host_row, instance_row, put_artifacts, require_instance
from .tables import ARTIFACTS


def pre_live_migration(
    conn: sa.Connection, now: float, instance_uuid: str, data: MigrateData
) -> MigrateData | FerryError:
    """See :meth:`SimulatedDriver.pre_live_migration`."""
    op = "pre_live_migration"
    dest = data.destination
    error: FerryError | None = None
    transfers.settle(conn, now)
    inst = require_instance(conn, instance_uuid)
    host = host_row(conn, dest)
    wanted = pre_artifact_states(inst, data)
    if host is None:
        error = DriverError(dest, op, "host is not part of the simulated cluster")
    elif not host.up:
        error = DriverError(dest, op, "host is down")
    elif inst.host != dest:
        fault = fire(conn, dest, "pre_live_migration")
        if fault is not None:
            wanted = {k: v for k, v in wanted.items() if not k.startswith("vif:")}
            error = fault_error(fault, DriverError, dest, op)
        put_artifacts(conn, dest, inst.uuid, PRE, wanted, now)
    made = conn.execute(
        sa.select(ARTIFACTS.c.name).where(
            ARTIFACTS.c.host == dest,
            ARTIFACTS.c.instance_uuid == inst.uuid,
            ARTIFACTS.c.origin == PRE,
        )
    ).scalars()
    listed = sorted(set(made))
    if error is not None:
        return error
    return data.with_driver_data(pre_artifacts=listed)


def pre_artifact_states(inst: Row, data: MigrateData) -> dict[str, str]:
    """What pre_live_migration makes on the destination: name -> state."""
    states: dict[str, str] = {}
    if not data.shared_storage:
        states["instance_dir"] = "present"
    states.update({f"volume:{v['id']}": "connected" for v in inst.volumes or []})
    states.update({f"vif:{v['id']}": "bound" for v in inst.vifs or []})
    return states


def rollback_at_destination(
    conn: sa.Connection, now: float, data: MigrateData
) -> FerryError | None:
    """See :meth:`SimulatedDriver.rollback_live_migration_at_destination`."""
    dest = data.destination
    latest = transfers.latest(conn, data.instance_uuid, for_update=True)
    if latest is not None and transfers.matches(latest, data):
        progress = transfers.observe(conn, latest, now)
        if progress.state == precopy.RUNNING:
            transfers.cancel(conn, latest, progress, now)
    inst = instance_row(conn, data.instance_uuid)
    if inst is not None and inst.host == dest:
        return DriverError(
            dest,
            "rollback_live_migration_at_destination",
            f"the instance already runs on {dest} (switchover happened); nothing removed",
        )
    listed = [str(n) for n in data.driver_data.get("pre_artifacts", [])]
    ours = sa.or_(ARTIFACTS.c.origin.in_((PRE, INCOMING)), ARTIFACTS.c.name.in_(listed))
    conn.execute(
        ARTIFACTS.delete().where(
            ARTIFACTS.c.host == dest,
            ARTIFACTS.c.instance_uuid == data.instance_uuid,
            ours,
        )
    )
    return None


def post_at_source(conn: sa.Connection, now: float, data: MigrateData) -> FerryError | None:
    """See :meth:`SimulatedDriver.post_live_migration_at_source`."""
    op = "post_live_migration_at_source"
    transfers.settle(conn, now)
    inst = require_instance(conn, data.instance_uuid)
    fault = fire(conn, data.source, "post_at_source")
    if fault is not None:
        return fault_error(fault, DriverError, data.source, op)
    if inst.host == data.source:
        return DriverError(data.source, op, "the instance still runs on the source")
    conn.execute(
        ARTIFACTS.delete().where(
            ARTIFACTS.c.host == data.source,
            ARTIFACTS.c.instance_uuid == inst.uuid,
        )
    )
    return None


def post_at_destination(conn: sa.Connection, now: float, data: MigrateData) -> FerryError | None:
    """See :meth:`SimulatedDriver.post_live_migration_at_destination`."""
    op = "post_live_migration_at_destination"
    dest = data.destination
    transfers.settle(conn, now)
    inst = require_instance(conn, data.instance_uuid)
    fault = fire(conn, dest, "post_at_destination")
    if fault is not None:
        return fault_error(fault, DriverError, dest, op)
    if inst.host != dest:
        return DriverError(dest, op, f"the instance does not run on {dest}")
    wanted = {"guest": "persistent"}
    wanted.update({f"vif:{v['id']}": "plugged" for v in inst.vifs})
    put_artifacts(conn, dest, inst.uuid, LIVE, wanted, now)
    conn.execute(
        sa.update(ARTIFACTS)
        .where(
            ARTIFACTS.c.host == dest,
            ARTIFACTS.c.instance_uuid == inst.uuid,
            ARTIFACTS.c.name.in_(list(wanted)),
        )
        .values(
            state=sa.case((ARTIFACTS.c.name == "guest", "persistent"), else_="plugged"),
            origin=LIVE,
        )
    )
    remove_marker(conn, inst.uuid, dest)
    return None
