"""The host state cache: what the scheduler knows about every host, kept in the database.

Drivers report each host's capacity, usage, labels and NUMA state (:class:`~ferry.model.Host`,
the NUMA state as ``labels["ferry.numa"]``); :func:`write_reports` caches the reports in
``ferry_host_states`` and ``ferry_host_numa_cells``, so choosing a destination reads the database
and never asks every hypervisor.

Between two reports ferry keeps the usage right itself: a claim turned into usage on completion
adds the instance on its destination, a source released after post-migration removes it there
(:mod:`ferry.scheduler.claims`). Two rules keep a driver report from undoing that:

* a host with a claim or a source hold in ``ferry_claims`` (a migration in flight into or out of
  it) keeps its cached usage and pinned pCPUs: its driver already shows the instance moved at the
  switchover, before ferry's accounting does; capacity, up/enabled and labels are still updated;
* a report read before ferry last changed a host's usage (``accounted_at``) does not overwrite
  it, and an older report never overwrites a newer one.

Everything here takes a Core connection inside the caller's transaction.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferry.model import Host
from ferry.model.numa import HostNumaState, NumaCell, NumaTopology
from ferry.persistence.db import dialect_insert
from ferry.persistence.models import (
    CLAIMS as CL,
    HOST_MAINTENANCE as HM,
    HOST_NUMA_CELLS as CELLS,
    HOST_STATES as HS,
    PCPU_CLAIMS as PC,
)
from ferry.scheduler.filters import HostCandidate

#: hosts a drain disabled for scheduling (until ``undrain``): read as ``enabled = False``

#: ``Host.labels`` keys naming the host aggregates a host belongs to (``groups``: comma-separated)
GROUP_LABELS = ("group", "groups")

#: host capacity and state: always taken from the newest report
_CAPACITY = (
    "driver",
    "hypervisor_type",
    "hypervisor_version",
    "vcpus",
    "memory_mb",
    "disk_gb",
    "up",
    "enabled",
    "storage_group",
    "down_reason",
    "labels",
    "groups",
    "updated_at",
)
#: usage: taken from a report only when the host has no migration in flight and ferry did not
#: account a change after the report was read
_USAGE = ("vcpus_used", "memory_mb_used", "disk_gb_used")


def host_groups(labels: Mapping[str, str]) -> frozenset[str]:
    """The host aggregates named by a host's labels (``group = "a"``, ``groups = "a,b"``)."""
    out: set[str] = set()
    for key in GROUP_LABELS:
        out.update(g.strip() for g in str(labels.get(key, "")).split(",") if g.strip())
    return frozenset(out)


def encode_groups(groups: Iterable[str]) -> str:
    """``,a,b,``: a group matches with ``LIKE '%,a,%'``, portable across SQLite and PostgreSQL."""
    return "," + "".join(f"{g}," for g in sorted(set(groups)))


@dataclass(frozen=True)
class CellUsage:
    """One cached NUMA cell: pCPUs and memory, what guests pin / use, what claims hold."""

    cell: int
    cpus: tuple[int, ...]
    memory_mb: int
    pinned: frozenset[int] = frozenset()
    used_mb: int = 0
    claimed: frozenset[int] = frozenset()
    claimed_mb: int = 0

    @property
    def free_pcpus(self) -> tuple[int, ...]:
        return tuple(c for c in self.cpus if c not in self.pinned and c not in self.claimed)

    @property
    def free_mb(self) -> int:
        return self.memory_mb - self.used_mb - self.claimed_mb

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "pcpus": list(self.cpus),
            "memory_mb": self.memory_mb,
            "pinned_pcpus": sorted(self.pinned),
            "claimed_pcpus": sorted(self.claimed),
            "free_pcpus": list(self.free_pcpus),
            "used_mb": self.used_mb,
            "claimed_mb": self.claimed_mb,
            "free_mb": self.free_mb,
        }


@dataclass(frozen=True)
class HostState:
    """A cached host: its report, what migrations in flight claimed on it and its NUMA cells."""

    host: Host
    claimed: tuple[int, int, int] = (0, 0, 0)
    cells: tuple[CellUsage, ...] = ()
    in_flight: int = 0
    groups: frozenset[str] = field(default_factory=frozenset)
    #: the drain that disabled the host (``{"drain": id, "reason": text}``), if one did
    maintenance: Mapping[str, Any] | None = None

    @property
    def numa(self) -> HostNumaState | None:
        """Topology with pinned *and* claimed pCPUs / memory (what a new guest must avoid)."""
        if not self.cells:
            return None
        topology = NumaTopology(
            tuple(NumaCell(c.cell, frozenset(c.cpus), c.memory_mb) for c in self.cells)
        )
        return HostNumaState(
            topology,
            {c.cell: c.pinned | c.claimed for c in self.cells},
            {c.cell: c.used_mb + c.claimed_mb for c in self.cells},
        )

    def candidate(self) -> HostCandidate:
        return HostCandidate(
            self.host,
            *self.claimed,
            numa=self.numa,
            in_flight=self.in_flight,
            groups=self.groups,
        )

    def to_dict(self) -> dict[str, Any]:
        """What ``ferry hosts --json`` prints for the host."""
        cv, cm, cd = self.claimed
        return dict(
            self.host.to_dict(),
            claimed_vcpus=cv,
            claimed_memory_mb=cm,
            claimed_disk_gb=cd,
            migrations_in_flight=self.in_flight,
            groups=sorted(self.groups),
            numa_cells=[c.to_dict() for c in self.cells],
            drain=(self.maintenance or {}).get("drain"),
            disabled_reason=(self.maintenance or {}).get("reason"),
        )


