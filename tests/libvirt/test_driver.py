"""ferry's libvirt driver on three real libvirt hosts: the driver contract shared with the
simulated driver, and what only a real hypervisor shows (shared-storage detection, the memory
check, CPU pinning on the destination, a dropped connection)."""

from __future__ import annotations

import dataclasses
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ferry.config import HostConfig
from ferry.drivers.base import TransferPolicy
from ferry.drivers.libvirt import LibvirtDriver
from ferry.errors import DriverError, MigrationPreCheckError, TransferFailed
from ferry.model import MigrateData
from ferry.scheduler.filters import hypervisor_mismatch
from tests.drivers.contract import DriverContract, DriverEnv, prepare, run_to_end
from tests.infra.guest import Guest
from tests.infra.libvirt_hosts import LIBVIRT_PORT
from tests.libvirt import import_libvirt
from tests.libvirt.helpers import host_configs, make_driver, running_copies

libvirt = import_libvirt()

pytestmark = pytest.mark.libvirt


class TestLibvirtContract(DriverContract):
    """The contract suite: a 64 MiB guest with its RAM filled, moved lv-a -> lv-b at 16 MiB/s
    (about 4 s, so a transfer can be watched and aborted); lv-c is short of memory."""

    @pytest.fixture
    def driver_env(
        self, libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
    ) -> Iterator[DriverEnv]:
        guest = make_guest("contract-1", memory_mib=64, kernel="idle", host="A")
        driver = make_driver(libvirt_hosts)
        yield DriverEnv(
            driver=driver,
            instance=guest.domain.UUIDString(),
            source="lv-a",
            destination="lv-b",
            bad_destination="lv-c",
            wait=time.sleep,
            artifacts=driver.artifacts,
            policy=TransferPolicy(bandwidth_mbps=16),
            poll_s=0.25,
            max_wait_s=120,
        )
        driver.close()


def _uuid(guest: Guest) -> str:
    return str(guest.domain.UUIDString())


