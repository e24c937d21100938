"""Filters return ``None`` when a host passes and the reason when it does not; every rejected
host keeps its reason (shown in :class:`~ferry.errors.NoValidHost` and ``ferry show``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ferry.errors import NoValidHost
from ferry.model import Host, Instance


@dataclass(frozen=True)
class HostCandidate:
    """A host with what migrations in flight already claimed on it."""

    host: Host
    claimed_vcpus: int = 0
    claimed_memory_mb: int = 0
    claimed_disk_gb: int = 0

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


FILTERS: tuple[Filter, ...] = (not_source, up_and_enabled, hypervisor_compatible, capacity)


def free_ram_weight(c: HostCandidate) -> float:
    return float(c.free_memory_mb)


def select_destination(
    candidates: Iterable[HostCandidate],
    instance: Instance,
    source: Host,
    excluded: Mapping[str, str] | None = None,
    filters: Iterable[Filter] = FILTERS,
    weigher: Callable[[HostCandidate], float] = free_ram_weight,
) -> str:
    """The best host that passes every filter and is not excluded.

    Raises :class:`NoValidHost` with every host's reason when none qualifies.
    """
    excluded = dict(excluded or {})
    reasons: dict[str, str] = {}
    passing: list[HostCandidate] = []
    filters = tuple(filters)
    for c in candidates:
        name = c.host.name
        if name == source.name:
            continue  # the source is never a candidate and needs no explanation
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
    if not passing:
        for name, why in excluded.items():
            if name != source.name:
                reasons.setdefault(name, why or "excluded")
        raise NoValidHost(reasons)
    passing.sort(key=lambda c: (-weigher(c), c.host.name))
    return passing[0].host.name
