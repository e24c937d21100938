"""What the simulated cluster holds now: hosts (capacity, usage, state, NUMA), instances, where
an instance runs, the guests' pinnings and the per-host artifacts; inside the caller's
transaction. Every read at simulated time ``now`` first settles the transfers that have ended
by then, so it sees their switchovers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ferry.drivers.base import InstanceLocation
from ferry.errors import InstanceNotFound
from ferry.model import Host, Instance
from ferry.model.numa import Pinning

from . import precopy, transfers
from .numa import numa_state, pinnings
from .rows import host_row, instance_row, to_host, to_instance, usage
from .tables import ARTIFACTS, HOSTS, INSTANCES


def host_names(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(HOSTS.c.name).order_by(HOSTS.c.name)).scalars())


def host_info(conn: sa.Connection, now: float, driver: str, host: str) -> Host:
    """One host. :raises HostNotFound:"""
    transfers.settle(conn, now)
    row = host_row(conn, host, required=True)
    assert row is not None
    return to_host(row, driver, usage(conn, host), numa_state(row, pinnings(conn, host)))


def host_infos(conn: sa.Connection, now: float, driver: str, hosts: list[str]) -> list[Host]:
    """Several hosts (unknown ones left out), two queries."""
    wanted = set(hosts)
    transfers.settle(conn, now)
    used = {
        r[0]: (int(r[1]), int(r[2]), int(r[3]))
        for r in conn.execute(
            sa.select(
                INSTANCES.c.host,
                sa.func.sum(INSTANCES.c.vcpus),
                sa.func.sum(INSTANCES.c.memory_mb),
                sa.func.sum(INSTANCES.c.disk_gb),
            ).group_by(INSTANCES.c.host)
        )
    }
    rows = conn.execute(sa.select(HOSTS).order_by(HOSTS.c.name)).all()
    pins = pinnings(conn)
    return [
        to_host(r, driver, used.get(r.name, (0, 0, 0)), numa_state(r, pins.get(r.name, [])))
        for r in rows
        if r.name in wanted
    ]


def pinnings_by_name(conn: sa.Connection, now: float, host: str | None) -> dict[str, Pinning]:
    """Instance name -> its pinning (pinned instances on ``host``, or on every host)."""
    stmt = sa.select(INSTANCES.c.name, INSTANCES.c.numa_pinning).where(
        INSTANCES.c.numa_pinning.is_not(None)
    )
    if host is not None:
        stmt = stmt.where(INSTANCES.c.host == host)
    transfers.settle(conn, now)
    rows = conn.execute(stmt).all()
    return {r.name: Pinning.from_dict(r.numa_pinning) for r in rows if r.numa_pinning}


def list_instances(conn: sa.Connection, now: float, host: str | None) -> list[Instance]:
    stmt = sa.select(INSTANCES).order_by(INSTANCES.c.name)
    if host is not None:
        stmt = stmt.where(INSTANCES.c.host == host)
    transfers.settle(conn, now)
    return [to_instance(r) for r in conn.execute(stmt)]


def find_instance(conn: sa.Connection, now: float, ref: str) -> Instance | None:
    """By UUID (preferred) or name."""
    transfers.settle(conn, now)
    row = instance_row(conn, ref)
    if row is None:
        row = conn.execute(sa.select(INSTANCES).where(INSTANCES.c.name == ref)).first()
    return to_instance(row) if row is not None else None


def locate(conn: sa.Connection, now: float, instance_uuid: str) -> InstanceLocation:
    """:raises InstanceNotFound:"""
    latest = transfers.latest(conn, instance_uuid)
    progress = transfers.observe(conn, latest, now) if latest is not None else None
    row = instance_row(conn, instance_uuid)
    if row is None:
        raise InstanceNotFound(instance_uuid)
    in_flight = progress is not None and progress.state == precopy.RUNNING
    return InstanceLocation(
        instance_uuid=row.uuid,
        host=row.host,
        power_state=row.power_state,
        transfer_in_flight=in_flight,
        transfer_destination=latest.destination if in_flight and latest else None,
    )


def artifacts(
    conn: sa.Connection, now: float, host: str | None, instance_uuid: str | None
) -> list[dict[str, Any]]:
    """``{host, instance_uuid, name, origin, state}`` rows (of ``host`` / the instance)."""
    stmt = sa.select(
        ARTIFACTS.c.host,
        ARTIFACTS.c.instance_uuid,
        ARTIFACTS.c.name,
        ARTIFACTS.c.origin,
        ARTIFACTS.c.state,
    ).order_by(ARTIFACTS.c.host, ARTIFACTS.c.instance_uuid, ARTIFACTS.c.name)
    if host is not None:
        stmt = stmt.where(ARTIFACTS.c.host == host)
    if instance_uuid is not None:
        stmt = stmt.where(ARTIFACTS.c.instance_uuid == instance_uuid)
    transfers.settle(conn, now)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def set_host_state(conn: sa.Connection, host: str, up: bool | None, enabled: bool | None) -> None:
    """:raises HostNotFound:"""
    values: dict[str, Any] = {}
    if up is not None:
        values["up"] = up
    if enabled is not None:
        values["enabled"] = enabled
    host_row(conn, host, required=True)
    if values:
        conn.execute(sa.update(HOSTS).where(HOSTS.c.name == host).values(**values))
