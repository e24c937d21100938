"""The NUMA state of a simulated host: its cells (a host row's ``numa_cells``) and what pinned
guests hold there -- the instances on it and the transfers in flight into it (an incoming guest
already holds its pCPUs, as libvirt's incoming domain does) -- and where a pinned guest fits."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ferry.model import MigrateData
from ferry.model.numa import GuestRequest, HostNumaState, Pinning

from . import precopy
from .cluster import topology_of
from .rows import Row
from .tables import INSTANCES, TRANSFERS


def pinnings(conn: sa.Connection, host: str | None = None) -> Any:
    """What pinned guests hold per host: the instances there and the transfers in flight into
    it. A list of pinnings for one ``host``; host -> list when ``host`` is None."""
    inst = sa.select(INSTANCES.c.host, INSTANCES.c.numa_pinning).where(
        INSTANCES.c.numa_pinning.is_not(None)
    )
    moving = sa.select(TRANSFERS.c.destination, TRANSFERS.c.numa_pinning).where(
        TRANSFERS.c.state == precopy.RUNNING, TRANSFERS.c.numa_pinning.is_not(None)
    )
    if host is not None:
        inst = inst.where(INSTANCES.c.host == host)
        moving = moving.where(TRANSFERS.c.destination == host)
    out: dict[str, list[Pinning]] = {}
    for h, data in [*conn.execute(inst).all(), *conn.execute(moving).all()]:
        if data:
            out.setdefault(h, []).append(Pinning.from_dict(data))
    return out.get(host, []) if host is not None else out


def numa_state(row: Row, held: list[Pinning]) -> HostNumaState | None:
    """The host's NUMA state with the pinnings ``held`` (None: it models no NUMA cells)."""
    if not row.numa_cells:
        return None
    state = HostNumaState(topology_of(row.numa_cells))
    for p in held:
        state = state.with_pinning(p)
    return state


def fit(conn: sa.Connection, inst: Row, dest: Row) -> Pinning | str:
    """The best-fit pinning of a pinned guest on ``dest`` now, or why none fits."""
    state = numa_state(dest, pinnings(conn, dest.name))
    if state is None:
        return "the host has no NUMA cells; a guest with pinned CPUs needs them"
    return state.fit(GuestRequest(int(inst.vcpus), int(inst.memory_mb), pinned=True))


def transfer_pinning(
    conn: sa.Connection, inst: Row, dest: Row, data: MigrateData
) -> Pinning | str | None:
    """The pinning a transfer of ``inst`` to ``dest`` uses (None: not pinned), or why the
    one handed in ``data.pinning`` cannot be used."""
    if inst.cpu_policy != "dedicated":
        return None
    pinning = data.pinning
    if pinning is None:
        return fit(conn, inst, dest)
    state = numa_state(dest, pinnings(conn, dest.name))
    cell = next((c for c in state.topology.cells if c.id == pinning.cell), None) if state else None
    if state is None or cell is None:
        return f"{dest.name} has no NUMA cell {pinning.cell}"
    if not pinning.pcpus <= cell.cpus:
        return f"pCPUs {sorted(pinning.pcpus - cell.cpus)} are not in NUMA cell {cell.id}"
    taken = set().union(*state.pinned_by_cell.values()) & pinning.pcpus
    if taken:
        return f"pCPUs {sorted(taken)} of {dest.name} are already pinned by another guest"
    free = next(c for c in state.free if c.cell == cell.id)
    if free.free_mb < pinning.memory_mb:
        return f"NUMA cell {cell.id} of {dest.name} has only {free.free_mb} MiB free"
    return pinning
