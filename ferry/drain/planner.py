"""The drain plan, a decision as a pure function: guests and host states in, plan out.

Each running guest of the host, in the drain's order, gets the destination the scheduler's
filters and weighers choose given what the guests planned before it claimed (their vCPUs, RAM and
disk, and one more migration in flight there). A guest that is not running (paused, shut down,
...) is skipped with that reason; one that fits nowhere is skipped with each host's reason.

``apart``: anti-affinity groups (``--not-together``): a guest is not planned to a host where
another member of its group runs (off the drained host) or is planned to go.

A pinned guest's NUMA fit is checked on the cached cells; the pCPUs of the guests planned before
it are not subtracted from them (the claim made when its migration runs is exact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from ferry.model import Instance, PowerState
from ferry.model.drain import ORDERS, DrainStatus, GuestState, PlanEntry
from ferry.scheduler.filters import FILTERS, Filter, HostCandidate, Weighers, reasons_of
from ferry.scheduler.state import HostState


def ordered(guests: Iterable[Instance], order: str) -> list[Instance]:
    """``guests`` in the drain's ``--order`` (smallest or largest RAM first, or by name; ties by
    name)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    items = sorted(guests, key=lambda i: (i.name, i.uuid))
    if order == "smallest":
        items.sort(key=lambda i: i.memory_mb)
    elif order == "largest":
        items.sort(key=lambda i: -i.memory_mb)
    return items


def not_running_reason(guest: Instance) -> str | None:
    """Why a guest is not drained (None: it is running and will be moved)."""
    if guest.power_state == PowerState.RUNNING.value:
        return None
    return f"not running ({guest.power_state})"


def plan_drain(
    guests: Iterable[Instance],
    states: Sequence[HostState],
    host: str,
    *,
    to: str | None = None,
    filters: Sequence[Filter] = FILTERS,
    weighers: Weighers | None = None,
    order: str = "smallest",
    apart: Sequence[Sequence[Instance]] = (),
) -> list[PlanEntry]:
    """The plan of draining ``host`` (see the module doc). ``states``: the cached host states
    (``host`` among them); ``to``: the only destination allowed; ``filters`` / ``weighers``: the
    scheduler's (:meth:`~ferry.scheduler.scheduler.HostScheduler.filters`); ``apart``: the
    anti-affinity groups (their members as they are now)."""
    weighers = weighers or Weighers()
    planned: dict[str, str] = {}  # instance uuid -> planned destination
    by_name = {s.host.name: s for s in states}
    source = by_name[host].host
    candidates = {n: s.candidate() for n, s in by_name.items() if n != host}
    out: list[PlanEntry] = []
    for guest in ordered(guests, order):
        entry = PlanEntry(guest.uuid, guest.name, guest.memory_mb)
        skipped = not_running_reason(guest)
        if skipped is not None:
            out.append(dataclasses.replace(entry, skipped=skipped))
            continue
        pool = list(candidates.values())
        outside: dict[str, str] = {}
        if to is not None:
            outside = {n: "not the --to host" for n in candidates if n != to}
        for where, why in _apart(guest, apart, host, planned).items():
            outside.setdefault(where, why)
        passing, reasons = reasons_of(pool, guest, source, outside, filters)
        if not passing:
            out.append(dataclasses.replace(entry, skipped="fits nowhere", reasons=reasons))
            continue
        best = weighers.rank([(c.host.name, c.free_memory_mb, c.in_flight) for c in passing])[0]
        candidates[best] = _claimed(candidates[best], guest)
        planned[guest.uuid] = best
        out.append(dataclasses.replace(entry, destination=best))
    return out


def _apart(
    guest: Instance, apart: Sequence[Sequence[Instance]], host: str, planned: Mapping[str, str]
) -> dict[str, str]:
    """Host -> reason for the hosts the guest's anti-affinity groups rule out."""
    out: dict[str, str] = {}
    for group in apart:
        if guest.uuid not in {m.uuid for m in group}:
            continue
        for m in group:
            where = planned.get(m.uuid) or (m.host if m.host != host else None)
            if m.uuid != guest.uuid and where is not None:
                out.setdefault(where, f"anti-affinity: {m.name} is there")
    return out


def _claimed(c: HostCandidate, guest: Instance) -> HostCandidate:
    return dataclasses.replace(
        c,
        claimed_vcpus=c.claimed_vcpus + guest.vcpus,
        claimed_memory_mb=c.claimed_memory_mb + guest.memory_mb,
        claimed_disk_gb=c.claimed_disk_gb + guest.disk_gb,
        in_flight=c.in_flight + 1,
    )


def drain_status(states: Iterable[str], *, aborted: bool) -> str:
    """A finished drain's status from its guests' states: ``cancelled`` when aborted,
    ``completed`` when every guest moved, ``partial`` when some moved or were only skipped,
    ``failed`` when a migration failed and none moved."""
    seen = set(states)
    if aborted:
        return DrainStatus.CANCELLED.value
    if seen <= {GuestState.COMPLETED.value}:
        return DrainStatus.COMPLETED.value
    if GuestState.COMPLETED.value in seen or GuestState.FAILED.value not in seen:
        return DrainStatus.PARTIAL.value
    return DrainStatus.FAILED.value
