import pytest

from ferry.errors import NoValidHost
from ferry.model import Host, Instance
from ferry.scheduler import HostCandidate, select_destination


def host(
    name: str,
    free_mb: int = 8192,
    version: int = 9,
    htype: str = "qemu",
    up: bool = True,
    enabled: bool = True,
) -> Host:
    return Host(
        name=name,
        driver="t",
        hypervisor_type=htype,
        hypervisor_version=version,
        vcpus=16,
        memory_mb=16384,
        disk_gb=500,
        memory_mb_used=16384 - free_mb,
        up=up,
        enabled=enabled,
    )


INST = Instance("u", "vm", "src", memory_mb=4096, vcpus=2, disk_gb=10)
SRC = host("src", version=8)


def test_most_free_ram_wins() -> None:
    cands = [HostCandidate(host("a", 6000)), HostCandidate(host("b", 12000)), HostCandidate(SRC)]
    assert select_destination(cands, INST, SRC) == "b"


def test_claims_count_against_free_ram() -> None:
    cands = [
        HostCandidate(host("a", 6000)),
        HostCandidate(host("b", 12000), claimed_memory_mb=9000),
    ]
    assert select_destination(cands, INST, SRC) == "a"


def test_every_rejected_host_has_its_reason() -> None:
    cands = [
        HostCandidate(SRC),
        HostCandidate(host("down", up=False)),
        HostCandidate(host("off", enabled=False)),
        HostCandidate(host("xen", htype="xen")),
        HostCandidate(host("old", version=7)),
        HostCandidate(host("full", 1024)),
        HostCandidate(host("tried")),
    ]
    with pytest.raises(NoValidHost) as info:
        select_destination(cands, INST, SRC, excluded={"tried": "check failed: boom"})
    r = info.value.reasons
    assert r["down"] == "host is down"
    assert r["off"] == "host is disabled"
    assert "hypervisor type" in r["xen"]
    assert "older" in r["old"]
    assert "not enough free RAM" in r["full"]
    assert r["tried"] == "check failed: boom"
    assert "src" not in r
    assert "down: host is down" in str(info.value)
