"""Seed 004 through the whole flow on the simulated cluster: a pinned guest is never placed on a
host whose free pCPUs are split across NUMA cells, gets a new pinning on free pCPUs of one cell
(the scheduler's claim, which wins over the driver's own pick), and the records are updated in
seed 004's order: release on the source -> the instance record -> account on the destination."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry import MigrationFailed, NoValidHost, Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.model import Instance
from ferry.model.numa import Pinning
from tests.flows.helpers import assert_nothing_held, assert_on
from tests.scheduler.helpers import (
    assert_cache_matches_drivers,
    assert_no_overcommit,
    host,
    orchestrator,
    settings_for,
    text_table,
    vm,
    write_cluster,
)

SPLIT_REASON = (
    "no NUMA cell fits 4 pinned vCPUs + 4096 MiB: "
    "cell 0 has 2 free pCPUs / 15360 MiB, cell 1 has 2 free pCPUs / 15360 MiB"
)


def cluster(tmp_path: Path, *, with_fitting_host: bool) -> Path:
    """``guest`` (4 pinned vCPUs, 4 GiB) on ``src``; ``split`` has 4 free pCPUs and most free
    RAM, but 2 in each cell; ``fits`` has pCPUs 0 and 2 of cell 0 pinned and cell 1 free."""
    hosts = [
        host("src", cells=2, vcpus=16),
        host("split", cells=2, vcpus=8, memory_mb=32_768),
    ]
    guests = [
        vm("guest", "src", vcpus=4, memory_mb=4096),
        vm("blocker-a", "split", vcpus=2, pinning=[0, 1]),
        vm("blocker-b", "split", vcpus=2, pinning=[4, 5]),
    ]
    if with_fitting_host:
        hosts.append(host("fits", cells=2, vcpus=8, memory_mb=16_384))
        guests.append(vm("blocker-c", "fits", vcpus=2, pinning=[0, 2]))
    return write_cluster(tmp_path / "numa.toml", hosts, guests)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ferry.db'}"


def test_split_free_pcpus_are_rejected_with_every_cells_free_resources(
    db_url: str, tmp_path: Path
) -> None:
    orch, sim = orchestrator(db_url, cluster(tmp_path, with_fitting_host=False))
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("guest")
    assert info.value.reasons == {"split": SPLIT_REASON}
    record = orch.get(info.value.migration.id)  # type: ignore[union-attr]
    assert record.status == "failed" and SPLIT_REASON in (record.error or "")
    assert_on(sim, "guest", "src")
    assert sim.pinnings("split") == {
        "blocker-a": Pinning(0, (0, 1), 1024),
        "blocker-b": Pinning(1, (4, 5), 1024),
    }
    assert_nothing_held(orch, sim)
    orch.close()


def test_a_fitting_cell_gets_a_new_pinning_on_its_free_pcpus_only(
    db_url: str, tmp_path: Path
) -> None:
    orch, sim = orchestrator(db_url, cluster(tmp_path, with_fitting_host=True))
    before = sim.pinnings("fits")
    m = orch.live_migrate("guest")
    # split has more free RAM (the weigher's favourite) but no cell with 4 free pCPUs
    assert (m.status, m.destination) == ("completed", "fits")
    assert [a.host for a in m.attempts] == ["fits"]
    new = sim.pinnings("fits")["guest"]
    assert new == Pinning(cell=1, vcpu_to_pcpu=(4, 5, 6, 7), memory_mb=4096)
    taken = set().union(*(p.pcpus for p in before.values()))
    assert new.pcpus.isdisjoint(taken)
    assert_on(sim, "guest", "fits")
    assert_no_overcommit(sim)
    assert_nothing_held(orch, sim)
    cells = {c.cell: c for c in orch.claims.host_states(["fits"])[0].cells}
    assert cells[1].pinned == {4, 5, 6, 7} and cells[0].pinned == {0, 2}
    src = orch.claims.host_states(["src"])[0]
    assert all(not c.pinned for c in src.cells) and src.host.vcpus_used == 0
    assert_cache_matches_drivers(orch)
    orch.close()


def test_the_claimed_pinning_wins_over_the_drivers_own_pick(db_url: str, tmp_path: Path) -> None:
    """Another migration (not transferring yet, so invisible to the driver) claimed cell 0 of
    ``empty``; the driver's check would pin the guest there (best fit: lowest cell), the claim
    pins it to cell 1, and the claim is what the transfer gets."""
    hosts = [host("src", cells=2, vcpus=16), host("empty", cells=2, vcpus=8, memory_mb=16_384)]
    path = write_cluster(tmp_path / "c.toml", hosts, [vm("guest", "src", vcpus=4, memory_mb=4096)])
    orch, sim = orchestrator(db_url, path)
    orch.refresh_host_states()
    other = Instance("other", "other", "elsewhere", vcpus=4, memory_mb=1024, extra={"pinned": True})
    held = orch.claims.claim_resources("other-migration", "empty", other)
    assert held.ok and held.pinning == Pinning(0, (0, 1, 2, 3), 1024)
    seen: list[dict[str, Any]] = []
    real_start = sim.start_transfer
    sim.start_transfer = lambda inst, data, policy: (  # type: ignore[method-assign]
        seen.append(data.to_dict()),
        real_start(inst, data, policy),
    )[1]
    m = orch.live_migrate("guest")
    assert m.destination == "empty"
    assert seen[0]["pinning"] == Pinning(1, (4, 5, 6, 7), 4096).to_dict()
    assert sim.pinnings("empty") == {"guest": Pinning(1, (4, 5, 6, 7), 4096)}
    assert orch.claims.release("other-migration") == 1
    orch.close()


class Recorder:
    """Wraps methods of objects the flow uses to record the order of the end-of-migration
    writes, checking the accounting at each of them."""

    def __init__(self, orch: Orchestrator, sim: SimulatedDriver) -> None:
        self.orch, self.sim = orch, sim
        self.calls: list[str] = []

    def wrap(self, obj: Any, name: str, label: str, check: Any = None) -> None:
        real = getattr(obj, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if check is not None:
                check(*args, **kwargs)
            result = real(*args, **kwargs)
            self.calls.append(label)
            return result

        setattr(obj, name, call)

    def source_still_accounted(self) -> bool:
        src = self.orch.claims.host_states(["src"])[0]
        return src.host.vcpus_used == 4 and any(c.pinned for c in src.cells)


def test_release_on_source_then_record_then_account_on_destination(
    db_url: str, tmp_path: Path
) -> None:
    orch, sim = orchestrator(db_url, cluster(tmp_path, with_fitting_host=True))
    rec = Recorder(orch, sim)
    sim.inject_fault("src", "post_at_source", times=1, message="source busy")
    snapshots: list[tuple[str, bool, int]] = []

    def on_event(event: Any) -> None:
        if event.kind == "phase_failed" and event.phase == "post-at-source":
            # the guest runs on fits now, but the source keeps its accounting until post at
            # source succeeds
            held = [c["kind"] for c in orch.claims.list()]
            snapshots.append(("post-at-source failed", rec.source_still_accounted(), len(held)))

    orch.subscribe(on_event)

    def status_check(mid: str, status: Any, *args: Any, **kwargs: Any) -> None:
        if str(status) == "completed":
            # the instance record is updated after the source was released and before the
            # destination's claim turned into usage
            assert not rec.source_still_accounted()
            assert [c["kind"] for c in orch.claims.list()] == ["destination"]

    rec.wrap(sim, "post_live_migration_at_source", "driver: post at source")
    rec.wrap(orch.claims, "release_source", "release on the source")
    rec.wrap(orch.migrations, "set_status", "record", status_check)
    rec.wrap(orch.claims, "complete", "account on the destination")
    m = orch.live_migrate("guest")
    assert m.status == "completed"
    assert snapshots == [("post-at-source failed", True, 2)]
    order = [c for c in rec.calls if c != "record"]
    assert order == [
        "driver: post at source",
        "release on the source",
        "account on the destination",
    ]
    last_record = max(i for i, c in enumerate(rec.calls) if c == "record")
    assert rec.calls.index("release on the source") < last_record
    assert last_record < rec.calls.index("account on the destination")
    assert_cache_matches_drivers(orch)
    orch.close()


def test_a_reverted_pinned_migration_gives_its_pcpus_back(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, cluster(tmp_path, with_fitting_host=True))
    orch.refresh_host_states()
    before = {s.host.name: s for s in orch.claims.host_states()}
    sim.inject_fault("fits", "pre_live_migration", message="no instance dir")
    with pytest.raises(MigrationFailed):
        orch.live_migrate("guest")
    assert_on(sim, "guest", "src")
    assert_nothing_held(orch, sim)
    after = {s.host.name: s for s in orch.claims.host_states()}
    assert after["fits"].cells == before["fits"].cells  # nothing claimed, nothing pinned
    assert after["src"].host.vcpus_used == before["src"].host.vcpus_used == 4
    assert after["src"].cells == before["src"].cells
    assert_cache_matches_drivers(orch)
    orch.close()


def test_post_switchover_failure_accounts_the_guest_on_its_destination(
    db_url: str, tmp_path: Path
) -> None:
    """Retries exhausted after the switchover: the record says error, the guest counts on the
    destination (its pCPUs pinned there), and the source is corrected by its next report."""
    orch, sim = orchestrator(db_url, cluster(tmp_path, with_fitting_host=True))
    sim.inject_fault("fits", "post_at_destination", message="networks not plugged")
    with pytest.raises(MigrationFailed):
        orch.live_migrate("guest")
    assert orch.list()[0].status == "error"
    assert orch.claims.list() == []
    fits = orch.claims.host_states(["fits"])[0]
    assert {4, 5, 6, 7} <= set().union(*(c.pinned for c in fits.cells))
    orch.refresh_host_states()
    src = orch.claims.host_states(["src"])[0]
    assert src.host.vcpus_used == 0 and all(not c.pinned for c in src.cells)
    orch.close()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    path = cluster(tmp_path, with_fitting_host=False)
    config = tmp_path / "ferry.toml"
    config.write_text(f'[simulated]\ncluster = "{path}"\nspeed = 0\n')
    yield {"FERRY_DB": db_url, "FERRY_CONFIG": str(config), "COLUMNS": "200"}


def test_ferry_show_and_hosts_tell_the_numa_story(cli_env: dict[str, str]) -> None:
    from click.testing import CliRunner

    from ferry.cli import cli

    runner = CliRunner(env=cli_env)
    result = runner.invoke(cli, ["migrate", "guest", "--json"])
    assert result.exit_code != 0
    shown = runner.invoke(cli, ["list", "--json"])
    mid = json.loads(shown.output)[0]["id"]
    record = json.loads(runner.invoke(cli, ["show", mid, "--json"]).output)
    assert SPLIT_REASON in record["error"]
    hosts = {h["name"]: h for h in json.loads(runner.invoke(cli, ["hosts", "--json"]).output)}
    cells = hosts["split"]["numa_cells"]
    assert [(c["cell"], c["free_pcpus"], c["free_mb"]) for c in cells] == [
        (0, [2, 3], 15360),
        (1, [6, 7], 15360),
    ]
    text = runner.invoke(cli, ["hosts"]).output
    assert "NUMA cell: free pCPUs, MiB" in text and "0: 2-3, 15360" in text
    # the scheduler's filters rejected every host before one was tried: the reasons are in the
    # error, and there is no "hosts tried" table
    shown_text = runner.invoke(cli, ["show", mid]).output
    assert "hosts tried" not in shown_text
    assert f"error: no valid host was found (split: {SPLIT_REASON})" in shown_text


def test_ferry_show_lists_the_hosts_tried_with_their_reasons(db_url: str, tmp_path: Path) -> None:
    """``roomy`` (most free RAM) fails its destination check, ``fits`` takes the guest: the
    plain-text ``ferry show`` has both in its "hosts tried" table, in that order, with the
    check's reason; ``split`` never gets there (no NUMA cell fits)."""
    from click.testing import CliRunner

    from ferry.cli import cli

    hosts = [
        host("src", cells=2, vcpus=16),
        host("split", cells=2, vcpus=8, memory_mb=32_768),
        host("fits", cells=2, vcpus=8, memory_mb=16_384),
        host("roomy", cells=2, vcpus=8, memory_mb=65_536),
    ]
    guests = [
        vm("guest", "src", vcpus=4, memory_mb=4096),
        vm("blocker-a", "split", vcpus=2, pinning=[0, 1]),
        vm("blocker-b", "split", vcpus=2, pinning=[4, 5]),
    ]
    fault = {
        "host": "roomy",
        "phase": "check_destination",
        "message": "instances path not writable",
    }
    path = write_cluster(tmp_path / "tried.toml", hosts, guests, [fault])
    config = tmp_path / "ferry.toml"
    config.write_text(f'[simulated]\ncluster = "{path}"\nspeed = 0\n')
    runner = CliRunner(env={"FERRY_DB": db_url, "FERRY_CONFIG": str(config), "COLUMNS": "200"})
    result = runner.invoke(cli, ["migrate", "guest", "--json"])
    assert result.exit_code == 0, result.output
    mid = json.loads(runner.invoke(cli, ["list", "--json"]).output)[0]["id"]
    record = json.loads(runner.invoke(cli, ["show", mid, "--json"]).output)
    assert (record["status"], record["destination"]) == ("completed", "fits")
    tried = text_table(runner.invoke(cli, ["show", mid]).output, "hosts tried")
    assert [(r["host"], r["outcome"]) for r in tried] == [("roomy", "rejected"), ("fits", "chosen")]
    assert "instances path not writable" in tried[0]["reason"]
    assert tried[1]["reason"] == ""
    assert [(a["host"], a["outcome"]) for a in record["attempts"]] == [
        ("roomy", "rejected"),
        ("fits", "chosen"),
    ]


