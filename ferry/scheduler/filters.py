"""Filters and weighers (Nova's filter scheduler, reduced to what live migration needs).

Filters return ``None`` when a host passes and the reason when it does not; every rejected host
keeps its reason (shown in :class:`~ferry.errors.NoValidHost` and ``ferry show``). The hosts that
pass are weighed: each weigher's values are normalised to 0..1 over the passing hosts (as Nova
does) and summed with their multipliers; the highest total wins, ties go to the host name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ferry.errors import NoValidHost
from ferry.model import Host, Instance

if TYPE_CHECKING:
    from ferry.model.numa import HostNumaState

#: ``[scheduler] weigher``: spread = most free RAM first, pack = least free RAM first
STRATEGIES = ("spread", "pack")


@dataclass(frozen=True)
class HostCandidate:
    """A host with what migrations in flight already claimed on it, its NUMA state (topology,
    pinned and claimed pCPUs; None when unknown), how many migrations are in flight into or out
    of it, and the host aggregates it belongs to."""

    host: Host
    claimed_vcpus: int = 0
    claimed_memory_mb: int = 0
    claimed_disk_gb: int = 0
    numa: HostNumaState | None = None
    in_flight: int = 0
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def free_memory_mb(self) -> int:
        return self.host.free_memory_mb - self.claimed_memory_mb

    @property
    def free_vcpus(self) -> int:
        return self.host.free_vcpus - self.claimed_vcpus

    @property
    def free_disk_gb(self) -> int:
        return self.host.free_disk_gb - self.claimed_disk_gb


Filter = Callable[[HostCandidate, Instance, Host], str | None]


def up_and_enabled(c: HostCandidate, _inst: Instance, _src: Host) -> str | None:
    if not c.host.up:
        return "host is down"
    if not c.host.enabled:
        return "host is disabled"
    return None


def not_source(c: HostCandidate, _inst: Instance, src: Host) -> str | None:
    return "is the source host" if c.host.name == src.name else None


def capacity(c: HostCandidate, inst: Instance, _src: Host) -> str | None:
    if c.free_memory_mb < inst.memory_mb:
        return (
            f"not enough free RAM after claims: {c.free_memory_mb} MiB free, "
            f"{inst.memory_mb} MiB needed"
        )
    if c.free_vcpus < inst.vcpus:
        return f"not enough free vCPUs after claims: {c.free_vcpus} free, {inst.vcpus} needed"
    if c.free_disk_gb < inst.disk_gb:
        return (
            f"not enough free disk after claims: {c.free_disk_gb} GiB free, "
            f"{inst.disk_gb} GiB needed"
        )
    return None


def hypervisor_compatible(c: HostCandidate, _inst: Instance, src: Host) -> str | None:
    return hypervisor_mismatch(src, c.host)


def hypervisor_mismatch(src: Host, dst: Host) -> str | None:
    """Same hypervisor type, destination version >= source (Nova's compatibility check)."""
    if dst.hypervisor_type != src.hypervisor_type:
        return (
            f"hypervisor type {dst.hypervisor_type} differs from the source's {src.hypervisor_type}"
        )
    if dst.hypervisor_version < src.hypervisor_version:
        return (
            f"hypervisor version {dst.hypervisor_version} is older than the source's "
            f"{src.hypervisor_version}"
        )
    return None


def in_group(name: str, members: Iterable[str] = ()) -> Filter:
    """Affinity (``--to-group NAME``): the host belongs to the aggregate ``name`` -- its labels
    say so (``group``/``groups``) or the config lists it (``[scheduler.groups]``)."""
    listed = frozenset(members)

    def group(c: HostCandidate, _inst: Instance, _src: Host) -> str | None:
        if name in c.groups or c.host.name in listed:
            return None
        return f"not in host group {name!r}"

    return group


def not_with(hosts: Mapping[str, str]) -> Filter:
    """Anti-affinity (``--not-with VM,..``): ``hosts`` maps each host where one of the named
    instances runs (or is being migrated to) to the reason shown for it."""

    def anti_affinity(c: HostCandidate, _inst: Instance, _src: Host) -> str | None:
        return hosts.get(c.host.name)

    return anti_affinity


FILTERS: tuple[Filter, ...] = (not_source, up_and_enabled, hypervisor_compatible, capacity)


def free_ram_weight(c: HostCandidate) -> float:
    return float(c.free_memory_mb)


@dataclass(frozen=True)
class Weighers:
    """Free RAM (spread: more is better; pack: less is better) and migrations in flight (fewer
    is better), each normalised over the candidates and multiplied (``[scheduler]``)."""

    strategy: str = "spread"
    ram_multiplier: float = 1.0
    in_flight_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"weigher must be one of {', '.join(STRATEGIES)}")

    def rank(
        self,
        hosts: Sequence[tuple[str, float, float]],
        *,
        ram_bounds: tuple[float, float] | None = None,
        in_flight_bounds: tuple[float, float] | None = None,
    ) -> list[str]:
        """Host names best first, from ``(name, free RAM MiB, migrations in flight)``.

        Each weigher is normalised over ``hosts``, or over the given (min, max) bounds when
        ``hosts`` are only the best part of the candidates."""
        if not hosts:
            return []
        ram = _normalised([h[1] for h in hosts], ram_bounds)
        flipped = None if in_flight_bounds is None else (-in_flight_bounds[1], -in_flight_bounds[0])
        flight = _normalised([-h[2] for h in hosts], flipped)
        sign = 1.0 if self.strategy == "spread" else -1.0
        scored = [
            (-(sign * self.ram_multiplier * r + self.in_flight_multiplier * f), h[0])
            for h, r, f in zip(hosts, ram, flight, strict=True)
        ]
        scored.sort()
        return [name for _score, name in scored]


