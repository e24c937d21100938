"""Claims on the host state cache (seed 003 and seed 004), each inside one transaction.

A migration holds two kinds of rows in ``ferry_claims``:

``destination``
    taken when the destination is chosen: its vCPUs, RAM and disk (``claimed_*`` of the host, one
    conditional ``UPDATE`` that fails when the host has no room after the other claims) and, for
    a pinned guest, the exact pCPUs of one NUMA cell (``ferry_pcpu_claims`` rows, whose primary
    key (host, pCPU) makes a second claim of the same pCPU impossible, and the cell's claimed
    counters). Released on revert; turned into usage on completion.
``source``
    the instance's usage on its source, taken with the first destination claim. While it exists
    the source keeps its cached usage and pinned pCPUs (even when its driver already shows the
    guest gone after the switchover); it is released only after post-migration at the source.
    Dropped without changing the usage when the migration is reverted (the guest stays there).

A pinned claim locks the destination's host-state row first (``SELECT .. FOR NO KEY UPDATE`` on
PostgreSQL; SQLite transactions begin ``IMMEDIATE`` and so hold the write lock), reads the cells,
the pCPUs pinned there and those claimed by others, computes the pinning (best fit, free pCPUs of
one cell) and writes it -- all in the same transaction, so two concurrent migrations can never
take the same pCPUs, on SQLite or PostgreSQL, from threads or processes. Every operation is
idempotent: a row's deletion and the usage change it stands for happen in one transaction, and a
claim already held is returned as it is.

Seed 004's order at the end of a migration is the callers' (``ferry.tasks.finish``): release on
the source (:func:`release_source`, after post-migration at the source), then the instance
record, then account on the destination (:func:`complete`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferry.model import Instance
from ferry.model.numa import GuestRequest, HostNumaState, NumaCell, NumaTopology, Pinning
from ferry.persistence.db import dialect_insert
from ferry.persistence.models import (
    CLAIMS as CL,
    HOST_NUMA_CELLS as CELLS,
    HOST_STATES as HS,
    PCPU_CLAIMS as PC,
)
from ferry.scheduler.numa import NO_TOPOLOGY

DESTINATION = "destination"
SOURCE = "source"

NO_ROOM = "not enough free resources after the claims of other migrations"

_V: sa.BindParameter[Any] = sa.bindparam("_v")
_M: sa.BindParameter[Any] = sa.bindparam("_m")
_D: sa.BindParameter[Any] = sa.bindparam("_d")
_H: sa.BindParameter[Any] = sa.bindparam("_h")
_C: sa.BindParameter[Any] = sa.bindparam("_c")
_NOW: sa.BindParameter[Any] = sa.bindparam("_now")

CLAIM_SCALARS = (
    HS.update()
    .where(
        HS.c.name == _H,
        HS.c.vcpus - HS.c.vcpus_used - HS.c.claimed_vcpus >= _V,
        HS.c.memory_mb - HS.c.memory_mb_used - HS.c.claimed_memory_mb >= _M,
        HS.c.disk_gb - HS.c.disk_gb_used - HS.c.claimed_disk_gb >= _D,
    )
    .values(
        claimed_vcpus=HS.c.claimed_vcpus + _V,
        claimed_memory_mb=HS.c.claimed_memory_mb + _M,
        claimed_disk_gb=HS.c.claimed_disk_gb + _D,
    )
)
UNCLAIM_SCALARS = (
    HS.update()
    .where(HS.c.name == _H)
    .values(
        claimed_vcpus=HS.c.claimed_vcpus - _V,
        claimed_memory_mb=HS.c.claimed_memory_mb - _M,
        claimed_disk_gb=HS.c.claimed_disk_gb - _D,
    )
)
CLAIM_TO_USAGE = (
    HS.update()
    .where(HS.c.name == _H)
    .values(
        claimed_vcpus=HS.c.claimed_vcpus - _V,
        claimed_memory_mb=HS.c.claimed_memory_mb - _M,
        claimed_disk_gb=HS.c.claimed_disk_gb - _D,
        vcpus_used=HS.c.vcpus_used + _V,
        memory_mb_used=HS.c.memory_mb_used + _M,
        disk_gb_used=HS.c.disk_gb_used + _D,
        accounted_at=_NOW,
    )
)


def _minus(col: sa.ColumnElement[Any], amount: sa.BindParameter[Any]) -> sa.ColumnElement[Any]:
    return sa.case((col > amount, col - amount), else_=0)


RELEASE_USAGE = (
    HS.update()
    .where(HS.c.name == _H)
    .values(
        vcpus_used=_minus(HS.c.vcpus_used, _V),
        memory_mb_used=_minus(HS.c.memory_mb_used, _M),
        disk_gb_used=_minus(HS.c.disk_gb_used, _D),
        accounted_at=_NOW,
    )
)
CLAIM_CELL = (
    CELLS.update()
    .where(
        CELLS.c.host == _H,
        CELLS.c.cell == _C,
        CELLS.c.n_cpus - CELLS.c.n_pinned - CELLS.c.claimed_pcpus >= _V,
        CELLS.c.memory_mb - CELLS.c.used_mb - CELLS.c.claimed_mb >= _M,
    )
    .values(
        claimed_pcpus=CELLS.c.claimed_pcpus + _V,
        claimed_mb=CELLS.c.claimed_mb + _M,
    )
)
UNCLAIM_CELL = (
    CELLS.update()
    .where(CELLS.c.host == _H, CELLS.c.cell == _C)
    .values(
        claimed_pcpus=CELLS.c.claimed_pcpus - _V,
        claimed_mb=CELLS.c.claimed_mb - _M,
    )
)
SELECT_CLAIM = sa.select(CL).where(CL.c.migration_id == sa.bindparam("_id"), CL.c.host == _H)
DELETE_CLAIM = CL.delete().where(
    CL.c.migration_id == sa.bindparam("_id"), CL.c.host == _H, CL.c.kind == sa.bindparam("_k")
)
DELETE_PCPUS = PC.delete().where(PC.c.migration_id == sa.bindparam("_id"), PC.c.host == _H)


@dataclass(frozen=True)
class ClaimResult:
    """Whether the claim is held, the pinning it holds (pinned guests), or why it was refused."""

    ok: bool
    pinning: Pinning | None = None
    reason: str | None = None


class ClaimRefused(Exception):
    """Raised inside a claim's transaction to roll it back; carries the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def lock_host(conn: Connection, host: str) -> bool:
    """Take the host-state row's lock until the transaction ends (PostgreSQL ``FOR NO KEY
    UPDATE``: it does not block the key-share locks of foreign keys; SQLite's ``BEGIN
    IMMEDIATE`` already holds the database's write lock). False when the host is not cached."""
    row = conn.execute(
        sa.select(HS.c.name).where(HS.c.name == host).with_for_update(key_share=True)
    ).first()
    return row is not None