def test_ferry_hosts_shows_a_held_claim(cli_env: dict[str, str], db_url: str) -> None:
    """A claim held on ``split`` (another migration's, taken through the repository: 2 pinned
    vCPUs, 2 GiB, 30 GiB of disk) shows in ``ferry hosts``, text and JSON, after its refresh
    from the drivers: the claimed vCPUs/MiB/GiB, one migration in flight, and cell 0's pCPUs
    gone from the free ones."""
    from click.testing import CliRunner

    from ferry.cli import cli

    orch = Orchestrator(
        db_url, settings=settings_for(Path(cli_env["FERRY_CONFIG"]).parent / "numa.toml")
    )
    orch.refresh_host_states()
    other = Instance(
        "other", "other", "elsewhere", vcpus=2, memory_mb=2048, disk_gb=30, extra={"pinned": True}
    )
    held = orch.claims.claim_resources("other-migration", "split", other)
    assert held.ok and held.pinning == Pinning(0, (2, 3), 2048)
    orch.close()

    runner = CliRunner(env=cli_env)
    hosts = {h["name"]: h for h in json.loads(runner.invoke(cli, ["hosts", "--json"]).output)}
    split = hosts["split"]
    assert (split["claimed_vcpus"], split["claimed_memory_mb"], split["claimed_disk_gb"]) == (
        2,
        2048,
        30,
    )
    assert split["migrations_in_flight"] == 1
    assert (split["disk_gb_used"], split["disk_gb"]) == (0, 1000)
    cells = [
        (c["cell"], c["claimed_pcpus"], c["free_pcpus"], c["free_mb"]) for c in split["numa_cells"]
    ]
    assert cells == [(0, [2, 3], [], 13312), (1, [], [6, 7], 15360)]
    assert (hosts["src"]["claimed_vcpus"], hosts["src"]["migrations_in_flight"]) == (0, 0)

    rows = {r["host"]: r for r in text_table(runner.invoke(cli, ["hosts"]).output)}
    assert rows["split"]["claimed vCPUs/MiB/GiB"] == "2/2048/30"
    assert rows["split"]["in flight"] == "1"
    assert rows["split"]["disk GiB used/total"] == "0/1000"
    assert rows["split"]["NUMA cell: free pCPUs, MiB"] == "0: none, 13312\n1: 6-7, 15360"
    assert rows["src"]["claimed vCPUs/MiB/GiB"] == "0/0/0"
    assert rows["src"]["in flight"] == "0"
