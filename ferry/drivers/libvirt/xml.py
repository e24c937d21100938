"""Pure functions over libvirt XML: the guest's devices and pinning, the host's NUMA topology, and
the destination XML with a new pinning (seed 004's fix). No libvirt import: unit-testable on
captured XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ferry.model.numa import HostNumaState, NumaCell, NumaTopology, Pinning


def parse_cpuset(text: str) -> frozenset[int]:
    """libvirt's cpuset syntax: ``"0-3,^2,8"`` -> {0, 1, 3, 8}."""
    take: set[int] = set()
    drop: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        target = drop if part.startswith("^") else take
        part = part.lstrip("^")
        if "-" in part:
            lo, hi = part.split("-", 1)
            target.update(range(int(lo), int(hi) + 1))
        else:
            target.add(int(part))
    return frozenset(take - drop)


def format_cpuset(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpuset`, with ranges: {0, 1, 2, 5} -> ``"0-2,5"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


_UNITS_TO_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
}


def _mib(el: ET.Element | None) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    unit = (el.get("unit") or "KiB").lower()
    return int(int(el.text.strip()) * _UNITS_TO_KIB.get(unit, 1) // 1024)  # type: ignore[union-attr]


@dataclass(frozen=True)
class GuestDisk:
    target: str
    device: str  # disk | cdrom | floppy | lun
    kind: str  # file | block | network | volume
    source: str | None
    readonly: bool = False
    shareable: bool = False
    driver_type: str = "raw"

    @property
    def local(self) -> bool:
        """A disk whose bytes live on the host (copied by a block migration)."""
        return (
            self.device == "disk"
            and self.kind in ("file", "block", "volume")
            and not self.readonly
            and not self.shareable
            and self.source is not None
        )


@dataclass(frozen=True)
class GuestInterface:
    kind: str  # network | bridge | direct | user | ...
    source: str | None  # network name / bridge name / device


@dataclass(frozen=True)
class GuestDescription:
    """What ferry needs from a domain's XML."""

    name: str
    uuid: str
    memory_mb: int
    vcpus: int
    virt_type: str
    disks: tuple[GuestDisk, ...] = ()
    interfaces: tuple[GuestInterface, ...] = ()
    #: vCPU -> pCPU set from ``<cputune><vcpupin>``
    vcpupin: Mapping[int, frozenset[int]] = field(default_factory=dict)
    emulatorpin: frozenset[int] = frozenset()
    #: NUMA nodes the memory is bound to (``<numatune><memory nodeset>``)
    memory_nodes: frozenset[int] = frozenset()
    #: the ``<cpu>`` element when it names a model to check on the destination
    cpu_xml: str | None = None
    arch: str = "x86_64"
    machine: str | None = None
    emulator: str | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.vcpupin)

    @property
    def pinned_pcpus(self) -> frozenset[int]:
        """The pCPUs the guest's vCPUs are pinned to (held exclusively, as Nova's dedicated
        policy does; emulator threads may float over shared pCPUs and are not counted)."""
        out: set[int] = set()
        for cpus in self.vcpupin.values():
            out |= cpus
        return frozenset(out)

    @property
    def local_disks(self) -> tuple[GuestDisk, ...]:
        return tuple(d for d in self.disks if d.local)


def describe_guest(xml: str) -> GuestDescription:
    root = ET.fromstring(xml)
    vcpu_el = root.find("vcpu")
    vcpus = int((vcpu_el.text or "1").strip()) if vcpu_el is not None else 1
    disks = []
    for d in root.findall("./devices/disk"):
        src = d.find("source")
        source = None
        if src is not None:
            source = src.get("file") or src.get("dev") or src.get("name") or src.get("volume")
        drv = d.find("driver")
        disks.append(
            GuestDisk(
                target=(d.find("target").get("dev") or "") if d.find("target") is not None else "",  # type: ignore[union-attr]
                device=d.get("device", "disk"),
                kind=d.get("type", "file"),
                source=source,
                readonly=d.find("readonly") is not None,
                shareable=d.find("shareable") is not None,
                driver_type=(drv.get("type") or "raw") if drv is not None else "raw",
            )
        )
    interfaces = []
    for i in root.findall("./devices/interface"):
        src = i.find("source")
        name = None
        kind = i.get("type", "")
        if src is not None:
            name = src.get("network") or src.get("bridge") or src.get("dev")
            if src.get("network"):
                kind = "network"  # the live XML of a bridged network says type='bridge'
        interfaces.append(GuestInterface(kind, name))
    vcpupin = {
        int(p.get("vcpu", "0")): parse_cpuset(p.get("cpuset", ""))
        for p in root.findall("./cputune/vcpupin")
    }
    emu = root.find("./cputune/emulatorpin")
    mem = root.find("./numatune/memory")
    cpu = root.find("cpu")
    cpu_xml = None
    if cpu is not None and cpu.get("mode", "custom") == "custom" and cpu.find("model") is not None:
        cpu_xml = ET.tostring(cpu, encoding="unicode")
    ostype = root.find("./os/type")
    emulator = root.find("./devices/emulator")
    return GuestDescription(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        memory_mb=_mib(root.find("memory")),
        vcpus=vcpus,
        virt_type=root.get("type", "qemu"),
        disks=tuple(disks),
        interfaces=tuple(interfaces),
        vcpupin=vcpupin,
        emulatorpin=parse_cpuset(emu.get("cpuset", "")) if emu is not None else frozenset(),
        memory_nodes=parse_cpuset(mem.get("nodeset", "")) if mem is not None else frozenset(),
        cpu_xml=cpu_xml,
        arch=(ostype.get("arch") or "x86_64") if ostype is not None else "x86_64",
        machine=ostype.get("machine") if ostype is not None else None,
        emulator=(emulator.text or "").strip() or None if emulator is not None else None,
    )


def host_topology(capabilities_xml: str) -> NumaTopology:
    """The NUMA cells of ``virConnectGetCapabilities`` XML (pCPU ids and memory per cell)."""
    root = ET.fromstring(capabilities_xml)
    cells = []
    for c in root.findall("./host/topology/cells/cell"):
        cpus = frozenset(int(cpu.get("id", "0")) for cpu in c.findall("./cpus/cpu"))
        cells.append(NumaCell(int(c.get("id", "0")), cpus, _mib(c.find("memory"))))
    return NumaTopology(tuple(cells))


def host_uuid(capabilities_xml: str) -> str:
    return ET.fromstring(capabilities_xml).findtext("./host/uuid", "")


def numa_state(topology: NumaTopology, guests: Iterable[GuestDescription]) -> HostNumaState:
    """What pinned guests already hold on a host: their pCPUs (by the cell that owns each pCPU)
    and their memory (on the cells their memory is bound to; the cell of their pCPUs when
    unbound)."""
    cell_of = {cpu: cell.id for cell in topology.cells for cpu in cell.cpus}
    pinned: dict[int, set[int]] = {}
    used: dict[int, int] = {}
    for g in guests:
        if not g.pinned:
            continue
        cells_touched: set[int] = set()
        for cpu in g.pinned_pcpus:
            cell = cell_of.get(cpu)
            if cell is not None:
                pinned.setdefault(cell, set()).add(cpu)
                cells_touched.add(cell)
        mem_cells = sorted(g.memory_nodes & set(cell_of.values())) or sorted(cells_touched)
        for k, cell in enumerate(mem_cells):
            share = g.memory_mb // len(mem_cells) + (1 if k < g.memory_mb % len(mem_cells) else 0)
            used[cell] = used.get(cell, 0) + share
    return HostNumaState(topology, {k: frozenset(v) for k, v in pinned.items()}, used)


def rewrite_pinning(xml: str, pinning: Pinning) -> str:
    """The guest XML with vCPU *i* pinned to ``pinning.vcpu_to_pcpu[i]``, the emulator threads on
    the same pCPUs, and the memory bound to the pinning's cell (strict), replacing whatever the
    source used. Everything else is kept as is."""
    root = ET.fromstring(xml)
    cputune = root.find("cputune")
    if cputune is None:
        cputune = ET.SubElement(root, "cputune")
    for el in cputune.findall("vcpupin") + cputune.findall("emulatorpin"):
        cputune.remove(el)
    for vcpu, pcpu in enumerate(pinning.vcpu_to_pcpu):
        ET.SubElement(cputune, "vcpupin", {"vcpu": str(vcpu), "cpuset": str(pcpu)})
    ET.SubElement(cputune, "emulatorpin", {"cpuset": format_cpuset(pinning.vcpu_to_pcpu)})
    numatune = root.find("numatune")
    if numatune is None:
        numatune = ET.SubElement(root, "numatune")
    for el in numatune.findall("memory") + numatune.findall("memnode"):
        numatune.remove(el)
    ET.SubElement(numatune, "memory", {"mode": "strict", "nodeset": str(pinning.cell)})
    vcpu_el = root.find("vcpu")
    if vcpu_el is not None and vcpu_el.get("cpuset"):
        vcpu_el.set("cpuset", format_cpuset(pinning.vcpu_to_pcpu))
    return ET.tostring(root, encoding="unicode")