def _normalised(values: Sequence[float], bounds: tuple[float, float] | None = None) -> list[float]:
    lo, hi = bounds if bounds is not None else (min(values), max(values))
    if hi <= lo:
        return [0.0] * len(values)
    span = hi - lo
    return [(v - lo) / span for v in values]


def reasons_of(
    candidates: Iterable[HostCandidate],
    instance: Instance,
    source: Host,
    excluded: Mapping[str, str] | None = None,
    filters: Iterable[Filter] = FILTERS,
) -> tuple[list[HostCandidate], dict[str, str]]:
    """The candidates passing every filter, and every other host's reason (the source is never a
    candidate and needs no explanation; an excluded host keeps the reason it was excluded for)."""
    excluded = dict(excluded or {})
    reasons: dict[str, str] = {}
    passing: list[HostCandidate] = []
    filters = tuple(filters)
    for c in candidates:
        name = c.host.name
        if name == source.name:
            continue
        if name in excluded:
            reasons[name] = excluded[name] or "excluded"
            continue
        for f in filters:
            why = f(c, instance, source)
            if why:
                reasons[name] = why
                break
        else:
            passing.append(c)
    for name, why in excluded.items():
        if name != source.name:
            reasons.setdefault(name, why or "excluded")
    return passing, reasons


def select_destination(
    candidates: Iterable[HostCandidate],
    instance: Instance,
    source: Host,
    excluded: Mapping[str, str] | None = None,
    filters: Iterable[Filter] = FILTERS,
    weigher: Callable[[HostCandidate], float] | Weighers = free_ram_weight,
) -> str:
    """The best host that passes every filter and is not excluded.

    ``weigher``: a function of the candidate (higher is better) or :class:`Weighers`.
    Raises :class:`NoValidHost` with every host's reason when none qualifies.
    """
    passing, reasons = reasons_of(candidates, instance, source, excluded, filters)
    if not passing:
        raise NoValidHost(reasons)
    if isinstance(weigher, Weighers):
        return weigher.rank([(c.host.name, c.free_memory_mb, c.in_flight) for c in passing])[0]
    fn = weigher
    passing.sort(key=lambda c: (-fn(c), c.host.name))
    return passing[0].host.name
