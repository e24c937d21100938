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

import math
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError
from ferry.model import PowerState
from ferry.model.numa import GuestRequest, HostNumaState, NumaCell, NumaTopology, Pinning

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
        return NumaTopology(
            tuple(NumaCell(c["id"], frozenset(c["cpus"]), c["memory_mb"]) for c in self.numa_cells)
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


# --------------------------------------------------------------------- field kinds
class _Invalid(Exception):
    """Internal: one field's problem, turned into a ConfigError with file and place."""


def _int(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, not {_show(value)}")
        if value < minimum:
            raise _Invalid(f"must be >= {minimum}, not {value}")
        return value

    return check


def _number(
    minimum: float, *, strict: bool = False, below: float | None = None
) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number, not {_show(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number, not {value}")
        if number < minimum or (strict and number == minimum):
            raise _Invalid(f"must be {'>' if strict else '>='} {minimum:g}, not {value}")
        if below is not None and number >= below:
            raise _Invalid(f"must be < {below:g}, not {value}")
        return number

    return check


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, not {_show(value)}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_show(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_show(value)}")
    return value


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Invalid("must be a table of strings")
    return dict(value)


def _numa_cells(value: Any) -> int | list[dict[str, Any]]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _Invalid(f"must be >= 1, not {value}")
        return value
    if not isinstance(value, list) or not value:
        raise _Invalid("must be a number of cells or an array of { cpus, memory_mb } tables")
    cells = []
    for k, cell in enumerate(value):
        if not isinstance(cell, dict) or set(cell) != {"cpus", "memory_mb"}:
            raise _Invalid(f"cell {k} must be a table with exactly cpus and memory_mb")
        cpus = _pcpus(cell["cpus"])
        cells.append({"id": k, "cpus": cpus, "memory_mb": _int(0)(cell["memory_mb"])})
    return cells


def _pcpus(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value
    ):
        raise _Invalid("must be an array of pCPU ids (integers >= 0)")
    if len(set(value)) != len(value):
        raise _Invalid("lists a pCPU twice")
    return list(value)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise _Invalid(f"must be one of {', '.join(options)}, not {_show(value)}")
        return str(value)

    return check


def _uuid(value: Any) -> str:
    text = _str(value)
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise _Invalid(f"is not a UUID: {text!r}") from None


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_REQUIRED = object()

_HOST_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "name": (_str, _REQUIRED),
    "hypervisor_type": (_str, _REQUIRED),
    "hypervisor_version": (_int(0), _REQUIRED),
    "vcpus": (_int(1), _REQUIRED),
    "memory_mb": (_int(1), _REQUIRED),
    "disk_gb": (_int(0), _REQUIRED),
    "bandwidth_mbps": (_number(0, strict=True), _REQUIRED),
    "up": (_bool, True),
    "enabled": (_bool, True),
    "storage_group": (_str, None),
    "labels": (_labels, {}),
    "numa_cells": (_numa_cells, None),
}
_INSTANCE_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "uuid": (_uuid, _REQUIRED),
    "name": (_str, _REQUIRED),
    "host": (_str, _REQUIRED),
    "power_state": (_choice(tuple(s.value for s in PowerState)), PowerState.RUNNING.value),
    "vcpus": (_int(1), _REQUIRED),
    "memory_mb": (_int(1), _REQUIRED),
    "disk_gb": (_int(0), 0),
    "dirty_rate_mbps": (_number(0), 0.0),
    "volumes": (list, []),
    "vifs": (list, []),
    "cpu_policy": (_choice(("shared", "dedicated")), None),
    "pinning": (_pcpus, None),
}
_VOLUME_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "id": (_str, _REQUIRED),
    "size_gb": (_int(0), 1),
    "shared": (_bool, True),
}
_VIF_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "id": (_str, _REQUIRED),
    "network": (_str, _REQUIRED),
    "mac": (_text, ""),
}
_FAULT_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "host": (_str, _REQUIRED),
    "phase": (_choice(PHASES), _REQUIRED),
    "times": (_int(0), 0),
    "at": (_number(0, below=1), None),
    "message": (_str, None),
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
        raise fail("name", f"must be a non-empty string, not {_show(name)}")

    hosts = []
    for table, where in _tables(data, "hosts", fail):
        values = _record(table, _HOST_FIELDS, where, fail)
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
    for table, where in _tables(data, "instances", fail):
        values = _record(table, _INSTANCE_FIELDS, where, fail)
        for key, fields in (("volumes", _VOLUME_FIELDS), ("vifs", _VIF_FIELDS)):
            values[key] = _sub_records(values[key], fields, f"{where}.{key}", fail)
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
    for table, where in _tables(data, "faults", fail):
        values = _record(table, _FAULT_FIELDS, where, fail)
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


def _tables(
    data: dict[str, Any], key: str, fail: Callable[[str, str], ConfigError]
) -> list[tuple[dict[str, Any], str]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise fail(key, f"must be an array of tables ([[{key}]])")
    return [
        (t, f"{key}[{i}]" + (f" ({t['name']!r})" if isinstance(t.get("name"), str) else ""))
        for i, t in enumerate(value)
    ]


def _record(
    table: dict[str, Any],
    fields: dict[str, tuple[Callable[[Any], Any], Any]],
    where: str,
    fail: Callable[[str, str], ConfigError],
) -> dict[str, Any]:
    for key in table:
        if key not in fields:
            raise fail(where, f"unknown key {key!r} (expected {', '.join(fields)})")
    values: dict[str, Any] = {}
    for key, (check, default) in fields.items():
        if key not in table:
            if default is _REQUIRED:
                raise fail(where, f"missing required key {key!r}")
            values[key] = default.copy() if isinstance(default, dict | list) else default
            continue
        raw = table[key]
        if check is list:
            if not isinstance(raw, list):
                raise fail(f"{where}.{key}", f"must be an array, not {_show(raw)}")
            values[key] = list(raw)
            continue
        try:
            values[key] = check(raw)
        except _Invalid as exc:
            raise fail(f"{where}.{key}", str(exc)) from None
    return values


def _sub_records(
    items: list[Any],
    fields: dict[str, tuple[Callable[[Any], Any], Any]],
    where: str,
    fail: Callable[[str, str], ConfigError],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ids: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"{where}[{i}]", f"must be a table, not {_show(item)}")
        record = _record(item, fields, f"{where}[{i}]", fail)
        if record["id"] in ids:
            raise fail(f"{where}[{i}]", f"duplicate id {record['id']!r}")
        ids.add(record["id"])
        out.append(record)
    return out


def _unique(
    items: Sequence[HostSpec | InstanceSpec], key: str, fail: Callable[[str, str], ConfigError]
) -> set[str]:
    names: set[str] = set()
    for i, item in enumerate(items):
        if item.name in names:
            raise fail(f"{key}[{i}] ({item.name!r})", f"duplicate name {item.name!r}")
        names.add(item.name)
    return names