def source_pinning(instance: Instance) -> dict[str, Any] | None:
    """What a pinned instance holds on its source, as its driver reports it in ``extra``
    (``numa_pinning``, or ``pinned_pcpus``): ``{"pcpus": [...], "memory_mb": n}``."""
    extra = instance.extra
    pcpus: Iterable[Any] = ()
    if isinstance(extra.get("numa_pinning"), dict):
        pcpus = extra["numa_pinning"].get("vcpu_to_pcpu", {}).values()
    elif extra.get("pinned_pcpus"):
        pcpus = extra["pinned_pcpus"]
    found = sorted({int(p) for p in pcpus})
    if not found:
        return None
    return {"pcpus": found, "memory_mb": instance.memory_mb}


def take(
    conn: Connection,
    migration_id: str,
    host: str,
    instance: Instance,
    *,
    source: str | None,
    now: float,
) -> ClaimResult:
    """Claim ``instance``'s resources on ``host`` (and hold its usage on ``source``, if given).

    Returns the claim already held by this migration unchanged. Raises :class:`ClaimRefused`
    (the caller's transaction must roll back) when the host has no room after the other claims,
    or, for a pinned guest, no NUMA cell with enough free pCPUs and memory.
    """
    held = conn.execute(SELECT_CLAIM, {"_id": migration_id, "_h": host}).mappings().first()
    if held is not None and held["kind"] == DESTINATION:
        kept = Pinning.from_dict(held["pinning"]) if held["pinning"] else None
        return ClaimResult(True, kept)
    request = GuestRequest.from_instance(instance)
    pinning: Pinning | None = None
    if request.pinned:
        if not lock_host(conn, host):
            raise ClaimRefused("host is not in the host state cache")
        state = numa_state(conn, host)
        if state is None:
            raise ClaimRefused(NO_TOPOLOGY)
        fitted = state.fit(request)
        if isinstance(fitted, str):
            raise ClaimRefused(f"{fitted} (after the claims of other migrations)")
        pinning = fitted
    need = {"_h": host, "_v": instance.vcpus, "_m": instance.memory_mb, "_d": instance.disk_gb}
    if conn.execute(CLAIM_SCALARS, need).rowcount != 1:
        raise ClaimRefused(NO_ROOM)
    if pinning is not None:
        rows = [
            {
                "host": host,
                "pcpu": pcpu,
                "migration_id": migration_id,
                "cell": pinning.cell,
                "vcpu": vcpu,
            }
            for vcpu, pcpu in enumerate(pinning.vcpu_to_pcpu)
        ]
        ins = dialect_insert(conn, PC).values(rows).on_conflict_do_nothing().returning(PC.c.pcpu)
        taken = len(conn.execute(ins).all())
        if taken != len(rows):  # never under the host lock; the primary key is the last word
            raise ClaimRefused(f"pCPUs {sorted(pinning.pcpus)} were claimed by another migration")
        cell = {"_h": host, "_c": pinning.cell, "_v": len(rows), "_m": pinning.memory_mb}
        if conn.execute(CLAIM_CELL, cell).rowcount != 1:
            raise ClaimRefused(f"NUMA cell {pinning.cell} has no room left")
    conn.execute(
        CL.insert(),
        {
            "migration_id": migration_id,
            "host": host,
            "instance_uuid": instance.uuid,
            "vcpus": instance.vcpus,
            "memory_mb": instance.memory_mb,
            "disk_gb": instance.disk_gb,
            "created_at": now,
            "kind": DESTINATION,
            "numa_cell": pinning.cell if pinning is not None else None,
            "pinning": pinning.to_dict() if pinning is not None else None,
        },
    )
    if source is not None and source != host:
        hold = dialect_insert(conn, CL).on_conflict_do_nothing(
            index_elements=["migration_id", "host"]
        )
        conn.execute(
            hold,
            {
                "migration_id": migration_id,
                "host": source,
                "instance_uuid": instance.uuid,
                "vcpus": instance.vcpus,
                "memory_mb": instance.memory_mb,
                "disk_gb": instance.disk_gb,
                "created_at": now,
                "kind": SOURCE,
                "numa_cell": None,
                "pinning": source_pinning(instance) if request.pinned else None,
            },
        )
    return ClaimResult(True, pinning)


