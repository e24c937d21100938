"""Smoke tests of the real libvirt test environment itself, with raw libvirt-python (no ferry):
three distinct hosts, live migration A->B and back, progress under a bandwidth cap, abort, a
dirtying guest that does not converge, and the layout ferry's driver relies on (shared storage
for A<->B only, C short of memory and of the guest network)."""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.guest import Guest
from tests.infra.libvirt_hosts import (
    GUEST_NETWORK,
    LIBVIRT_PORT,
    TLS_CERT_DIR,
    TLS_HOSTS,
    HostsError,
    LibvirtHosts,
)
from tests.libvirt import import_libvirt

libvirt = import_libvirt()

pytestmark = pytest.mark.libvirt

LIVE = (
    libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
UNLIMITED = 8796093022207  # MiB/s: libvirt's maximum, i.e. no cap


class Migration(threading.Thread):
    """migrateToURI3 in a thread, so the test can watch jobStats() meanwhile."""

    def __init__(self, dom: Any, dest_uri: str, params: dict[str, Any], flags: int) -> None:
        super().__init__(daemon=True)
        self.dom, self.dest_uri, self.params, self.flags = dom, dest_uri, params, flags
        self.error: Any = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.dom.migrateToURI3(self.dest_uri, self.params, self.flags)
        except libvirt.libvirtError as e:
            self.error = e
        self.seconds = time.monotonic() - started

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"migration still running after {timeout} s"


def watch_job(
    dom: Any, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Poll dom.jobStats() every 0.1 s (samples of an active job only) until ``until(samples)``
    holds; fails at the deadline or if the job ends first."""
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    seen_active = False
    while time.monotonic() < deadline:
        stats = dom.jobStats()
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_UNBOUNDED:
            seen_active = True
            samples.append(stats)
            if until(samples):
                return samples
        elif seen_active:
            pytest.fail(f"the job ended before the condition held; last samples: {samples[-3:]}")
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout} s; last samples: {samples[-3:]}")


def names(conn: Any) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains())


def host_uuid(conn: Any) -> str:
    match = re.search(r"<host>\s*<uuid>([^<]+)</uuid>", conn.getCapabilities())
    assert match, "no host uuid in the capabilities"
    return match.group(1)


def migrate(guest_name: str, src: Any, dest: Any, dest_uri: str, flags: int = LIVE) -> float:
    """Migrate and check the outcome: running (reason: migrated) and persistent on dest, gone
    from src. Returns the seconds migrateToURI3 took."""
    started = time.monotonic()
    src.lookupByName(guest_name).migrateToURI3(dest_uri, {}, flags)
    seconds = time.monotonic() - started
    dom = dest.lookupByName(guest_name)
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED]
    assert dom.isPersistent()
    assert guest_name not in names(src)
    return seconds


# ----------------------------------------------------------------------------- the hosts


def test_three_distinct_hosts(
    libvirt_env: LibvirtHosts,
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    assert sorted(libvirt_hosts) == ["lv-a", "lv-b", "lv-c"]
    uuids = set()
    for name, info in libvirt_hosts.items():
        conn = libvirt_connect(name, tcp=True)  # the TCP listener, from the root netns
        assert conn.getType() == "QEMU"
        assert conn.getHostname() == name
        uuids.add(host_uuid(conn))
        assert info["config"] == {
            "name": name,
            "driver": "libvirt",
            "uri": f"qemu+tcp://{info['ip']}/system",
            "instances_path": info["instances_path"],
            "tls_cert_dir": TLS_CERT_DIR,
        }
        # migration TLS certificates on A and B (from one CA), none on C
        certs = libvirt_env.settings.directory / info["key"] / "etc" / "pki" / "qemu"
        expected = {"ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem"}
        expected |= {"client-key.pem"}
        listed = {p.name for p in certs.iterdir()}
        assert listed == (expected if info["key"] in TLS_HOSTS else set()), listed
        # libvirtd listens on its namespace's address only (LISTEN sockets of that netns)
        pid = libvirt_env.libvirtd(info["key"])
        assert pid is not None
        listening = {
            (_ip4(fields[1]), int(fields[1].split(":")[1], 16))
            for fields in (
                ln.split() for ln in Path(f"/proc/{pid[0]}/net/tcp").read_text().splitlines()[1:]
            )
            if fields[3] == "0A"
        }
        assert (info["ip"], LIBVIRT_PORT) in listening
        assert ("0.0.0.0", LIBVIRT_PORT) not in listening
    assert len(uuids) == 3, "the hosts must have distinct host UUIDs"


def _ip4(hex_addr_port: str) -> str:
    raw = bytes.fromhex(hex_addr_port.split(":")[0])
    return socket.inet_ntoa(raw[::-1])


def test_host_c_is_short_of_memory_and_network(
    libvirt_hosts: dict[str, dict[str, Any]], libvirt_connect: Callable[..., Any]
) -> None:
    c = libvirt_connect("lv-c")
    info = libvirt_hosts["lv-c"]
    assert c.getInfo()[1] == info["advertised_memory_mib"]
    assert c.getFreeMemory() == info["advertised_free_mib"] << 20
    assert c.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)["free"] < 64 << 10  # KiB
    assert c.listAllNetworks() == []
    for name in ("lv-a", "lv-b"):
        conn = libvirt_connect(name)
        assert conn.getFreeMemory() > 512 << 20
        assert conn.networkLookupByName(GUEST_NETWORK).isActive()


def test_instances_path_shared_by_a_and_b_only(
    libvirt_hosts: dict[str, dict[str, Any]], libvirt_connect: Callable[..., Any]
) -> None:
    """The shared-storage probe a driver can run through libvirt alone: a transient ``dir``
    pool on the instances path of each host, a marker volume made on one, looked for on the
    other."""
    pools = {}
    for name, info in libvirt_hosts.items():
        xml = (
            f"<pool type='dir'><name>probe</name><target><path>{info['instances_path']}"
            "</path></target></pool>"
        )
        pools[name] = libvirt_connect(name).storagePoolCreateXML(xml, 0)

    def visible(on: str, from_: str) -> bool:
        # a unique name per probe, and a refresh first: a pool caches its volume list, which
        # goes stale when another host changes the same directory
        name = f".ferry-marker-{uuid.uuid4().hex}"
        pools[on].refresh(0)
        vol = pools[on].createXML(
            f"<volume><name>{name}</name><capacity>0</capacity>"
            "<target><format type='raw'/></target></volume>",
            0,
        )
        try:
            pools[from_].refresh(0)
            return name in pools[from_].listVolumes()
        finally:
            vol.delete(0)

    assert visible("lv-b", "lv-a") and visible("lv-a", "lv-b")
    assert not visible("lv-c", "lv-a") and not visible("lv-a", "lv-c")
    assert not visible("lv-c", "lv-b")
    a, c = libvirt_hosts["lv-a"], libvirt_hosts["lv-c"]
    assert a["shares_storage_with"] == ["lv-b"] and c["shares_storage_with"] == []
    assert a["local_instances_path"] == libvirt_hosts["lv-b"]["local_instances_path"]
    assert a["local_instances_path"] != c["local_instances_path"]


# ---------------------------------------------------------------------------------- guests


def test_migrate_a_to_b_and_back(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    started = time.monotonic()
    guest = make_guest("mig64", memory_mib=64, kernel="idle", host="A")
    boot = time.monotonic() - started
    a, b = libvirt_connect("A"), libvirt_connect("B")
    there = migrate("mig64", a, b, libvirt_hosts["lv-b"]["uri"])
    back = migrate("mig64", b, a, libvirt_hosts["lv-a"]["uri"])
    stats = a.lookupByName("mig64").jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    print(
        f"\n64 MiB guest: start+fill {boot:.2f} s, A->B {there:.2f} s, B->A {back:.2f} s, "
        f"downtime {stats.get('downtime')} ms, {stats.get('memory_processed', 0) >> 20} MiB"
    )
    # the filled RAM really went over the wire (pseudo-random pages, not zero pages)
    assert stats["memory_normal_bytes"] > 48 << 20
    # the same guest, not a rebooted one: one boot, one fill, halted
    assert guest.console_text() == "F.H"


def test_progress_during_bandwidth_limited_transfer(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    make_guest("slow", memory_mib=64, kernel="idle")
    dom = libvirt_connect("A").lookupByName("slow")
    job = Migration(
        dom, libvirt_hosts["lv-b"]["uri"], {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 8}, LIVE
    )
    job.start()

    def advancing(samples: list[dict[str, Any]]) -> bool:
        processed = [s["memory_processed"] for s in samples if s.get("memory_processed")]
        return len(set(processed)) >= 3 and processed == sorted(processed)

    samples = watch_job(dom, advancing)
    last = samples[-1]
    assert last["memory_total"] >= 60 << 20
    assert 0 < last["memory_remaining"] < last["memory_total"]
    assert last["memory_bps"] < 12 << 20  # about the cap (8 MiB/s), far from line rate
    dom.migrateSetMaxSpeed(UNLIMITED, 0)  # lift the cap mid-flight; the transfer completes
    job.finish()
    assert job.error is None, job.error
    assert names(libvirt_connect("B")) == ["slow"]


def test_abort_leaves_guest_running_on_source(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    make_guest("abortme", memory_mib=64, kernel="idle")
    a, b = libvirt_connect("A"), libvirt_connect("B")
    dom = a.lookupByName("abortme")
    job = Migration(
        dom, libvirt_hosts["lv-b"]["uri"], {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 4}, LIVE
    )
    job.start()
    watch_job(dom, lambda s: s[-1].get("memory_processed", 0) > 0)
    dom.abortJob()
    job.finish()
    assert job.error is not None
    assert job.error.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert dom.isPersistent()
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert names(b) == []


def test_dirty_guest_does_not_converge_at_32_mib_s(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    guest = make_guest("dirty", memory_mib=64, kernel="dirty")
    dom = libvirt_connect("A").lookupByName("dirty")
    job = Migration(
        dom, libvirt_hosts["lv-b"]["uri"], {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 32}, LIVE
    )
    job.start()
    # three pre-copy passes (~2 s each at 32 MiB/s): each re-sync finds nearly all RAM dirty
    # again, far more than fits in the allowed downtime, so the job never completes
    samples = watch_job(dom, lambda s: s[-1].get("memory_iteration", 0) >= 3)
    resyncs = [
        s
        for prev, s in itertools.pairwise(samples)
        if s.get("memory_iteration", 0) > max(prev.get("memory_iteration", 0), 1)
    ]
    assert len(resyncs) >= 2
    assert all(s["memory_remaining"] > 32 << 20 for s in resyncs), resyncs
    assert all(s["memory_dirty_rate"] > 0 for s in resyncs)
    passes = guest.passes()
    dom.abortJob()
    job.finish()
    assert job.error is not None
    # libvirt reports the abort, or (when the destination's QEMU saw the stream end first) the
    # destination's failed load: both are this abort
    aborted = job.error.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED
    assert aborted or "load of migration failed" in str(job.error), job.error
    guest.wait_passes(passes + 1)  # still running, still dirtying, on the source
    print(f"\ndirty guest after {len(samples)} samples: {samples[-1]}")


def test_guest_network_only_on_a_and_b(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    make_guest("nic", kernel="idle", network=GUEST_NETWORK)
    a, b = libvirt_connect("A"), libvirt_connect("B")
    migrate("nic", a, b, libvirt_hosts["lv-b"]["uri"])
    with pytest.raises(libvirt.libvirtError) as err:
        b.lookupByName("nic").migrateToURI3(libvirt_hosts["lv-c"]["uri"], {}, LIVE)
    assert err.value.get_error_code() == libvirt.VIR_ERR_NO_NETWORK
    assert b.lookupByName("nic").isActive()


def test_disk_guest_shared_and_block_migration(
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    """What a driver meets with a disk in the instances directory: A<->B share it, but libvirt
    cannot tell (a bind mount, not NFS/GlusterFS/...), so a plain live migration is refused as
    unsafe and needs VIR_MIGRATE_UNSAFE; to C it needs NON_SHARED_DISK (block migration) and
    the instance directory prepared on C as a storage pool, so libvirt pre-creates the image."""
    guest = make_guest("withdisk", kernel="idle", disk=True)
    assert guest.disk == f"{libvirt_hosts['lv-a']['instances_path']}/withdisk/disk"
    assert (Path(libvirt_hosts["lv-b"]["local_instances_path"]) / "withdisk" / "disk").exists()
    a, b, c = (libvirt_connect(h) for h in "ABC")
    with pytest.raises(libvirt.libvirtError) as err:
        a.lookupByName("withdisk").migrateToURI3(libvirt_hosts["lv-b"]["uri"], {}, LIVE)
    assert err.value.get_error_code() == libvirt.VIR_ERR_MIGRATE_UNSAFE
    migrate("withdisk", a, b, libvirt_hosts["lv-b"]["uri"], LIVE | libvirt.VIR_MIGRATE_UNSAFE)
    instance_dir = f"{libvirt_hosts['lv-c']['instances_path']}/withdisk"
    c.storagePoolCreateXML(
        f"<pool type='dir'><name>withdisk</name><target><path>{instance_dir}</path></target>"
        "</pool>",
        libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD,
    )
    block = LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK
    migrate("withdisk", b, c, libvirt_hosts["lv-c"]["uri"], block)
    assert (Path(libvirt_hosts["lv-c"]["local_instances_path"]) / "withdisk" / "disk").exists()


def test_pinned_guest(make_guest: Callable[..., Guest]) -> None:
    guest = make_guest("pinned", vcpus=2, pinned=True, kernel=None)
    dom = guest.domain
    cpus = dom.connect().getInfo()[2]
    pins = dom.vcpuPinInfo(0)
    for vcpu, mask in enumerate(pins):
        assert [i for i, on in enumerate(mask) if on] == [vcpu % cpus]
    assert "<vcpupin vcpu='0' cpuset='0'/>" in dom.XMLDesc(0)
    assert dom.numaParameters(0)["numa_nodeset"] == "0"


def test_transient_seabios_guest(make_guest: Callable[..., Guest]) -> None:
    guest = make_guest("bios", kernel=None, persistent=False)
    assert guest.domain.isActive() and not guest.domain.isPersistent()


# ----------------------------------------------------------------- failures tests can inject


def test_restart_daemon_keeps_guests_running(
    libvirt_env: LibvirtHosts,
    make_guest: Callable[..., Guest],
    libvirt_connect: Callable[..., Any],
) -> None:
    guest = make_guest("survivor", host="B")
    before = libvirt_connect("B")
    old = libvirt_env.libvirtd("B")
    libvirt_env.restart_daemon("B")
    assert libvirt_env.libvirtd("B") not in (None, old)
    with pytest.raises(libvirt.libvirtError):
        before.lookupByName("survivor")  # the old connection is gone with the old daemon
    dom = libvirt_connect("B").lookupByName("survivor")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert guest.console_text() == "F.H"  # not restarted


def test_set_link_cuts_tcp(libvirt_env: LibvirtHosts) -> None:
    c = libvirt_env.hosts()["C"]
    libvirt_env.set_link("C", False)
    assert libvirt_env.links_down() == ["C"]
    with pytest.raises(OSError):
        socket.create_connection((c.ip, LIBVIRT_PORT), timeout=0.5).close()
    libvirt_env.set_link("C", True)
    assert libvirt_env.links_down() == []
    socket.create_connection((c.ip, LIBVIRT_PORT), timeout=1).close()


def test_root_link_cut_leaves_hosts_migrating(
    libvirt_env: LibvirtHosts,
    make_guest: Callable[..., Guest],
    libvirt_hosts: dict[str, dict[str, Any]],
    libvirt_connect: Callable[..., Any],
) -> None:
    """The orchestrator's view lost (its TCP connections), the hosts' traffic not: what a
    "connection dropped during monitoring" test needs."""
    make_guest("cut", kernel="idle")
    a = libvirt_connect("A")  # unix socket: still usable, to drive and check the migration
    libvirt_env.set_link("root", False)
    assert libvirt_env.links_down() == ["root"]
    for info in libvirt_hosts.values():
        with pytest.raises(OSError):
            socket.create_connection((info["ip"], LIBVIRT_PORT), timeout=0.3).close()
    migrate("cut", a, libvirt_connect("B"), libvirt_hosts["lv-b"]["uri"])  # A -> B over TCP
    libvirt_env.set_link("root", True)
    socket.create_connection((libvirt_hosts["lv-b"]["ip"], LIBVIRT_PORT), timeout=1).close()


def test_second_instance_up_down_leaves_nothing(libvirt_env: LibvirtHosts, tmp_path: Path) -> None:
    """Another instance beside the session's (its own subnet and tag), brought up and down
    twice: afterwards no process, namespace, interface or address of it is left."""
    net = libvirt_env.settings.net.rsplit(".", 1)
    other = LibvirtHosts(tmp_path / "second", net=f"{net[0]}.{int(net[1]) + 1}")
    for _ in range(2):
        try:
            other.up()
        except HostsError as e:
            if "already in use" in str(e):
                pytest.skip(str(e))
            raise
        assert other.up() == other.hosts()  # idempotent
        pids = [other.libvirtd(k) for k in "ABC"]
        assert None not in pids
        tag = other.settings.tag
        other.down()
        other.down()  # idempotent
        assert not [p for p in pids if p and Path(f"/proc/{p[0]}").exists()]
        assert not [ns for ns in Path("/run/netns").iterdir() if tag in ns.name]
        assert not Path(f"/sys/class/net/fy{tag}").exists()
        assert other.why_down() is not None
    assert libvirt_env.is_up()  # the session's instance is untouched
