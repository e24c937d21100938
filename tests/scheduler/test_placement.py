"""Host groups (``--to-group``), anti-affinity (``--not-with``), the weighers of ``[scheduler]``
and the host state cache, through the Orchestrator and the CLI on the simulated cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ferry import ConfigError, InstanceNotFound, NoValidHost
from ferry.cli import cli
from ferry.model import Host, Instance
from tests.flows.helpers import assert_nothing_held
from tests.scheduler.helpers import host, orchestrator, vm, write_cluster


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ferry.db'}"


def placement_cluster(tmp_path: Path) -> Path:
    """``web-1`` and ``db-1`` on ``src``; ``db-2`` on ``big``, the host with the most free RAM;
    ``gpu-1`` (labelled group gpu) and ``small`` (listed in [scheduler.groups] gpu by tests)."""
    hosts = [
        host("src", memory_mb=32_768),
        host("big", memory_mb=131_072),
        host("gpu-1", memory_mb=65_536, group="gpu"),
        host("small", memory_mb=16_384),
    ]
    guests = [
        vm("web-1", "src", pinned=False),
        vm("db-1", "src", pinned=False),
        vm("db-2", "big", pinned=False),
    ]
    return write_cluster(tmp_path / "placement.toml", hosts, guests)


def test_to_group_takes_labelled_and_configured_hosts_only(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, placement_cluster(tmp_path), groups={"gpu": ["small"]})
    m = orch.live_migrate("web-1", to_group="gpu")
    assert m.destination == "gpu-1"  # big has more free RAM but is not in the group
    sim.inject_fault("gpu-1", "check_destination", message="full of GPUs")
    sim.inject_fault("small", "check_destination", message="maintenance")
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("db-1", to_group="gpu")
    assert info.value.reasons == {
        "big": "not in host group 'gpu'",
        "gpu-1": "check_destination: full of GPUs",
        "small": "check_destination: maintenance",
    }
    assert [a.host for a in info.value.migration.attempts] == ["gpu-1", "small"]  # type: ignore[union-attr]
    assert_nothing_held(orch, sim)
    orch.close()


def test_bad_placement_requests_change_nothing(db_url: str, tmp_path: Path) -> None:
    orch, _sim = orchestrator(db_url, placement_cluster(tmp_path))
    with pytest.raises(ConfigError, match="unknown host group 'nope'"):
        orch.live_migrate("web-1", to_group="nope")
    with pytest.raises(ConfigError, match="forced destination"):
        orch.live_migrate("web-1", "big", to_group="gpu")
    with pytest.raises(InstanceNotFound):
        orch.live_migrate("web-1", not_with=["no-such-vm"])
    with pytest.raises(ConfigError, match="away from itself"):
        orch.live_migrate("web-1", not_with=["web-1"])
    assert orch.list() == [] and orch.migrations.locks() == {}
    orch.close()


def test_not_with_avoids_where_the_named_vms_run_and_are_going(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, placement_cluster(tmp_path))
    # db-1 is being migrated to small right now (its claim is held, nothing moved yet)
    orch.refresh_host_states()
    db1 = orch.drivers.find_instance("db-1")
    assert orch.claims.claim("db-1-migration", "small", db1, source="src")
    m = orch.live_migrate("web-1", not_with=["db-2", "db-1"])
    assert m.destination == "gpu-1"  # big runs db-2, small is where db-1 is going
    orch.live_migrate("web-1", "src")
    sim.inject_fault("gpu-1", "check_destination", message="no", times=1)
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("web-1", not_with=["db-2", "db-1"])
    assert info.value.reasons == {
        "big": "anti-affinity: db-2 runs here",
        "small": "anti-affinity: db-1 is being migrated here",
        "gpu-1": "check_destination: no",
    }
    assert orch.claims.release("db-1-migration") == 2
    orch.close()


def test_pack_fills_the_fullest_host_that_fits(db_url: str, tmp_path: Path) -> None:
    orch, _sim = orchestrator(db_url, placement_cluster(tmp_path), weigher="pack")
    assert orch.live_migrate("web-1").destination == "small"
    orch.close()
    orch, _sim = orchestrator(db_url, placement_cluster(tmp_path), weigher="spread")
    assert orch.live_migrate("db-1").destination == "big"
    orch.close()


def test_fewest_migrations_in_flight_breaks_near_ties(db_url: str, tmp_path: Path) -> None:
    hosts = [
        host("src"),
        host("a", memory_mb=65_536),
        host("b", memory_mb=64_512),
        host("c", memory_mb=32_768),
    ]
    path = write_cluster(tmp_path / "c.toml", hosts, [vm("web-1", "src", pinned=False)])
    orch, _sim = orchestrator(db_url, path)
    orch.refresh_host_states()
    other = Instance("x", "x", "src", vcpus=1, memory_mb=1, disk_gb=0)
    assert orch.claims.claim("busy-1", "a", other)  # one migration heading for a
    # weights, normalised over a, b, c: free RAM 1.0 / 0.98 / 0.0, in flight 0.0 / 1.0 / 1.0
    assert orch.live_migrate("web-1").destination == "b"
    assert orch.claims.release("busy-1") == 1
    orch.close()


class CountingHosts:
    """Counts the hypervisor reads the scheduler makes (all hosts vs one host)."""

    def __init__(self, orch: Any) -> None:
        self.all = 0
        self.one: list[str] = []
        registry = orch.drivers
        real_all, real_one = registry.host_infos, registry.host_info

        def host_infos() -> list[Host]:
            self.all += 1
            return real_all()  # type: ignore[no-any-return]

        def host_info(name: str) -> Host:
            self.one.append(name)
            return real_one(name)  # type: ignore[no-any-return]

        registry.host_infos, registry.host_info = host_infos, host_info


def test_scheduling_reads_the_cache_not_every_hypervisor(db_url: str, tmp_path: Path) -> None:
    orch, _sim = orchestrator(db_url, placement_cluster(tmp_path), host_state_ttl=3600)
    counts = CountingHosts(orch)
    orch.live_migrate("web-1")  # empty cache: one refresh of every host
    assert counts.all == 1
    orch.live_migrate("db-1")
    assert counts.all == 1  # fresh cache: no hypervisor asked for the whole cluster
    # the claims read their destination only; the checks ask the hosts involved
    assert set(counts.one) <= {"src", "big", "gpu-1", "small"}
    orch.close()
    orch, _sim = orchestrator(db_url, placement_cluster(tmp_path), host_state_ttl=0)
    counts = CountingHosts(orch)
    orch.live_migrate("web-1")
    assert counts.all == 1  # a stale cache is refreshed before scheduling
    orch.close()


def test_cli_migrate_with_group_and_anti_affinity(db_url: str, tmp_path: Path) -> None:
    path = placement_cluster(tmp_path)
    config = tmp_path / "ferry.toml"
    config.write_text(
        f'[simulated]\ncluster = "{path}"\nspeed = 0\n\n[scheduler.groups]\ngpu = ["small"]\n'
    )
    runner = CliRunner(env={"FERRY_DB": db_url, "FERRY_CONFIG": str(config)})
    out = runner.invoke(cli, ["migrate", "web-1", "--to-group", "gpu", "--not-with", "db-2,db-1"])
    assert out.exit_code == 0, out.output
    shown = json.loads(runner.invoke(cli, ["list", "--json"]).output)
    assert shown[0]["destination"] == "gpu-1"
    bad = runner.invoke(cli, ["migrate", "db-1", "--to-group", "nope"])
    assert bad.exit_code != 0 and "unknown host group 'nope'" in bad.output
    hosts = {h["name"]: h for h in json.loads(runner.invoke(cli, ["hosts", "--json"]).output)}
    assert hosts["gpu-1"]["groups"] == ["gpu"] and hosts["gpu-1"]["migrations_in_flight"] == 0
    assert hosts["gpu-1"]["vcpus_used"] == 2 and hosts["src"]["vcpus_used"] == 2