def test_shared_storage_is_detected_and_decides_block_migration(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    """A and B share their instances directory, C does not: the marker written on the
    destination is seen from the source for B only; block migration follows for C."""
    guest = make_guest("small-1", memory_mib=16, kernel="idle", host="A")
    driver = make_driver(libvirt_hosts)
    inst = driver.find_instance(_uuid(guest))
    assert inst is not None
    to_b = driver.check_can_live_migrate_destination(inst, "lv-b", None)
    to_c = driver.check_can_live_migrate_destination(inst, "lv-c", None)
    assert (to_b.shared_storage, to_b.block_migration) == (True, False)
    assert (to_c.shared_storage, to_c.block_migration) == (False, True)
    # the markers are gone from both destinations
    assert driver.artifacts("lv-b", inst.uuid) == driver.artifacts("lv-c", inst.uuid) == []
    # asking for a block migration onto shared storage is refused by the source check
    forced = driver.check_can_live_migrate_destination(inst, "lv-b", True)
    with pytest.raises(MigrationPreCheckError, match="is shared between lv-a and lv-b"):
        driver.check_can_live_migrate_source(inst, forced)
    driver.close()


def test_memory_check_uses_what_the_destination_reports(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    guest = make_guest("mid-1", memory_mib=64, kernel=None, host="A", wait_filled=False)
    driver = make_driver(libvirt_hosts)
    inst = driver.find_instance(_uuid(guest))
    assert inst is not None
    with pytest.raises(MigrationPreCheckError, match="not enough free memory") as info:
        driver.check_can_live_migrate_destination(inst, "lv-c", None)
    assert info.value.host == "lv-c"
    reserve = make_driver(libvirt_hosts, lv_b={"reserved_host_memory_mb": 10**7})
    with pytest.raises(MigrationPreCheckError, match=r"reserved 10000000 MiB"):
        reserve.check_can_live_migrate_destination(inst, "lv-b", None)
    driver.close()
    reserve.close()


def test_a_missing_guest_network_fails_the_destination_check(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    """lv-c has no "ferry-net": a guest with a NIC on it cannot go there (the reschedule would
    try the next host); lv-b has it."""
    guest = make_guest("nic-1", memory_mib=16, kernel="idle", host="A", network="ferry-net")
    driver = make_driver(libvirt_hosts)
    inst = driver.find_instance(_uuid(guest))
    assert inst is not None and inst.vifs == [{"type": "network", "source": "ferry-net"}]
    with pytest.raises(MigrationPreCheckError, match="network ferry-net does not exist"):
        driver.check_can_live_migrate_destination(inst, "lv-c", None)
    assert driver.check_can_live_migrate_destination(inst, "lv-b", None).destination == "lv-b"
    driver.close()


def test_the_same_libvirtd_under_another_name_is_refused(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    """A second [[hosts]] entry pointing at lv-a's libvirtd is lv-a itself (its host UUID
    says so): migrating there would be migrating to itself, refused at the check."""
    guest = make_guest("self-1", memory_mib=16, kernel="idle", host="A")
    configs = host_configs(libvirt_hosts)
    lv_a = next(c for c in configs if c.name == "lv-a")
    configs.append(dataclasses.replace(lv_a, name="lv-a-again"))
    driver = LibvirtDriver.from_host_configs(configs)
    inst = driver.find_instance(_uuid(guest))
    assert inst is not None
    with pytest.raises(MigrationPreCheckError, match="same libvirt host as lv-a"):
        driver.check_can_live_migrate_destination(inst, "lv-a-again", None)
    driver.close()


def test_another_hypervisor_type_is_refused(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], tmp_path: Any
) -> None:
    """A destination whose libvirt runs another hypervisor is refused at the check, with both
    types named. The only other hypervisor this machine can run is libvirt's own ``test``
    driver (in-process, type TEST): a real libvirt connection answering getType/getVersion."""
    guest = make_guest("other-1", memory_mib=16, kernel="idle", host="A")
    configs = host_configs(libvirt_hosts)
    configs.append(
        HostConfig(
            name="lv-test",
            driver="libvirt",
            options={"uri": "test:///default", "instances_path": str(tmp_path)},
        )
    )
    driver = LibvirtDriver.from_host_configs(configs)
    try:
        other = driver.host_info("lv-test")
        assert other.up and other.hypervisor_type == "test"
        inst = driver.find_instance(_uuid(guest))
        assert inst is not None and inst.host == "lv-a"
        with pytest.raises(MigrationPreCheckError, match="hypervisor test differs from qemu"):
            driver.check_can_live_migrate_destination(inst, "lv-test", None)
        # the scheduler-side filter says the same about the cached reports
        why = hypervisor_mismatch(driver.host_info("lv-a"), other)
        assert why == "hypervisor type test differs from the source's qemu"
    finally:
        driver.close()


def test_an_unreachable_host_is_down_not_an_error(tmp_path: Any) -> None:
    """Nothing listens on the host's port: host_info and host_status report it down (the
    validation and the checks refuse it by that), with no exception."""
    driver = LibvirtDriver.from_host_configs(
        [
            HostConfig(
                name="lv-gone",
                driver="libvirt",
                options={"uri": "qemu+tcp://127.0.0.1:9/system", "instances_path": str(tmp_path)},
            )
        ]
    )
    try:
        info = driver.host_info("lv-gone")
        assert not info.up and not driver.host_status("lv-gone").up
        assert info.down_reason and "127.0.0.1" in info.down_reason  # what `ferry hosts` shows
    finally:
        driver.close()


def test_a_storage_pool_destroyed_meanwhile_is_reopened(
    libvirt_hosts: dict[str, Any], libvirt_connect: Any
) -> None:
    """Host info keeps the instances_path pool between calls. Destroyed by someone else in
    between, it makes that one report partial (the host is still up) and is opened again."""
    driver = make_driver(libvirt_hosts)
    try:
        assert driver.host_info("lv-a").disk_gb > 0
        path = driver.specs["lv-a"].instances_path
        conn = libvirt_connect("A")
        ours = [p for p in conn.listAllStoragePools(0) if f"<path>{path}</path>" in p.XMLDesc(0)]
        assert ours
        for pool in ours:
            pool.destroy()
        assert driver.host_info("lv-a").up
        again = driver.host_info("lv-a")
        assert again.up and again.disk_gb > 0
    finally:
        driver.close()


def test_post_at_source_fails_while_the_source_cannot_be_reached(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    """After the switchover the guest runs on lv-b; with lv-a unreachable the post step at
    the source cannot make sure the source copy is gone, so it fails (the roll-forward retries
    it) instead of passing."""
    guest = make_guest("post-1", memory_mib=16, kernel="idle", host="B")
    driver = make_driver(libvirt_hosts, lv_a={"uri": "qemu+tcp://127.0.0.1:9/system"})
    try:
        inst = driver.find_instance(_uuid(guest))
        assert inst is not None and inst.host == "lv-b"
        data = MigrateData(inst.uuid, "lv-a", "lv-b", shared_storage=True)
        with pytest.raises(DriverError, match="lv-a"):
            driver.post_live_migration_at_source(inst, data)
    finally:
        driver.close()


def test_pinned_guest_gets_free_pcpus_on_the_destination(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """Seed 004 on real hosts: the moving guest is pinned to pCPU 0 on A; on B another guest
    already holds pCPU 0, so the destination XML pins it to pCPU 1 -- and when B has no free
    pCPU left the destination check fails with each cell's free pCPUs."""
    mover = make_guest("pinned-1", memory_mib=32, kernel="idle", host="A", pinned=["0"])
    make_guest("holder-0", memory_mib=16, kernel=None, host="B", pinned=["0"], wait_filled=False)
    driver = make_driver(libvirt_hosts)
    inst = driver.find_instance(_uuid(mover))
    assert inst is not None and inst.extra["pinned_pcpus"] == [0]
    data = driver.check_can_live_migrate_destination(inst, "lv-b", None)
    assert data.pinning is not None and data.pinning.vcpu_to_pcpu == (1,)
    data = driver.check_can_live_migrate_source(inst, data)
    data = driver.pre_live_migration(inst, data)
    driver.start_transfer(inst, data, TransferPolicy())
    env = DriverEnv(driver, inst.uuid, "lv-a", "lv-b", "lv-c", time.sleep, poll_s=0.2)
    assert run_to_end(env, inst, data).state == "completed"
    driver.post_live_migration_at_source(inst, data)
    driver.post_live_migration_at_destination(inst, data)
    moved = libvirt_connect("B").lookupByUUIDString(inst.uuid)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):  # live and persistent definitions
        root = ET.fromstring(moved.XMLDesc(flags))
        assert [p.get("cpuset") for p in root.findall("./cputune/vcpupin")] == ["1"]
        assert root.find("./numatune/memory").get("nodeset") == "0"  # type: ignore[union-attr]
    assert moved.vcpuPinInfo(0)[0] == (False, True)  # vCPU 0 may run on pCPU 1 only

    # B is full now (pCPU 0: holder-0, pCPU 1: pinned-1): a third pinned guest fits nowhere
    third = make_guest("pinned-2", memory_mib=16, kernel=None, host="A", pinned=["1"])
    inst3 = driver.find_instance(_uuid(third))
    assert inst3 is not None
    with pytest.raises(MigrationPreCheckError, match="no NUMA cell fits 1 pinned vCPUs"):
        driver.check_can_live_migrate_destination(inst3, "lv-b", None)
    driver.close()


def test_pcpus_taken_after_the_check_stop_the_transfer(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """The pinning chosen at the destination check is checked again when the transfer starts:
    a guest pinned meanwhile onto the same pCPU (started outside ferry) stops it, and the guest
    stays where it was."""
    mover = make_guest("pinned-3", memory_mib=16, kernel="idle", host="A", pinned=["1"])
    driver = make_driver(libvirt_hosts)
    inst = driver.find_instance(_uuid(mover))
    assert inst is not None
    env = DriverEnv(driver, inst.uuid, "lv-a", "lv-b", "lv-c", time.sleep, poll_s=0.2)
    instance, data = prepare(env)
    assert data.pinning is not None and data.pinning.vcpu_to_pcpu == (0,)
    make_guest("intruder", memory_mib=16, kernel=None, host="B", pinned=["0"], wait_filled=False)
    with pytest.raises(TransferFailed, match=r"pCPUs \[0\] chosen for pinned-3"):
        driver.start_transfer(instance, data, TransferPolicy())
    assert list(running_copies(libvirt_connect, inst.uuid)) == ["A"]
    driver.rollback_live_migration_at_destination(instance, data)
    driver.close()


def test_abort_right_after_the_start_cancels_the_transfer(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """An abort in the instant between start_transfer returning and libvirt showing the job
    still cancels the transfer (it must not find "nothing in flight" and let it run)."""
    guest = make_guest("early-1", memory_mib=64, kernel="idle", host="A")
    driver = make_driver(libvirt_hosts)
    env = DriverEnv(driver, _uuid(guest), "lv-a", "lv-b", "lv-c", time.sleep, poll_s=0.2)
    inst, data = prepare(env)
    driver.start_transfer(inst, data, TransferPolicy(bandwidth_mbps=16))
    driver.abort_transfer(inst, data)
    assert driver.transfer_progress(inst, data).state == "cancelled"
    assert running_copies(libvirt_connect, inst.uuid) == {"A": (1, 1)}
    driver.rollback_live_migration_at_destination(inst, data)
    driver.close()


def test_monitoring_survives_a_dropped_connection(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """The connection ferry monitors the transfer through is closed under it mid-transfer: the
    driver opens a new one and follows the transfer to its end (it runs inside libvirtd)."""
    guest = make_guest("drop-1", memory_mib=64, kernel="idle", host="A")
    driver = make_driver(libvirt_hosts)
    env = DriverEnv(driver, _uuid(guest), "lv-a", "lv-b", "lv-c", time.sleep, poll_s=0.2)
    inst, data = prepare(env)
    driver.start_transfer(inst, data, TransferPolicy(bandwidth_mbps=16))
    seen = driver.transfer_progress(inst, data)
    assert seen.state == "running"
    driver._lookup.conn("lv-a").get().close()  # the socket goes away under the driver
    progress = run_to_end(env, inst, data)
    assert progress.state == "completed"
    driver.post_live_migration_at_source(inst, data)
    driver.post_live_migration_at_destination(inst, data)
    assert list(running_copies(libvirt_connect, inst.uuid)) == ["B"]
    driver.close()


def _cut_tcp(ip: str) -> list[str]:
    """Destroy every TCP connection of this machine's root namespace to ``ip``'s libvirtd (the
    kernel aborts them, as a reset on the wire would); the local ends that were cut."""
    listed = subprocess.run(
        ["ss", "-tnH", "-K", "dst", ip, "dport", "=", str(LIBVIRT_PORT)],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line.split()[2] for line in listed.stdout.splitlines() if line.strip()]


def test_monitoring_survives_its_tcp_connections_being_cut(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """Mid-transfer the kernel aborts every TCP connection ferry has to the source's libvirtd:
    the one the migrate call waits on and the one it monitors through. The peer-to-peer
    migration runs inside libvirtd and carries on; the driver reconnects, finds the job
    still there, follows it to its end and the guest runs once, on B."""
    guest = make_guest("cut-1", memory_mib=64, kernel="idle", host="A")
    driver = make_driver(libvirt_hosts)
    env = DriverEnv(driver, _uuid(guest), "lv-a", "lv-b", "lv-c", time.sleep, poll_s=0.2)
    inst, data = prepare(env)
    driver.start_transfer(inst, data, TransferPolicy(bandwidth_mbps=16))
    assert driver.transfer_progress(inst, data).state == "running"
    cut = _cut_tcp(libvirt_hosts["lv-a"]["ip"])
    assert len(cut) >= 2, cut  # the migrate call's connection and the monitor's
    # libvirt on A still migrates: the job is there, seen through its unix socket
    assert libvirt_connect("A").lookupByUUIDString(inst.uuid).jobInfo()[0] != 0
    progress = run_to_end(env, inst, data)
    assert progress.state == "completed", progress
    driver.post_live_migration_at_source(inst, data)
    driver.post_live_migration_at_destination(inst, data)
    assert running_copies(libvirt_connect, inst.uuid) == {"B": (1, 2)}
    driver.close()
