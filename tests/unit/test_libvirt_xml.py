"""The libvirt driver's XML work (seed 004): host NUMA topology from capabilities XML, what
pinned guests hold, the per-cell fit and the destination XML with the new pinning.

``capabilities_1cell.xml`` was read from a libvirtd on this machine type; ``capabilities_2cell``
is a two-socket host in the same format (pCPUs 0-3,8-11 on cell 0 and 4-7,12-15 on cell 1, SMT
siblings numbered 8 apart as Linux does).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from ferry.drivers.libvirt.xml import (
    describe_guest,
    format_cpuset,
    host_topology,
    host_uuid,
    numa_state,
    parse_cpuset,
    rewrite_pinning,
)
from ferry.model.numa import GuestRequest, Pinning

DATA = Path(__file__).parent / "data"
CAPS_1 = (DATA / "capabilities_1cell.xml").read_text()
CAPS_2 = (DATA / "capabilities_2cell.xml").read_text()


def guest(
    name: str,
    pins: dict[int, str] | None = None,
    memory_mib: int = 2048,
    nodeset: str | None = None,
    extra: str = "",
) -> str:
    vcpus = len(pins) if pins else 2
    cputune = ""
    if pins:
        cputune = (
            "<cputune>"
            + "".join(f"<vcpupin vcpu='{v}' cpuset='{c}'/>" for v, c in pins.items())
            + "<emulatorpin cpuset='"
            + ",".join(pins.values())
            + "'/></cputune>"
        )
    numatune = (
        f"<numatune><memory mode='strict' nodeset='{nodeset}'/></numatune>" if nodeset else ""
    )
    return f"""<domain type='kvm'>
  <name>{name}</name><uuid>6f1f7a4e-2b7d-4c1a-9f4e-{zlib.crc32(name.encode()):012d}</uuid>
  <memory unit='KiB'>{memory_mib * 1024}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  {cputune}{numatune}
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>Skylake-Server</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/ferry/instances/x/disk'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/config.iso'/><target dev='sda'/>
      <readonly/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='vms/x'/>
      <target dev='vdb'/></disk>
    <interface type='network'><source network='tenant-net'/></interface>
    <interface type='bridge'><source bridge='br-ex'/></interface>
    {extra}
  </devices>