# ------------------------------------------------------------------------------------ writes
@functools.cache
def _upserts(dialect: str) -> tuple[Any, Any]:
    """The report and cell upserts of :func:`write_reports` for ``dialect``, built once
    (building an ``ON CONFLICT`` statement costs more than running it)."""
    ins = dialect_insert(dialect, HS)
    keep_usage = sa.or_(_busy(), HS.c.accounted_at > ins.excluded.updated_at)
    set_: dict[str, Any] = {c: ins.excluded[c] for c in _CAPACITY}
    for col in _USAGE:
        set_[col] = sa.case((keep_usage, HS.c[col]), else_=ins.excluded[col])
    hosts = ins.on_conflict_do_update(
        index_elements=["name"], set_=set_, where=HS.c.updated_at <= ins.excluded.updated_at
    )
    cins = dialect_insert(dialect, CELLS)
    cols = ("cpus", "memory_mb", "pinned", "n_cpus", "n_pinned", "used_mb")
    cells = cins.on_conflict_do_update(
        index_elements=["host", "cell"], set_={c: cins.excluded[c] for c in cols}
    )
    return hosts, cells


def _busy() -> sa.ColumnElement[bool]:
    """The host has a claim or a source hold: a migration is in flight into or out of it.

    The host column is named literally: in an ``INSERT .. ON CONFLICT DO UPDATE`` SQLAlchemy
    would not correlate the subquery with the target row."""
    host: sa.ColumnElement[Any] = sa.literal_column(f"{HS.name}.name")
    return sa.exists().where(CL.c.host == host)


def _report_row(h: Host, reported_at: float) -> dict[str, Any]:
    labels = dict(h.labels)
    return {
        "name": h.name,
        "driver": h.driver,
        "hypervisor_type": h.hypervisor_type,
        "hypervisor_version": h.hypervisor_version,
        "vcpus": h.vcpus,
        "memory_mb": h.memory_mb,
        "disk_gb": h.disk_gb,
        "vcpus_used": h.vcpus_used,
        "memory_mb_used": h.memory_mb_used,
        "disk_gb_used": h.disk_gb_used,
        "claimed_vcpus": 0,
        "claimed_memory_mb": 0,
        "claimed_disk_gb": 0,
        "up": h.up,
        "enabled": h.enabled,
        "storage_group": h.storage_group,
        "down_reason": None if h.up else (h.down_reason or "")[:1024] or None,
        "labels": labels,
        "groups": encode_groups(host_groups(labels)),
        "accounted_at": 0.0,
        "updated_at": reported_at,
    }


def write_reports(
    conn: Connection, hosts: Sequence[Host], reported_at: float, *, complete: bool = False
) -> None:
    """Cache drivers' reports (read at ``reported_at`` or later) under the rules of the module
    doc. ``complete``: the reports are of every host the drivers serve; cached hosts missing from
    them are marked down (their driver no longer reports them)."""
    if hosts:
        conn.execute(_upserts(conn.dialect.name)[0], [_report_row(h, reported_at) for h in hosts])
        _write_cells(conn, hosts, reported_at)
    if complete:
        conn.execute(
            HS.update().where(HS.c.updated_at < reported_at, HS.c.up.is_(True)).values(up=False)
        )


