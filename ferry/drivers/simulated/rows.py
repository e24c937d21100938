"""The SQL helpers every part of the simulated driver shares: reading a host or instance row,
a host's usage, turning rows into ferry's model, and writing per-host artifacts.

Artifact origins: ``live`` belongs to the instance where it runs; ``pre`` was made by
pre_live_migration for an incoming migration; ``transfer`` is the incoming (partial) guest.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ferry.errors import HostNotFound, InstanceNotFound
from ferry.model import Host, Instance, PowerState
from ferry.model.numa import HostNumaState, Pinning

from .tables import ARTIFACTS, HOSTS, INSTANCES, insert_ignore

Row = sa.Row[Any]

LIVE, PRE, INCOMING = "live", "pre", "transfer"

MIGRATABLE_STATES = frozenset({PowerState.RUNNING.value, PowerState.PAUSED.value})


def host_row(conn: sa.Connection, host: str, *, required: bool = False) -> Row | None:
    """The host's row; ``None`` when unknown. :raises HostNotFound: unknown and ``required``."""
    row = conn.execute(sa.select(HOSTS).where(HOSTS.c.name == host)).first()
    if row is None and required:
        raise HostNotFound(host)
    return row


def instance_row(conn: sa.Connection, instance_uuid: str) -> Row | None:
    return conn.execute(sa.select(INSTANCES).where(INSTANCES.c.uuid == instance_uuid)).first()


def require_instance(conn: sa.Connection, instance_uuid: str) -> Row:
    """The instance's row. :raises InstanceNotFound:"""
    row = instance_row(conn, instance_uuid)
    if row is None:
        raise InstanceNotFound(instance_uuid)
    return row


def usage(conn: sa.Connection, host: str) -> tuple[int, int, int]:
    """(vcpus, memory_mb, disk_gb) the instances on ``host`` use."""
    row = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(INSTANCES.c.vcpus), 0),
            sa.func.coalesce(sa.func.sum(INSTANCES.c.memory_mb), 0),
            sa.func.coalesce(sa.func.sum(INSTANCES.c.disk_gb), 0),
        ).where(INSTANCES.c.host == host)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def to_host(row: Row, driver: str, used: tuple[int, int, int], numa: HostNumaState | None) -> Host:
    """A host row as ferry's :class:`Host` (``used``: its usage; ``numa``: its NUMA state)."""
    labels = dict(row.labels or {})
    return Host(
        name=row.name,
        driver=driver,
        hypervisor_type=row.hypervisor_type,
        hypervisor_version=int(row.hypervisor_version),
        vcpus=int(row.vcpus),
        memory_mb=int(row.memory_mb),
        disk_gb=int(row.disk_gb),
        vcpus_used=used[0],
        memory_mb_used=used[1],
        disk_gb_used=used[2],
        up=bool(row.up),
        enabled=bool(row.enabled),
        storage_group=row.storage_group,
        labels=labels,
        numa=numa,
        down_reason=None if row.up else "the simulated host is down",
    )


def to_instance(row: Row) -> Instance:
    """An instance row as ferry's :class:`Instance`."""
    extra: dict[str, Any] = {"dirty_rate_mbps": float(row.dirty_rate_mbps)}
    if row.cpu_policy:
        extra["cpu_policy"] = row.cpu_policy
    if row.numa_pinning:
        extra["numa_pinning"] = dict(row.numa_pinning)
        extra["pinned_pcpus"] = sorted(Pinning.from_dict(row.numa_pinning).pcpus)
    return Instance(
        uuid=row.uuid,
        name=row.name,
        host=row.host,
        power_state=row.power_state,
        vcpus=int(row.vcpus),
        memory_mb=int(row.memory_mb),
        disk_gb=int(row.disk_gb),
        volumes=[dict(v) for v in row.volumes or []],
        vifs=[dict(v) for v in row.vifs or []],
        extra=extra,
    )


def put_artifacts(
    conn: sa.Connection,
    host: str,
    instance_uuid: str,
    origin: str,
    states: dict[str, str],
    now: float,
) -> None:
    """Record artifacts ``name -> state`` of the instance on ``host`` (existing ones kept)."""
    insert_ignore(
        conn,
        ARTIFACTS,
        [
            {
                "host": host,
                "instance_uuid": instance_uuid,
                "name": name,
                "origin": origin,
                "state": state,
                "created_at": now,
            }
            for name, state in states.items()
        ],
    )