def numa_state(conn: Connection, host: str) -> HostNumaState | None:
    """The host's cached NUMA state with the pCPUs and memory claimed by migrations in flight
    merged in (what a new pinning must avoid); None without cells."""
    cells = conn.execute(sa.select(CELLS).where(CELLS.c.host == host)).mappings().all()
    if not cells:
        return None
    claimed: dict[int, set[int]] = {}
    for cell, pcpu in conn.execute(sa.select(PC.c.cell, PC.c.pcpu).where(PC.c.host == host)):
        claimed.setdefault(int(cell), set()).add(int(pcpu))
    topology = NumaTopology(
        tuple(NumaCell(int(c["cell"]), frozenset(c["cpus"]), int(c["memory_mb"])) for c in cells)
    )
    return HostNumaState(
        topology,
        {
            int(c["cell"]): frozenset(c["pinned"]) | claimed.get(int(c["cell"]), set())
            for c in cells
        },
        {int(c["cell"]): int(c["used_mb"]) + int(c["claimed_mb"]) for c in cells},
    )


def _unclaim_pcpus(conn: Connection, claim: Any) -> None:
    conn.execute(DELETE_PCPUS, {"_id": claim["migration_id"], "_h": claim["host"]})
    if claim["numa_cell"] is not None and claim["pinning"]:
        n = len(claim["pinning"]["vcpu_to_pcpu"])
        conn.execute(
            UNCLAIM_CELL,
            {"_h": claim["host"], "_c": claim["numa_cell"], "_v": n, "_m": claim["memory_mb"]},
        )


def release(conn: Connection, migration_id: str, host: str | None = None) -> int:
    """Give back what ``migration_id`` holds (on ``host`` only, if given): a destination claim's
    resources and pCPUs return to the host; a source hold is dropped and the usage stays (the
    guest still runs there). Returns how many rows went. Idempotent."""
    released = 0
    q = sa.select(CL).where(CL.c.migration_id == migration_id)
    if host is not None:
        q = q.where(CL.c.host == host)
    for claim in conn.execute(q).mappings().all():
        gone = conn.execute(
            DELETE_CLAIM, {"_id": migration_id, "_h": claim["host"], "_k": claim["kind"]}
        )
        if not gone.rowcount:
            continue
        released += 1
        if claim["kind"] == DESTINATION:
            conn.execute(
                UNCLAIM_SCALARS,
                {
                    "_h": claim["host"],
                    "_v": claim["vcpus"],
                    "_m": claim["memory_mb"],
                    "_d": claim["disk_gb"],
                },
            )
            _unclaim_pcpus(conn, claim)
    return released


