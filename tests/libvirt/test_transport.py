"""The migration transport on the real hosts (``[libvirt]`` tls, parallel_connections,
compression, migration_network): a TLS migration skips the host without certificates (C) and
is encrypted on the wire (QEMU runs it with tls-creds; a capture of the migration port holds
none of the bytes the guest wrote into its RAM), while a plain one over the migration network
carries them in clear to the address chosen in that network; parallel and compressed
migrations complete with the guest running on the destination; zstd is refused by a libvirt
older than 9.4 with the reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.context import Event
from ferry.transport import Transport
from tests.infra.guest import Guest
from tests.infra.libvirt_hosts import LibvirtHosts
from tests.libvirt import import_libvirt, unavailable
from tests.libvirt.capture import (
    MIGRATION_PORTS,
    capture,
    guest_patterns,
    patterns_found,
    tcpdump_problem,
)
from tests.libvirt.helpers import make_driver, make_orchestrator, running_copies

libvirt = import_libvirt()
import libvirt_qemu  # noqa: E402 (libvirt-python's, there once libvirt is)

pytestmark = pytest.mark.libvirt

MEMORY_MIB = 16  # fits C's 48 MiB free, so C is rejected for its missing certificates only


def _uuid(guest: Guest) -> str:
    return str(guest.domain.UUIDString())


@pytest.fixture
def migration_net(libvirt_env: LibvirtHosts) -> Iterator[dict[str, str]]:
    """A second network on A's and B's eth0 (as a dedicated migration network would be):
    {"cidr": ..., "lv-a": address, "lv-b": address}; removed afterwards."""
    third = libvirt_env.settings.net.split(".")[2]
    net = {"cidr": f"172.31.{third}.0/24", "lv-a": f"172.31.{third}.1", "lv-b": f"172.31.{third}.2"}
    added = []
    try:
        for key in ("A", "B"):
            h = libvirt_env[key]
            addr = f"{net[h.name]}/24"
            subprocess.run(["ip", "-n", h.netns, "addr", "add", addr, "dev", "eth0"], check=True)
            added.append((h.netns, addr))
        yield net
    finally:
        for netns, addr in added:
            subprocess.run(["ip", "-n", netns, "addr", "del", addr, "dev", "eth0"], check=False)


def test_tls_skips_the_host_without_certificates_and_encrypts_the_stream(
    db_url: str,
    tmp_path: Path,
    libvirt_env: LibvirtHosts,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
    migration_net: dict[str, str],
) -> None:
    problem = tcpdump_problem()
    if problem:
        unavailable(problem)
    if not libvirt_hosts["lv-b"]["tls"]:
        unavailable("the hosts were brought up without TLS certificates (no openssl command)")
    guest = make_guest("sec-1", memory_mib=MEMORY_MIB, kernel="idle", host="A")
    patterns = guest_patterns()
    total_b = libvirt_connect("B").getInfo()[1]
    # B keeps most of its memory reserved, so the scheduler prefers C (see test_migrations)
    orch = make_orchestrator(
        db_url,
        libvirt_hosts,
        per_host={"lv_b": {"reserved_host_memory_mb": total_b - 512}},
        tls=True,
        live_migration_bandwidth=8,  # ~2 s: time to read QEMU's parameters mid-transfer
    )
    seen: list[dict[str, Any]] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data.get("percent", 0) > 0 and not seen:
            reply = libvirt_qemu.qemuMonitorCommand(
                guest.domain, '{"execute": "query-migrate-parameters"}', 0
            )  # the source QEMU, mid-transfer
            seen.append(json.loads(reply)["return"])

    orch.subscribe(on_event)
    with capture(libvirt_env["B"].netns, tmp_path / "tls.pcap", f"tcp portrange {MIGRATION_PORTS}"):
        m = orch.live_migrate("sec-1")
    orch.close()
    assert m.status == "completed", m.error
    assert [(a.host, a.outcome) for a in m.attempts] == [("lv-c", "rejected"), ("lv-b", "chosen")]
    reason = m.attempts[0].reason or ""
    assert "not set up for TLS migration as the destination (lv-c)" in reason
    assert "server-cert.pem" in reason
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["B"]
    assert seen and seen[0]["tls-creds"], seen  # libvirt's tls-creds-x509 object
    tls_pcap = tmp_path / "tls.pcap"
    assert tls_pcap.stat().st_size > MEMORY_MIB / 2 * 2**20  # the stream was captured
    assert patterns_found(tls_pcap, patterns) == 0

    # back to A in clear, over the migration network: the guest's bytes are on the wire there
    plain = make_orchestrator(
        db_url,
        libvirt_hosts,
        per_host={"lv_a": {"addresses": [migration_net["lv-a"]]}},
        migration_network=migration_net["cidr"],
    )
    bpf = f"tcp and dst host {migration_net['lv-a']} and dst portrange {MIGRATION_PORTS}"
    with capture(libvirt_env["A"].netns, tmp_path / "plain.pcap", bpf):
        back = plain.live_migrate("sec-1", "lv-a")
    plain.close()
    assert back.status == "completed", back.error
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["A"]
    assert patterns_found(tmp_path / "plain.pcap", patterns) > len(patterns) // 2


def test_parallel_and_compressed_migrations_complete(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    guest = make_guest("par-1", memory_mib=32, kernel="idle", host="A")
    orch = make_orchestrator(db_url, libvirt_hosts, parallel_connections=4)
    m = orch.live_migrate("par-1", "lv-b")
    orch.close()
    assert m.status == "completed", m.error
    assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}  # running, migrated
    xbzrle = make_orchestrator(db_url, libvirt_hosts, compression="xbzrle")
    back = xbzrle.live_migrate("par-1", "lv-a")
    xbzrle.close()
    assert back.status == "completed", back.error
    assert running_copies(libvirt_connect, _uuid(guest)) == {"A": (1, 2)}


def test_destination_check_reasons(
    libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest], libvirt_connect: Any
) -> None:
    """Without a migration-network address, or (on libvirt < 9.4) with multifd compression,
    the destination is refused with the reason; parallel connections reach the transfer."""
    make_guest("chk-1", memory_mib=MEMORY_MIB, kernel=None, host="A", wait_filled=False)
    driver = make_driver(libvirt_hosts)
    try:
        inst = driver.find_instance("chk-1")
        assert inst is not None
        with pytest.raises(Exception, match=r"no address in the migration network 192\.0\.2"):
            driver.check_can_live_migrate_destination(
                inst, "lv-b", None, Transport(migration_network="192.0.2.0/24")
            )
        zstd = Transport(parallel_connections=2, compression="zstd", compression_level=3)
        version = libvirt_connect("A").getLibVersion()
        if version < 9_004_000:
            with pytest.raises(Exception, match=r"compression zstd needs libvirt >= 9\.4\.0"):
                driver.check_can_live_migrate_destination(inst, "lv-b", None, zstd)
        else:
            data = driver.check_can_live_migrate_destination(inst, "lv-b", None, zstd)
            assert data.driver_data["transport"]["compression"] == "zstd"
            driver.cleanup_live_migration_destination_check("lv-b", data)
    finally:
        driver.close()
