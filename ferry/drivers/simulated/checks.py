"""The simulated driver's pre-checks: can the destination take the instance (leaving a check
marker there), can the source send it; inside the caller's transaction.

A check returns the error to raise instead of raising it (see :mod:`.transfer`), except for
an unknown instance or source host, which roll the transaction back.
"""

from __future__ import annotations

import uuid as uuidlib

import sqlalchemy as sa

from ferry.errors import FerryError, MigrationPreCheckError
from ferry.model import MigrateData
from ferry.model.numa import Pinning

from .faults import fault_error, fire
from .numa import fit
from .rows import MIGRATABLE_STATES, Row, host_row, require_instance, usage
from .tables import MARKERS, insert_ignore
from .transfers import settle

#: Nova's message (InvalidSharedStorage) for a live migration without block migration or shared
#: storage of an instance with a local disk
NO_SHARED_STORAGE_REASON = (
    "live migration can not be used without shared storage except a booted from volume VM "
    "which does not have a local disk"
)


def check_destination(
    conn: sa.Connection,
    now: float,
    instance_uuid: str,
    destination: str,
    block_migration: bool | None,
) -> MigrateData | FerryError:
    """See :meth:`SimulatedDriver.check_can_live_migrate_destination`."""
    settle(conn, now)
    inst = require_instance(conn, instance_uuid)
    fault = fire(conn, destination, "check_destination")
    if fault is not None:
        return fault_error(fault, MigrationPreCheckError, destination)
    source = host_row(conn, inst.host, required=True)
    assert source is not None
    dest = host_row(conn, destination)
    shared = bool(
        dest is not None and source.storage_group and source.storage_group == dest.storage_group
    )
    reason = destination_problem(conn, inst, source, dest, shared)
    fitted: Pinning | str | None = None
    if reason is None and dest is not None and inst.cpu_policy == "dedicated":
        fitted = fit(conn, inst, dest)
        reason = fitted if isinstance(fitted, str) else None
    if reason is not None:
        return MigrationPreCheckError(destination, reason, "check_destination")
    assert dest is not None
    insert_ignore(
        conn,
        MARKERS,
        [{"instance_uuid": inst.uuid, "host": destination, "source": inst.host, "created_at": now}],
    )
    block = (not shared) if block_migration is None else block_migration
    data = MigrateData(
        instance_uuid=inst.uuid,
        source=inst.host,
        destination=destination,
        block_migration=block,
        shared_storage=shared,
        driver_data={
            "token": uuidlib.uuid4().hex,
            "check_marker": True,
            "source_storage_group": source.storage_group,
            "destination_storage_group": dest.storage_group,
            "destination_hypervisor_version": int(dest.hypervisor_version),
            "bandwidth_mbps": min(source.bandwidth_mbps, dest.bandwidth_mbps),
        },
    )
    if isinstance(fitted, Pinning):
        data = data.with_pinning(fitted)
    return data


def destination_problem(
    conn: sa.Connection, inst: Row, source: Row, dest: Row | None, shared: bool
) -> str | None:
    """Why ``dest`` cannot take ``inst`` from ``source`` (its NUMA fit aside), or None."""
    if dest is None:
        return "host is not part of the simulated cluster"
    if dest.name == inst.host:
        return "the instance already runs on this host"
    if not dest.up:
        return "host is down"
    if dest.hypervisor_type != source.hypervisor_type:
        return (
            f"hypervisor type {dest.hypervisor_type} differs from the source's "
            f"{source.hypervisor_type}"
        )
    if dest.hypervisor_version < source.hypervisor_version:
        return (
            f"hypervisor version {dest.hypervisor_version} is older than the source's "
            f"{source.hypervisor_version}"
        )
    vcpus, memory, disk = usage(conn, dest.name)
    if dest.memory_mb - memory < inst.memory_mb:
        return (
            f"not enough free memory: {dest.memory_mb - memory} MiB free, "
            f"{inst.memory_mb} MiB needed"
        )
    if dest.vcpus - vcpus < inst.vcpus:
        return f"not enough free vcpus: {dest.vcpus - vcpus} free, {inst.vcpus} needed"
    if not shared and dest.disk_gb - disk < inst.disk_gb:
        return f"not enough free disk: {dest.disk_gb - disk} GiB free, {inst.disk_gb} GiB needed"
    return None


def remove_marker(conn: sa.Connection, instance_uuid: str, host: str) -> None:
    """Remove the destination check's marker of the instance on ``host`` (no-op when gone)."""
    conn.execute(
        MARKERS.delete().where(MARKERS.c.instance_uuid == instance_uuid, MARKERS.c.host == host)
    )


def markers(conn: sa.Connection, host: str | None) -> list[dict[str, object]]:
    """The check markers (of ``host``, or all)."""
    stmt = sa.select(MARKERS).order_by(MARKERS.c.host, MARKERS.c.instance_uuid)
    if host is not None:
        stmt = stmt.where(MARKERS.c.host == host)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def check_source(
    conn: sa.Connection, now: float, instance_uuid: str, data: MigrateData
) -> MigrateData | FerryError:
    """See :meth:`SimulatedDriver.check_can_live_migrate_source`."""
    settle(conn, now)
    inst = require_instance(conn, instance_uuid)
    local_disk = inst.disk_gb > 0 or any(not v.get("shared", True) for v in inst.volumes)
    fault = fire(conn, data.source, "check_source")
    reason: str | None = None
    if fault is not None:
        return fault_error(fault, MigrationPreCheckError, data.source)
    if inst.host != data.source:
        reason = f"the instance runs on {inst.host}, not on {data.source}"
    elif inst.power_state not in MIGRATABLE_STATES:
        reason = f"the instance is {inst.power_state}; it must be running or paused"
    elif data.block_migration and data.shared_storage:
        reason = "cannot block-migrate an instance on shared storage"
    elif not data.block_migration and not data.shared_storage and local_disk:
        reason = NO_SHARED_STORAGE_REASON
    if reason is not None:
        return MigrationPreCheckError(data.source, reason, "check_source")
    return data.with_driver_data(source_checked=True, has_local_disk=local_disk)