def complete(conn: Connection, migration_id: str, now: float) -> str | None:
    """Turn the destination claim into usage: the host's claimed resources become used, the
    claimed pCPUs become pinned in their cell. Returns the host, or None when there was no claim
    (already done). Idempotent."""
    claim = (
        conn.execute(
            sa.select(CL).where(CL.c.migration_id == migration_id, CL.c.kind == DESTINATION)
        )
        .mappings()
        .first()
    )
    if claim is None:
        return None
    host = claim["host"]
    lock_host(conn, host)
    gone = conn.execute(DELETE_CLAIM, {"_id": migration_id, "_h": host, "_k": DESTINATION})
    if not gone.rowcount:
        return None
    conn.execute(
        CLAIM_TO_USAGE,
        {
            "_h": host,
            "_v": claim["vcpus"],
            "_m": claim["memory_mb"],
            "_d": claim["disk_gb"],
            "_now": now,
        },
    )
    if claim["numa_cell"] is not None and claim["pinning"]:
        pinning = Pinning.from_dict(claim["pinning"])
        _unclaim_pcpus(conn, claim)
        _pin(conn, host, pinning.pcpus, {pinning.cell: pinning.memory_mb})
    return str(host)


def release_source(conn: Connection, migration_id: str, now: float) -> str | None:
    """Release the instance's usage on its source (after post-migration at the source): the
    host's usage drops by the instance, its pinned pCPUs become free. Returns the source, or None
    when there was no hold (already released). Idempotent."""
    hold = (
        conn.execute(sa.select(CL).where(CL.c.migration_id == migration_id, CL.c.kind == SOURCE))
        .mappings()
        .first()
    )
    if hold is None:
        return None
    host = hold["host"]
    lock_host(conn, host)
    gone = conn.execute(DELETE_CLAIM, {"_id": migration_id, "_h": host, "_k": SOURCE})
    if not gone.rowcount:
        return None
    conn.execute(
        RELEASE_USAGE,
        {
            "_h": host,
            "_v": hold["vcpus"],
            "_m": hold["memory_mb"],
            "_d": hold["disk_gb"],
            "_now": now,
        },
    )
    pinned = hold["pinning"] or {}
    if pinned.get("pcpus"):
        _unpin(conn, host, {int(p) for p in pinned["pcpus"]}, int(pinned.get("memory_mb", 0)))
    return str(host)


def _pin(conn: Connection, host: str, pcpus: frozenset[int], memory: dict[int, int]) -> None:
    """Add pCPUs to their cells' pinned sets and memory to the cells' use (host locked)."""
    for r in conn.execute(sa.select(CELLS).where(CELLS.c.host == host)).mappings().all():
        cpus = set(r["cpus"])
        pinned = set(r["pinned"]) | (pcpus & cpus)
        used = int(r["used_mb"]) + memory.get(int(r["cell"]), 0)
        if pinned != set(r["pinned"]) or used != r["used_mb"]:
            _write_cell(conn, host, int(r["cell"]), pinned, used)


def _unpin(conn: Connection, host: str, pcpus: set[int], memory_mb: int) -> None:
    """Remove pCPUs from their cells' pinned sets and the guest's memory from the cells that
    held its pCPUs (split evenly, as drivers count a guest bound to several cells)."""
    rows = conn.execute(sa.select(CELLS).where(CELLS.c.host == host)).mappings().all()
    touched = [r for r in rows if pcpus & set(r["cpus"])]
    share = memory_mb // len(touched) if touched else 0
    for k, r in enumerate(touched):
        mine = share + (memory_mb - share * len(touched) if k == 0 else 0)
        pinned = set(r["pinned"]) - pcpus
        _write_cell(conn, host, int(r["cell"]), pinned, max(0, int(r["used_mb"]) - mine))


def _write_cell(conn: Connection, host: str, cell: int, pinned: set[int], used_mb: int) -> None:
    conn.execute(
        CELLS.update()
        .where(CELLS.c.host == host, CELLS.c.cell == cell)
        .values(pinned=sorted(pinned), n_pinned=len(pinned), used_mb=used_mb)
    )


def pinning(conn: Connection, migration_id: str, host: str) -> Pinning | None:
    """The pinning claimed for ``migration_id`` on ``host`` (None: none, or unpinned)."""
    row = conn.execute(
        sa.select(CL.c.pinning).where(
            CL.c.migration_id == migration_id, CL.c.host == host, CL.c.kind == DESTINATION
        )
    ).first()
    if row is None or not row[0]:
        return None
    return Pinning.from_dict(row[0])
