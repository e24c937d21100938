"""The simulated cluster's TOML file: the shipped demo and the validation of user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.drivers.simulated import DEMO_CLUSTER, load_cluster
from ferry.drivers.simulated.cluster import parse_cluster
from ferry.errors import ConfigError

HOST = """
[[hosts]]
name = "a"
hypervisor_type = "qemu"
hypervisor_version = 9001000
vcpus = 8
memory_mb = 8192
disk_gb = 100
bandwidth_mbps = 1000
"""
INSTANCE = """
[[instances]]
uuid = "11111111-1111-4111-8111-111111111111"
name = "vm"
host = "a"
vcpus = 2
memory_mb = 2048
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    message = str(err.value)
    assert message.startswith(str(path.resolve())) or message.startswith(str(path))
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------- demo cluster
def test_demo_cluster_shape() -> None:
    spec = load_cluster()
    assert spec.name == "demo" and spec.path == str(DEMO_CLUSTER.resolve())
    assert len(spec.hosts) == 5
    assert len(spec.instances) == 10
    assert len({h.hypervisor_version for h in spec.hosts}) == 2
    assert [h.name for h in spec.hosts if not h.up] == ["compute-5"]
    assert sorted(h.name for h in spec.hosts if h.storage_group == "ceph-a") == [
        "compute-1",
        "compute-2",
        "compute-3",
    ]
    assert any(h.storage_group is None for h in spec.hosts)
    states = [i.power_state for i in spec.instances]
    assert states.count("paused") == 1 and states.count("shutdown") == 1
    web = next(i for i in spec.instances if i.name == "web-1")
    assert (web.memory_mb, web.host, web.power_state) == (4096, "compute-1", "running")
    assert web.dirty_rate_mbps < min(h.bandwidth_mbps for h in spec.hosts)


def test_demo_first_choice_destination_fails_its_check() -> None:
    """The compatible host with the most free RAM for web-1 has a check_destination fault that
    always fires; the next one has none (so the demo shows one reschedule, then success)."""
    spec = load_cluster()
    hosts = {h.name: h for h in spec.hosts}
    web = next(i for i in spec.instances if i.name == "web-1")
    source = hosts[web.host]

    def free_ram(name: str) -> int:
        used = sum(i.memory_mb for i in spec.instances if i.host == name)
        return hosts[name].memory_mb - used

    compatible = sorted(
        (
            h.name
            for h in spec.hosts
            if h.name != source.name
            and h.up
            and h.enabled
            and h.hypervisor_type == source.hypervisor_type
            and h.hypervisor_version >= source.hypervisor_version
        ),
        key=free_ram,
        reverse=True,
    )
    assert compatible == ["compute-2", "compute-3"]
    assert free_ram("compute-2") == max(free_ram(h.name) for h in spec.hosts)
    faults = {(f.host, f.phase): f for f in spec.faults}
    first = faults[("compute-2", "check_destination")]
    assert first.times == 0 and first.message
    assert not [f for f in spec.faults if f.host == "compute-3"]


def test_minimal_cluster_gets_defaults(tmp_path: Path) -> None:
    spec = load_cluster(_write(tmp_path, HOST + INSTANCE))
    host, inst = spec.hosts[0], spec.instances[0]
    assert (host.up, host.enabled, host.storage_group, host.labels) == (True, True, None, {})
    assert (inst.power_state, inst.disk_gb, inst.dirty_rate_mbps) == ("running", 0, 0.0)
    assert spec.name == "cluster" and spec.faults == []


def test_volumes_and_vifs_defaults(tmp_path: Path) -> None:
    text = HOST + INSTANCE + 'volumes = [{ id = "v1" }]\nvifs = [{ id = "p1", network = "n" }]\n'
    inst = load_cluster(_write(tmp_path, text)).instances[0]
    assert inst.volumes == [{"id": "v1", "size_gb": 1, "shared": True}]
    assert inst.vifs == [{"id": "p1", "network": "n", "mac": ""}]


# --------------------------------------------------------------------------- bad files
def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    message = _error(tmp_path, "[[hosts]\nname = 'a'\n")
    assert "invalid TOML" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the cluster file"):
        load_cluster(missing)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: the cluster file is not UTF-8"):
        load_cluster(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 'red'\n" + HOST, "unknown top-level key 'colour'"),
        (HOST + "ram = 4\n", "hosts[0] ('a'): unknown key 'ram'"),
        (HOST + INSTANCE + "ram = 4\n", "instances[0] ('vm'): unknown key 'ram'"),
        (HOST + INSTANCE + "volumes = [{ id = 'v', kind = 'x' }]\n", "unknown key 'kind'"),
        (HOST + "[[faults]]\nhost = 'a'\nphase = 'transfer'\nwhen = 1\n", "unknown key 'when'"),
        ("", "needs at least one [[hosts]]"),
        (HOST.replace("vcpus = 8", "vcpus = 0"), "hosts[0] ('a').vcpus: must be >= 1, not 0"),
        (HOST.replace("vcpus = 8", "vcpus = true"), "vcpus: must be an integer, not True"),
        (
            HOST.replace("9001000", '"9.1"'),
            "hypervisor_version: must be an integer, not '9.1'",
        ),
        (HOST.replace("= 1000", "= 0"), "bandwidth_mbps: must be > 0, not 0"),
        (HOST.replace("= 1000", "= inf"), "bandwidth_mbps: must be a finite number"),
        (HOST.replace('name = "a"', ""), "hosts[0]: missing required key 'name'"),
        (HOST + HOST, "hosts[1] ('a'): duplicate name 'a'"),
        (HOST + "up = 'yes'\n", "up: must be true or false"),
        (
            HOST + INSTANCE.replace('host = "a"', 'host = "b"'),
            "instances[0] ('vm').host: unknown host 'b'",
        ),
        (HOST + INSTANCE.replace("11111111-1111", "zz"), "uuid: is not a UUID"),
        (HOST + INSTANCE + "power_state = 'asleep'\n", "power_state: must be one of running"),
        (HOST + INSTANCE + INSTANCE, "duplicate name 'vm'"),
        (
            HOST + INSTANCE + INSTANCE.replace('name = "vm"', 'name = "vm2"'),
            "duplicate uuid 11111111-1111-4111-8111-111111111111",
        ),
        (
            HOST + INSTANCE.replace("memory_mb = 2048", "memory_mb = 9000"),
            "host 'a': its instances need 9000 memory_mb but it has only 8192",
        ),
        (HOST + INSTANCE + "vifs = [{ id = 'p' }]\n", "vifs[0]: missing required key 'network'"),
        (HOST + INSTANCE + "volumes = 'v1'\n", "volumes: must be an array, not 'v1'"),
        (HOST + "[[faults]]\nhost = 'a'\nphase = 'explode'\n", "phase: must be one of"),
        (HOST + "[[faults]]\nhost = 'zz'\nphase = 'transfer'\n", "unknown host 'zz'"),
        (HOST + "[[faults]]\nhost = 'a'\nphase = 'transfer'\nat = 1.0\n", "at: must be < 1"),
        (
            HOST + "[[faults]]\nhost = 'a'\nphase = 'check_source'\nat = 0.5\n",
            "at: only applies to phase 'transfer'",
        ),
        (HOST + "[[faults]]\nhost = 'a'\nphase = 'transfer'\ntimes = -1\n", "times: must be >= 0"),
        ("hosts = 3\n", "hosts: must be an array of tables"),
    ],
)
def test_invalid_files(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(tmp_path, text)


def test_parse_cluster_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline: hosts: must be an array"):
        parse_cluster({"hosts": {"a": 1}}, "inline")
