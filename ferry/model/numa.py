"""NUMA topology and pinned-CPU fit (seed 004) as plain data: part of the model.

Nova once moved a guest with pinned CPUs onto pCPUs another guest had already pinned, or onto a
host whose free CPUs and RAM were split across NUMA cells so that no single cell could hold the
guest. The fix, modelled here, is to check *per-cell* fit before migrating and to compute a new
pinning on the destination instead of copying the source's.

* A host's :class:`NumaTopology` is a tuple of :class:`NumaCell` s, each with its physical CPUs
  (pCPU ids, unique across the host) and its memory.
* What is already taken on the host is ``pinned_by_cell`` (cell id -> pCPUs pinned by any domain:
  running guests *and* migrations in flight that claimed pCPUs there) and ``used_mb_by_cell``
  (cell id -> MiB bound to that cell). A pCPU is free when no domain pins it, whichever cell's
  entry lists it; a cell's free memory is its memory minus what is used in it. Both, with the
  topology, are a :class:`HostNumaState`, which drivers report as ``Host.numa``.
* A guest asks for a :class:`GuestRequest`: vCPUs, memory, and whether it pins (Nova's
  ``hw:cpu_policy=dedicated``).
* :func:`fit_pinned_guest` picks **one** cell with at least ``vcpus`` free pCPUs and ``memory_mb``
  free MiB and returns a :class:`Pinning` (vCPU *i* -> pCPU, all in that cell), or the reason no
  cell fits, listing every cell's free pCPUs and memory so an operator sees the split. A claimed
  pinning travels to the driver as ``MigrateData.pinning``.

The choice is deterministic *best fit*: among the cells that fit, the one with the fewest free
pCPUs, then the least free memory, then the lowest id; inside it, the lowest-numbered free pCPUs,
vCPU 0 on the lowest. Packing pinned guests into the tightest cell keeps large cells whole for
large guests. The scheduler's use of these (filters, claims) is in :mod:`ferry.scheduler.numa`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferry.model import Instance

#: ``Instance.extra`` keys that mark a guest as pinned: ``cpu_policy == "dedicated"`` (Nova's
#: ``hw:cpu_policy``, also accepted under that name) or ``pinned`` true.
PINNED_POLICIES = frozenset({"dedicated"})


@dataclass(frozen=True)
class NumaCell:
    """One NUMA cell: its physical CPUs and memory (hugepages are not modelled)."""

    id: int
    cpus: frozenset[int]
    memory_mb: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpus", frozenset(self.cpus))
        if self.memory_mb < 0:
            raise ValueError(f"cell {self.id}: negative memory {self.memory_mb}")
        if any(c < 0 for c in self.cpus):
            raise ValueError(f"cell {self.id}: negative pCPU id")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "cpus": sorted(self.cpus), "memory_mb": self.memory_mb}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumaCell:
        return cls(int(data["id"]), frozenset(int(c) for c in data["cpus"]), int(data["memory_mb"]))


@dataclass(frozen=True)
class NumaTopology:
    """A host's cells. Cell ids and pCPU ids are unique across the host."""

    cells: tuple[NumaCell, ...]

    def __post_init__(self) -> None:
        cells = tuple(sorted(self.cells, key=lambda c: c.id))
        object.__setattr__(self, "cells", cells)
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate NUMA cell ids: {ids}")
        seen: set[int] = set()
        for c in cells:
            if seen & c.cpus:
                raise ValueError(f"pCPUs {sorted(seen & c.cpus)} belong to more than one cell")
            seen |= c.cpus

    @classmethod
    def uniform(cls, cells: int, cpus_per_cell: int, memory_mb_per_cell: int) -> NumaTopology:
        """``cells`` identical cells; cell *k* holds pCPUs ``k*cpus_per_cell ..``."""
        return cls(
            tuple(
                NumaCell(
                    k,
                    frozenset(range(k * cpus_per_cell, (k + 1) * cpus_per_cell)),
                    memory_mb_per_cell,
                )
                for k in range(cells)
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [c.to_dict() for c in self.cells]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumaTopology:
        return cls(tuple(NumaCell.from_dict(c) for c in data.get("cells", ())))


@dataclass(frozen=True)
class GuestRequest:
    """What a guest needs from one cell: vCPUs, memory, and whether its vCPUs are pinned."""

    vcpus: int
    memory_mb: int
    pinned: bool = True

    def __post_init__(self) -> None:
        if self.pinned and self.vcpus < 1:
            raise ValueError(f"a pinned guest needs at least one vCPU, not {self.vcpus}")
        if self.memory_mb < 0:
            raise ValueError(f"negative memory {self.memory_mb}")

    @classmethod
    def from_instance(cls, instance: Instance) -> GuestRequest:
        """The instance's request; pinned when ``extra`` says so (see :data:`PINNED_POLICIES`)."""
        extra = instance.extra
        policy = extra.get("cpu_policy", extra.get("hw:cpu_policy"))
        pinned = bool(extra.get("pinned")) or policy in PINNED_POLICIES
        return cls(vcpus=instance.vcpus, memory_mb=instance.memory_mb, pinned=pinned)

    def describe(self) -> str:
        kind = "pinned " if self.pinned else ""
        return f"{self.vcpus} {kind}vCPUs + {self.memory_mb} MiB"


@dataclass(frozen=True)
class Pinning:
    """A new placement on one cell: ``vcpu_to_pcpu[i]`` is the pCPU vCPU *i* is pinned to."""

    cell: int
    vcpu_to_pcpu: tuple[int, ...]
    memory_mb: int

    @property
    def pcpus(self) -> frozenset[int]:
        return frozenset(self.vcpu_to_pcpu)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``MigrateData.pinning`` in the store, claim rows)."""
        return {
            "cell": self.cell,
            "vcpu_to_pcpu": {str(v): p for v, p in enumerate(self.vcpu_to_pcpu)},
            "memory_mb": self.memory_mb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pinning:
        mapping = {int(v): int(p) for v, p in data["vcpu_to_pcpu"].items()}
        return cls(
            int(data["cell"]),
            tuple(mapping[v] for v in range(len(mapping))),
            int(data["memory_mb"]),
        )


@dataclass(frozen=True)
class CellFree:
    """What one cell has left: its free pCPUs (sorted) and free memory."""

    cell: int
    free_pcpus: tuple[int, ...]
    free_mb: int

    def fits(self, request: GuestRequest) -> bool:
        return len(self.free_pcpus) >= request.vcpus and self.free_mb >= request.memory_mb


def free_by_cell(
    topology: NumaTopology,
    pinned_by_cell: Mapping[int, Iterable[int]],
    used_mb_by_cell: Mapping[int, int],
) -> tuple[CellFree, ...]:
    """Every cell's free pCPUs (not pinned by any domain, whichever cell lists them) and free
    memory, in cell order."""
    pinned: set[int] = set()
    for cpus in pinned_by_cell.values():
        pinned.update(cpus)
    return tuple(
        CellFree(
            cell.id,
            tuple(sorted(cell.cpus - pinned)),
            cell.memory_mb - used_mb_by_cell.get(cell.id, 0),
        )
        for cell in topology.cells
    )


def no_fit_reason(request: GuestRequest, free: Iterable[CellFree]) -> str:
    """Why no cell fits, with each cell's free pCPUs and memory (the split an operator needs)."""
    parts = [f"cell {c.cell} has {len(c.free_pcpus)} free pCPUs / {c.free_mb} MiB" for c in free]
    if not parts:
        return f"no NUMA cell fits {request.describe()}: the host reports no NUMA cells"
    return f"no NUMA cell fits {request.describe()}: " + ", ".join(parts)


def best_cell(request: GuestRequest, free: Iterable[CellFree]) -> CellFree | None:
    """Best fit: the fitting cell with the fewest free pCPUs, then least free memory, then
    lowest id; None when none fits."""
    fitting = [c for c in free if c.fits(request)]
    if not fitting:
        return None
    return min(fitting, key=lambda c: (len(c.free_pcpus), c.free_mb, c.cell))


def fit_pinned_guest(
    topology: NumaTopology,
    pinned_by_cell: Mapping[int, Iterable[int]],
    used_mb_by_cell: Mapping[int, int],
    request: GuestRequest,
) -> Pinning | str:
    """A new pinning of ``request`` on one cell of ``topology`` using only free pCPUs, or the
    reason (every cell's free pCPUs / MiB) when no single cell has room.

    Raises ValueError for an unpinned request: those need no cell fit (the filter lets them pass).
    """
    if not request.pinned:
        raise ValueError("fit_pinned_guest is for pinned guests; unpinned guests need no cell fit")
    free = free_by_cell(topology, pinned_by_cell, used_mb_by_cell)
    cell = best_cell(request, free)
    if cell is None:
        return no_fit_reason(request, free)
    return Pinning(cell.cell, cell.free_pcpus[: request.vcpus], request.memory_mb)


@dataclass(frozen=True)
class HostNumaState:
    """A host's topology and what is pinned / used in each cell, as cached in the database.

    Immutable; the per-cell free resources are computed once (:attr:`free`), so filtering many
    guests against many cached hosts costs a few comparisons per host.
    """

    topology: NumaTopology
    pinned_by_cell: Mapping[int, frozenset[int]] = field(default_factory=dict)
    used_mb_by_cell: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pinned = {int(k): frozenset(v) for k, v in self.pinned_by_cell.items()}
        object.__setattr__(self, "pinned_by_cell", pinned)
        object.__setattr__(
            self, "used_mb_by_cell", {int(k): int(v) for k, v in self.used_mb_by_cell.items()}
        )

    @cached_property
    def free(self) -> tuple[CellFree, ...]:
        return free_by_cell(self.topology, self.pinned_by_cell, self.used_mb_by_cell)

    def check(self, request: GuestRequest) -> str | None:
        """None when one cell fits a pinned ``request`` (always for unpinned), else the reason."""
        if not request.pinned:
            return None
        if any(c.fits(request) for c in self.free):
            return None
        return no_fit_reason(request, self.free)

    def fit(self, request: GuestRequest) -> Pinning | str:
        """:func:`fit_pinned_guest` on this state (reusing the cached free sets)."""
        if not request.pinned:
            raise ValueError("fit is for pinned guests; unpinned guests need no cell fit")
        cell = best_cell(request, self.free)
        if cell is None:
            return no_fit_reason(request, self.free)
        return Pinning(cell.cell, cell.free_pcpus[: request.vcpus], request.memory_mb)

    def with_pinning(self, pinning: Pinning) -> HostNumaState:
        """This state with ``pinning``'s pCPUs and memory accounted (a claim or a placed guest)."""
        pinned = dict(self.pinned_by_cell)
        pinned[pinning.cell] = pinned.get(pinning.cell, frozenset()) | pinning.pcpus
        used = dict(self.used_mb_by_cell)
        used[pinning.cell] = used.get(pinning.cell, 0) + pinning.memory_mb
        return HostNumaState(self.topology, pinned, used)

    def without_pinning(self, pinning: Pinning) -> HostNumaState:
        """This state with ``pinning`` released (revert, or the source after post-migration)."""
        pinned = dict(self.pinned_by_cell)
        pinned[pinning.cell] = pinned.get(pinning.cell, frozenset()) - pinning.pcpus
        used = dict(self.used_mb_by_cell)
        used[pinning.cell] = used.get(pinning.cell, 0) - pinning.memory_mb
        return HostNumaState(self.topology, pinned, used)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology.to_dict(),
            "pinned_by_cell": {str(k): sorted(v) for k, v in self.pinned_by_cell.items()},
            "used_mb_by_cell": {str(k): v for k, v in self.used_mb_by_cell.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostNumaState:
        return cls(
            NumaTopology.from_dict(data["topology"]),
            {int(k): frozenset(v) for k, v in data.get("pinned_by_cell", {}).items()},
            {int(k): int(v) for k, v in data.get("used_mb_by_cell", {}).items()},
        )