</domain>"""


def test_cpuset_syntax_round_trips() -> None:
    assert parse_cpuset("0-3,^2,8") == {0, 1, 3, 8}
    assert parse_cpuset("") == frozenset()
    assert format_cpuset({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_cpuset(format_cpuset({4, 12, 5, 13})) == {4, 5, 12, 13}


def test_topology_of_the_captured_single_cell_host() -> None:
    topo = host_topology(CAPS_1)
    assert [c.id for c in topo.cells] == [0]
    assert topo.cells[0].cpus == {0, 1}
    assert topo.cells[0].memory_mb > 1024
    assert host_uuid(CAPS_1) == "319122af-0d39-4087-bc6b-712b17693e01"


def test_topology_of_a_two_socket_host() -> None:
    topo = host_topology(CAPS_2)
    assert [(c.id, sorted(c.cpus), c.memory_mb) for c in topo.cells] == [
        (0, [0, 1, 2, 3, 8, 9, 10, 11], 32768),
        (1, [4, 5, 6, 7, 12, 13, 14, 15], 32768),
    ]


def test_describe_guest_reads_disks_interfaces_and_pinning() -> None:
    desc = describe_guest(guest("db-1", {0: "2", 1: "10"}, nodeset="0"))
    assert desc.name == "db-1" and desc.vcpus == 2 and desc.memory_mb == 2048
    assert desc.vcpupin == {0: {2}, 1: {10}}
    assert desc.pinned and desc.pinned_pcpus == {2, 10}
    assert desc.memory_nodes == {0}
    assert [d.target for d in desc.local_disks] == ["vda"]  # not the cdrom, not rbd
    assert [(i.kind, i.source) for i in desc.interfaces] == [
        ("network", "tenant-net"),
        ("bridge", "br-ex"),
    ]
    assert desc.cpu_xml is not None and "Skylake-Server" in desc.cpu_xml
    assert (desc.arch, desc.machine, desc.virt_type) == ("x86_64", "pc-q35-7.2", "kvm")
    assert not describe_guest(guest("web-1")).pinned


def test_numa_state_counts_what_pinned_guests_hold() -> None:
    topo = host_topology(CAPS_2)
    state = numa_state(
        topo,
        [
            describe_guest(guest("a", {0: "0", 1: "8"}, 4096, nodeset="0")),
            describe_guest(guest("b", {0: "4", 1: "5", 2: "6"}, 6144)),  # memory unbound
            describe_guest(guest("c")),  # unpinned: holds no pCPU
        ],
    )
    assert state.pinned_by_cell == {0: {0, 8}, 1: {4, 5, 6}}
    assert state.used_mb_by_cell == {0: 4096, 1: 6144}


def test_split_free_pcpus_reject_a_guest_no_single_cell_fits() -> None:
    """Seed 004: 6 free pCPUs on the host, but 3 per cell -> a 4-vCPU pinned guest fits nowhere."""
    topo = host_topology(CAPS_2)
    holders = [
        describe_guest(guest("a", {i: str(c) for i, c in enumerate([0, 1, 2, 8, 9])}, 1024)),
        describe_guest(guest("b", {i: str(c) for i, c in enumerate([4, 5, 6, 12, 13])}, 1024)),
    ]
    state = numa_state(topo, holders)
    fit = state.fit(GuestRequest(vcpus=4, memory_mb=1024))
    assert isinstance(fit, str)
    assert "cell 0 has 3 free pCPUs" in fit and "cell 1 has 3 free pCPUs" in fit


def test_fitting_cell_gets_a_pinning_of_free_pcpus_only() -> None:
    topo = host_topology(CAPS_2)
    state = numa_state(
        topo, [describe_guest(guest("a", {i: str(c) for i, c in enumerate([0, 1, 2, 8])}, 1024))]
    )
    fit = state.fit(GuestRequest(vcpus=4, memory_mb=8192))
    assert isinstance(fit, Pinning)
    cell = next(c for c in topo.cells if c.id == fit.cell)
    assert fit.pcpus <= cell.cpus
    assert not fit.pcpus & {0, 1, 2, 8}
    assert len(fit.pcpus) == 4


def test_rewrite_pinning_replaces_the_source_placement() -> None:
    source = guest("db-1", {0: "2", 1: "10"}, nodeset="0", extra="<memballoon model='none'/>")
    new = rewrite_pinning(source, Pinning(cell=1, vcpu_to_pcpu=(5, 13), memory_mb=2048))
    root = ET.fromstring(new)
    pins = {p.get("vcpu"): p.get("cpuset") for p in root.findall("./cputune/vcpupin")}
    assert pins == {"0": "5", "1": "13"}
    assert root.find("./cputune/emulatorpin").get("cpuset") == "5,13"  # type: ignore[union-attr]
    mem = root.find("./numatune/memory")
    assert mem is not None and (mem.get("mode"), mem.get("nodeset")) == ("strict", "1")
    assert len(root.findall("./cputune/vcpupin")) == 2  # the old pins are gone
    # everything else is kept
    desc, before = describe_guest(new), describe_guest(source)
    assert (desc.name, desc.uuid, desc.memory_mb, desc.disks, desc.interfaces) == (
        before.name,
        before.uuid,
        before.memory_mb,
        before.disks,
        before.interfaces,
    )
    assert root.find("./devices/memballoon") is not None


def test_rewrite_adds_cputune_to_a_guest_without_one() -> None:
    new = rewrite_pinning(guest("web-1"), Pinning(cell=0, vcpu_to_pcpu=(1, 9), memory_mb=2048))
    desc = describe_guest(new)
    assert desc.vcpupin == {0: {1}, 1: {9}} and desc.memory_nodes == {0}


def test_pinning_computed_on_real_capabilities_round_trips_through_the_xml() -> None:
    """The whole seed-004 path on captured XML: what the destination holds -> fit -> rewritten
    XML -> the destination now counts the moved guest's pCPUs as taken."""
    topo = host_topology(CAPS_2)
    residents = [describe_guest(guest("a", {0: "4", 1: "12"}, 2048, nodeset="1"))]
    state = numa_state(topo, residents)
    moving = describe_guest(guest("db-1", {0: "0", 1: "1", 2: "2"}, 4096))
    pinning = state.fit(GuestRequest(moving.vcpus, moving.memory_mb))
    assert isinstance(pinning, Pinning)
    placed = describe_guest(rewrite_pinning(guest("db-1", {0: "0", 1: "1", 2: "2"}, 4096), pinning))
    after = numa_state(topo, [*residents, placed])
    assert after.pinned_by_cell[pinning.cell] >= pinning.pcpus
    assert sum(after.used_mb_by_cell.values()) == 2048 + 4096


@pytest.mark.parametrize("text", ["0-", "a"])
def test_bad_cpuset_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpuset(text)
