"""The simulated cluster's TOML file -> validated, typed specs.

Shape (see the shipped ``demo_cluster.toml``)::

    name = "demo"                       # optional

    [[hosts]]
    name = "compute-1"
    hypervisor_type = "qemu"
    hypervisor_version = 9001000        # integer, as Nova reports it
    vcpus = 32
    memory_mb = 65536
    disk_gb = 400
    bandwidth_mbps = 1200               # migration link speed, MiB/s
    storage_group = "ceph-a"            # optional: hosts in one group share storage
    up = true                           # optional (default true)
    enabled = true                      # optional (default true)
    labels = { rack = "r1" }            # optional; group = "a" / groups = "a,b": host groups
    numa_cells = 2                      # optional: NUMA cells, vCPUs and RAM split evenly, or
                                        # [{ cpus = [0, 1], memory_mb = 8192 }, ...]

    [[instances]]
    uuid = "..."
    name = "web-1"
    host = "compute-1"
    power_state = "running"             # running | paused | shutdown | crashed | nostate
    vcpus = 2
    memory_mb = 4096
    disk_gb = 20                        # local disk (0 = boot from volume)
    dirty_rate_mbps = 150               # how fast the guest dirties RAM, MiB/s
    volumes = [{ id = "vol-1", size_gb = 50, shared = true }]
    vifs = [{ id = "port-1", network = "tenant", mac = "fa:16:3e:00:00:01" }]
    cpu_policy = "dedicated"            # optional: vCPUs pinned to pCPUs of one NUMA cell
    pinning = [4, 5]                    # optional: vCPU i on pCPU pinning[i] (else best fit)

    [[faults]]
    host = "compute-2"
    phase = "check_destination"         # see PHASES
    times = 1                           # 0 = every time
    at = 0.5                            # transfer only: fail when this fraction of RAM is sent
    message = "..."

Every problem (unreadable file, TOML syntax, unknown key, wrong type, bad value, dangling
reference, over-full host) raises :class:`~ferry.errors.ConfigError` with one line naming the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError
from ferry.model import PowerState
from ferry.model.numa import GuestRequest, HostNumaState, NumaCell, NumaTopology, Pinning

from . import cluster_fields as kinds

#: the cluster shipped with ferry (used when no cluster file is configured)
DEMO_CLUSTER = Path(__file__).with_name("demo_cluster.toml")

#: where a fault can be injected; the host it names is the one the phase runs on:
#: the destination for check_destination / pre_live_migration / transfer / never_converge /
#: post_at_destination, the source for check_source / post_at_source
PHASES = (
    "check_destination",
    "check_source",
    "pre_live_migration",
    "transfer",
    "never_converge",
    "post_at_source",
    "post_at_destination",
)
SOURCE_PHASES = frozenset({"check_source", "post_at_source"})

#: a transfer fault without ``at`` fails half way
DEFAULT_FAIL_AT = 0.5


@dataclass(frozen=True)
class HostSpec:
    name: str
    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    disk_gb: int
    bandwidth_mbps: float
    up: bool = True
    enabled: bool = True
    storage_group: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: ``[{"id", "cpus", "memory_mb"}]``; None: no NUMA topology modelled
    numa_cells: list[dict[str, Any]] | None = None

    def topology(self) -> NumaTopology | None:
        if self.numa_cells is None:
            return None
        return topology_of(self.numa_cells)


def topology_of(cells: Sequence[dict[str, Any]]) -> NumaTopology:
    """The NUMA topology of ``[{"id", "cpus", "memory_mb"}]`` cells (a host's ``numa_cells``)."""
    return NumaTopology(
        tuple(NumaCell(c["id"], frozenset(c["cpus"]), c["memory_mb"]) for c in cells)
    )


@dataclass(frozen=True)
class InstanceSpec:
    uuid: str
    name: str
    host: str
    power_state: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    dirty_rate_mbps: float
    volumes: list[dict[str, Any]] = field(default_factory=list)
    vifs: list[dict[str, Any]] = field(default_factory=list)
    #: ``dedicated``: pinned vCPUs; None: floating
    cpu_policy: str | None = None
    #: a pinned guest's pinning (``Pinning.to_dict()``)
    numa_pinning: dict[str, Any] | None = None


@dataclass(frozen=True)
class FaultSpec:
    host: str
    phase: str
    times: int = 0
    at: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    path: str
    hosts: list[HostSpec]
    instances: list[InstanceSpec]
    faults: list[FaultSpec]


_HOST_FIELDS: kinds.Fields = {
    "name": (kinds.string, kinds.REQUIRED),
    "hypervisor_type": (kinds.string, kinds.REQUIRED),
    "hypervisor_version": (kinds.integer(0), kinds.REQUIRED),
    "vcpus": (kinds.integer(1), kinds.REQUIRED),
    "memory_mb": (kinds.integer(1), kinds.REQUIRED),
    "disk_gb": (kinds.integer(0), kinds.REQUIRED),
    "bandwidth_mbps": (kinds.number(0, strict=True), kinds.REQUIRED),
    "up": (kinds.boolean, True),
    "enabled": (kinds.boolean, True),
    "storage_group": (kinds.string, None),
    "labels": (kinds.labels, {}),
    "numa_cells": (kinds.numa_cells, None),
}
_INSTANCE_FIELDS: kinds.Fields = {
    "uuid": (kinds.uuid_text, kinds.REQUIRED),
    "name": (kinds.string, kinds.REQUIRED),
    "host": (kinds.string, kinds.REQUIRED),
    "power_state": (kinds.choice(tuple(s.value for s in PowerState)), PowerState.RUNNING.value),
    "vcpus": (kinds.integer(1), kinds.REQUIRED),
    "memory_mb": (kinds.integer(1), kinds.REQUIRED),
    "disk_gb": (kinds.integer(0), 0),
    "dirty_rate_mbps": (kinds.number(0), 0.0),
    "volumes": (list, []),
    "vifs": (list, []),
    "cpu_policy": (kinds.choice(("shared", "dedicated")), None),
    "pinning": (kinds.pcpus, None),
}
_VOLUME_FIELDS: kinds.Fields = {
    "id": (kinds.string, kinds.REQUIRED),
    "size_gb": (kinds.integer(0), 1),
    "shared": (kinds.boolean, True),
}
_VIF_FIELDS: kinds.Fields = {
    "id": (kinds.string, kinds.REQUIRED),
    "network": (kinds.string, kinds.REQUIRED),
    "mac": (kinds.text, ""),
}
_FAULT_FIELDS: kinds.Fields = {
    "host": (kinds.string, kinds.REQUIRED),
    "phase": (kinds.choice(PHASES), kinds.REQUIRED),
    "times": (kinds.integer(0), 0),
    "at": (kinds.number(0, below=1), None),
    "message": (kinds.string, None),
}
_TOP_LEVEL = ("name", "hosts", "instances", "faults")


# ------------------------------------------------------------------------ loading
def load_cluster(path: str | Path | None = None) -> ClusterSpec:
    """Read and validate a cluster file (the shipped demo cluster when ``path`` is ``None``).

    :raises ConfigError: one line naming the file and the problem.
    """
    file = Path(path).expanduser() if path is not None else DEMO_CLUSTER
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the cluster file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: the cluster file is not UTF-8 text: {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    return parse_cluster(data, str(file.resolve()))


def parse_cluster(data: dict[str, Any], source: str) -> ClusterSpec:
    """Validate an already parsed cluster document; ``source`` names it in error messages.

    :raises ConfigError: one line naming ``source`` and the problem.
    """

    def fail(where: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {where}{': ' if where else ''}{problem}")

    for key in data:
        if key not in _TOP_LEVEL:
            raise fail("", f"unknown top-level key {key!r} (expected {', '.join(_TOP_LEVEL)})")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise fail("name", f"must be a non-empty string, not {kinds.show(name)}")

    hosts = []
    for table, where in kinds.tables(data, "hosts", fail):
        values = kinds.record(table, _HOST_FIELDS, where, fail)
        values["numa_cells"] = _resolve_cells(values, f"{where}.numa_cells", fail)
        hosts.append(HostSpec(**values))
    if not hosts:
        raise fail("hosts", "the cluster needs at least one [[hosts]] entry")
    by_host = _unique(hosts, "hosts", fail)
    numa: dict[str, HostNumaState] = {}
    for h in hosts:
        topology = h.topology()
        if topology is not None:
            numa[h.name] = HostNumaState(topology)

    instances: list[InstanceSpec] = []
    for table, where in kinds.tables(data, "instances", fail):
        values = kinds.record(table, _INSTANCE_FIELDS, where, fail)
        for key, fields in (("volumes", _VOLUME_FIELDS), ("vifs", _VIF_FIELDS)):
            values[key] = kinds.sub_records(values[key], fields, f"{where}.{key}", fail)
        if values["host"] not in by_host:
            raise fail(f"{where}.host", f"unknown host {values['host']!r}")
        pinned = values.pop("pinning")
        if values["cpu_policy"] == "dedicated":
            pinning = _place_pinned(values, pinned, numa, where, fail)
            numa[values["host"]] = numa[values["host"]].with_pinning(pinning)
            values["numa_pinning"] = pinning.to_dict()
        elif pinned is not None:
            raise fail(f"{where}.pinning", 'needs cpu_policy = "dedicated"')
        instances.append(InstanceSpec(**values))
    _unique(instances, "instances", fail)
    seen_uuids: set[str] = set()
    for i, inst in enumerate(instances):
        if inst.uuid in seen_uuids:
            raise fail(f"instances[{i}] ({inst.name!r})", f"duplicate uuid {inst.uuid}")
        seen_uuids.add(inst.uuid)

    for host in hosts:
        on_host = [i for i in instances if i.host == host.name]
        for label, cap, used in (
            ("vcpus", host.vcpus, sum(i.vcpus for i in on_host)),
            ("memory_mb", host.memory_mb, sum(i.memory_mb for i in on_host)),
            ("disk_gb", host.disk_gb, sum(i.disk_gb for i in on_host)),
        ):
            if used > cap:
                raise fail(
                    f"host {host.name!r}",
                    f"its instances need {used} {label} but it has only {cap}",
                )

    faults: list[FaultSpec] = []
    for table, where in kinds.tables(data, "faults", fail):
        values = kinds.record(table, _FAULT_FIELDS, where, fail)
        if values["host"] not in by_host:
            raise fail(f"{where}.host", f"unknown host {values['host']!r}")
        if values["at"] is not None and values["phase"] != "transfer":
            raise fail(f"{where}.at", "only applies to phase 'transfer'")
        faults.append(FaultSpec(**values))
    return ClusterSpec(name=name, path=source, hosts=hosts, instances=instances, faults=faults)


def _resolve_cells(
    host: dict[str, Any], where: str, fail: Callable[[str, str], ConfigError]
) -> list[dict[str, Any]] | None:
    """A host's NUMA cells: ``n`` splits its vCPUs (pCPU ids 0..vcpus-1) and RAM evenly;
    explicit cells must use distinct pCPU ids below ``vcpus`` and no more RAM than the host's."""
    value = host["numa_cells"]
    if value is None:
        return None
    vcpus, memory_mb = host["vcpus"], host["memory_mb"]
    if isinstance(value, int):
        if vcpus % value:
            raise fail(where, f"{vcpus} vcpus do not split evenly into {value} cells")
        per = vcpus // value
        return [
            {"id": k, "cpus": list(range(k * per, (k + 1) * per)), "memory_mb": memory_mb // value}
            for k in range(value)
        ]
    seen: set[int] = set()
    for cell in value:
        if seen & set(cell["cpus"]):
            raise fail(where, f"pCPUs {sorted(seen & set(cell['cpus']))} are in two cells")
        seen |= set(cell["cpus"])
    if seen and max(seen) >= vcpus:
        raise fail(where, f"pCPU {max(seen)} does not exist on a host with {vcpus} vcpus")
    if sum(c["memory_mb"] for c in value) > memory_mb:
        raise fail(where, f"the cells hold more than the host's {memory_mb} MiB")
    return [dict(c, cpus=sorted(c["cpus"])) for c in value]


def _place_pinned(
    inst: dict[str, Any],
    pinned: list[int] | None,
    numa: dict[str, HostNumaState],
    where: str,
    fail: Callable[[str, str], ConfigError],
) -> Pinning:
    """A pinned instance's pinning on its host: the one given (checked: one cell, free pCPUs,
    room in the cell) or the best fit on what the instances before it left free."""
    state = numa.get(inst["host"])
    if state is None:
        raise fail(f"{where}.cpu_policy", f"host {inst['host']!r} has no numa_cells")
    request = GuestRequest(inst["vcpus"], inst["memory_mb"], pinned=True)
    if pinned is None:
        fitted = state.fit(request)
        if isinstance(fitted, str):
            raise fail(where, f"does not fit on {inst['host']}: {fitted}")
        return fitted
    if len(pinned) != inst["vcpus"]:
        raise fail(f"{where}.pinning", f"needs {inst['vcpus']} pCPUs, one per vCPU")
    cell = next((c for c in state.free if pinned[0] in c.free_pcpus), None)
    if cell is None or not set(pinned) <= set(cell.free_pcpus):
        raise fail(f"{where}.pinning", "must name free pCPUs of one NUMA cell")
    if cell.free_mb < inst["memory_mb"]:
        raise fail(f"{where}.pinning", f"cell {cell.cell} has only {cell.free_mb} MiB free")
    return Pinning(cell.cell, tuple(pinned), inst["memory_mb"])


def _unique(
    items: Sequence[HostSpec | InstanceSpec], key: str, fail: Callable[[str, str], ConfigError]
) -> set[str]:
    names: set[str] = set()
    for i, item in enumerate(items):
        if item.name in names:
            raise fail(f"{key}[{i}] ({item.name!r})", f"duplicate name {item.name!r}")
        names.add(item.name)
    return names