def _write_cells(conn: Connection, hosts: Sequence[Host], reported_at: float) -> None:
    """The NUMA cells of the hosts whose usage this report set (see :func:`write_reports`)."""
    taken = set(
        conn.execute(
            sa.select(HS.c.name).where(
                HS.c.updated_at == reported_at,
                HS.c.accounted_at <= reported_at,
                sa.not_(_busy()),
            )
        ).scalars()
    )
    rows: list[dict[str, Any]] = []
    keep: dict[str, set[int]] = {}
    for h in hosts:
        if h.name not in taken:
            continue
        keep[h.name] = set()
        state = h.numa
        if state is None:
            continue
        pinned_all: set[int] = set()
        for cpus in state.pinned_by_cell.values():
            pinned_all |= cpus
        for cell in state.topology.cells:
            pinned = sorted(cell.cpus & pinned_all)
            keep[h.name].add(cell.id)
            rows.append(
                {
                    "host": h.name,
                    "cell": cell.id,
                    "cpus": sorted(cell.cpus),
                    "memory_mb": cell.memory_mb,
                    "pinned": pinned,
                    "n_cpus": len(cell.cpus),
                    "n_pinned": len(pinned),
                    "used_mb": int(state.used_mb_by_cell.get(cell.id, 0)),
                    "claimed_pcpus": 0,
                    "claimed_mb": 0,
                }
            )
    if rows:
        conn.execute(_upserts(conn.dialect.name)[1], rows)
    # cells the host no longer reports (and nothing claims): gone
    if keep:
        existing = conn.execute(
            sa.select(CELLS.c.host, CELLS.c.cell).where(CELLS.c.claimed_pcpus == 0)
        ).all()
        gone = [{"_h": h, "_c": cell} for h, cell in existing if h in keep and cell not in keep[h]]
        if gone:
            conn.execute(
                CELLS.delete().where(
                    CELLS.c.host == sa.bindparam("_h"), CELLS.c.cell == sa.bindparam("_c")
                ),
                gone,
            )


# ------------------------------------------------------------------------------------- reads
def cache_age(conn: Connection) -> tuple[int, float | None]:
    """(cached hosts, the oldest report's time) -- how stale the cache is."""
    row = conn.execute(sa.select(sa.func.count(), sa.func.min(HS.c.updated_at))).one()
    return int(row[0]), (float(row[1]) if row[1] is not None else None)


def load_states(conn: Connection, names: Collection[str] | None = None) -> list[HostState]:
    """The cached states of ``names`` (every cached host when None), sorted by name."""
    hosts_q = sa.select(HS).order_by(HS.c.name)
    cells_q = sa.select(CELLS).order_by(CELLS.c.host, CELLS.c.cell)
    pcpu_q = sa.select(PC.c.host, PC.c.cell, PC.c.pcpu)
    flight_q = sa.select(CL.c.host, sa.func.count()).group_by(CL.c.host)
    maint_q = sa.select(HM.c.host, HM.c.drain_id, HM.c.reason)
    if names is not None:
        wanted = sorted(set(names))
        if not wanted:
            return []
        hosts_q = hosts_q.where(HS.c.name.in_(wanted))
        cells_q = cells_q.where(CELLS.c.host.in_(wanted))
        pcpu_q = pcpu_q.where(PC.c.host.in_(wanted))
        flight_q = flight_q.where(CL.c.host.in_(wanted))
        maint_q = maint_q.where(HM.c.host.in_(wanted))
    maintenance = {h: {"drain": d, "reason": r} for h, d, r in conn.execute(maint_q)}
    claimed_pcpus: dict[tuple[str, int], set[int]] = defaultdict(set)
    for h, cell, pcpu in conn.execute(pcpu_q):
        claimed_pcpus[(h, int(cell))].add(int(pcpu))
    cells: dict[str, list[CellUsage]] = defaultdict(list)
    for r in conn.execute(cells_q).mappings():
        cells[r["host"]].append(
            CellUsage(
                cell=int(r["cell"]),
                cpus=tuple(int(c) for c in r["cpus"]),
                memory_mb=int(r["memory_mb"]),
                pinned=frozenset(int(c) for c in r["pinned"]),
                used_mb=int(r["used_mb"]),
                claimed=frozenset(claimed_pcpus.get((r["host"], int(r["cell"])), ())),
                claimed_mb=int(r["claimed_mb"]),
            )
        )
    in_flight = {h: int(n) for h, n in conn.execute(flight_q)}
    out = []
    for r in conn.execute(hosts_q).mappings():
        host = Host(
            name=r["name"],
            driver=r["driver"],
            hypervisor_type=r["hypervisor_type"],
            hypervisor_version=int(r["hypervisor_version"]),
            vcpus=int(r["vcpus"]),
            memory_mb=int(r["memory_mb"]),
            disk_gb=int(r["disk_gb"]),
            vcpus_used=int(r["vcpus_used"]),
            memory_mb_used=int(r["memory_mb_used"]),
            disk_gb_used=int(r["disk_gb_used"]),
            up=bool(r["up"]),
            enabled=bool(r["enabled"]) and r["name"] not in maintenance,
            storage_group=r["storage_group"],
            labels=dict(r["labels"] or {}),
            down_reason=r["down_reason"],
        )
        out.append(
            HostState(
                host=host,
                claimed=(
                    int(r["claimed_vcpus"]),
                    int(r["claimed_memory_mb"]),
                    int(r["claimed_disk_gb"]),
                ),
                cells=tuple(cells.get(host.name, ())),
                in_flight=in_flight.get(host.name, 0),
                groups=frozenset(g for g in (r["groups"] or "").split(",") if g),
                maintenance=maintenance.get(host.name),
            )
        )
    return out
