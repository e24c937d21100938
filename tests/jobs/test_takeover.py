"""Conductors in real subprocesses: one SIGKILLed mid-transfer (another takes over once the lease
expires and finishes it exactly once), one stalled with SIGSTOP past its lease (it stops driving
when it runs again), one stopped with SIGTERM (it hands its migration over). Each conductor
serves its metrics (``--metrics-port 0``); the scrapes show the claims, the takeover and the
failed lease renewal as they happen."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.jobs.helpers import (
    Conductors,
    assert_store_clean,
    board_jobs,
    conductors,
    job_rows,
    sim_of,
    transfers_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.crash]

LEASE = 2.0
CLAIMED = "ferry_conductor_jobs_claimed_total"
TAKEN_OVER = "ferry_conductor_jobs_taken_over_total"
RENEWALS_FAILED = "ferry_lease_renewals_failed_total"
Setup = tuple[Orchestrator, Conductors, str]


@pytest.fixture
def setup(tmp_path: Path, pg_url: str, redis_server: str, namespace: str) -> Iterator[Setup]:
    cluster = tmp_path / "cluster.toml"
    # one VM whose transfer takes ~16 s (8192 MiB at 512 MiB/s, speed 1): long enough to kill,
    # stall or stop its conductor in the middle and still be in flight after the takeover
    [vm] = write_cluster(cluster, hosts=2, vms_per_host={1: 1}, memory_mb=8192, bandwidth_mbps=512)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=pg_url,
        board_url=redis_server,
        namespace=namespace,
        cluster=cluster,
        speed=1.0,
        lease_seconds=LEASE,
        poll_interval=0.1,
    )
    orch = Orchestrator(config=cfg)
    sim_of(orch).ensure_seeded()
    with conductors(cfg, tmp_path) as group:
        yield orch, group, vm
    orch.close()


def start_mid_transfer(orch: Orchestrator, group: Conductors, vm: str) -> tuple[str, str, str]:
    """Submit, wait until a conductor is mid-transfer; returns (migration id, driver, other)."""
    mid = orch.submit(vm)
    group.start("c1", metrics=True)
    group.start("c2", metrics=True)
    wait_for(
        lambda: (orch.get(mid).progress or {}).get("percent", 0) >= 10,
        60,
        "the transfer to be under way",
    )
    lease = orch.leases.get(mid)
    assert lease is not None
    driver = lease["owner"].rsplit(":", 1)[1]
    # the board's claim and ferry's lease are held in the same name
    [job] = board_jobs(orch)
    assert orch.jobstore.board.find_owner(job) == lease["owner"] == group.owner_of(driver)
    other = "c2" if driver == "c1" else "c1"
    claimed = group.procs[driver].metrics()
    assert claimed[CLAIMED] >= 1 and claimed[TAKEN_OVER] == 0, claimed
    assert group.procs[other].metrics()[CLAIMED] == 0
    return mid, driver, other


def assert_finished_once(orch: Orchestrator, mid: str, vm: str, by: str) -> None:
    record = orch.get(mid)
    assert record.status == "completed", (record.status, record.error)
    assert sim_of(orch).find_instance(vm).host == "h2"  # type: ignore[union-attr]
    [transfer] = transfers_of(orch)  # one transfer: re-attached, never started twice
    assert transfer["state"] == "completed"
    row = job_rows(orch)[mid]
    assert row["consumed_by"].endswith(f":{by}"), row
    assert orch.runner.flow_state(mid) == "SUCCESS"
    assert_store_clean(orch, [mid])


def test_sigkill_mid_transfer_the_other_conductor_finishes_it_once(setup: Setup) -> None:
    orch, group, vm = setup
    mid, driver, other = start_mid_transfer(orch, group, vm)
    killed_at = time.monotonic()
    group.signal(driver, signal.SIGKILL)
    wait_for(
        lambda: (orch.leases.get(mid) or {}).get("owner", "").endswith(f":{other}"),
        LEASE * 3 + 10,
        "the other conductor to take the migration over",
    )
    taken_after = time.monotonic() - killed_at
    assert taken_after < LEASE * 2 + 5, taken_after
    taker = group.procs[other].metrics()
    assert (taker[CLAIMED], taker[TAKEN_OVER]) == (1, 1), taker
    wait_for(lambda: orch.get(mid).done, 60, "the migration to finish")
    wait_for(lambda: job_rows(orch)[mid]["consumed_at"], 30, "the job to be consumed")
    assert job_rows(orch)[mid]["dispatches"] == 2
    assert_finished_once(orch, mid, vm, other)


def test_sigstop_past_the_lease_the_stalled_conductor_stops_driving(setup: Setup) -> None:
    orch, group, vm = setup
    mid, driver, other = start_mid_transfer(orch, group, vm)
    group.signal(driver, signal.SIGSTOP)
    wait_for(
        lambda: (orch.leases.get(mid) or {}).get("owner", "").endswith(f":{other}"),
        LEASE * 3 + 10,
        "the other conductor to take the stalled one's migration over",
    )
    assert orch.get(mid).status == "running"  # still mid-transfer when the stalled one wakes
    group.signal(driver, signal.SIGCONT)
    stalled = group.procs[driver]
    wait_for(
        lambda: f"migration {mid}: " in stalled.text() and "lost it" in stalled.text(),
        30,
        "the resumed conductor to notice it lost the migration",
    )
    wait_for(lambda: orch.get(mid).done, 60, "the migration to finish")
    wait_for(lambda: job_rows(orch)[mid]["consumed_at"], 30, "the job to be consumed")
    assert stalled.proc.poll() is None  # it stopped driving, it did not die
    assert stalled.metrics()[RENEWALS_FAILED] >= 1  # its claim or lease was another's
    assert group.procs[other].metrics()[TAKEN_OVER] == 1
    assert "consumed" not in stalled.text()
    assert_finished_once(orch, mid, vm, other)


def test_sigterm_hands_the_migration_over(setup: Setup) -> None:
    orch, group, vm = setup
    mid, driver, other = start_mid_transfer(orch, group, vm)
    group.signal(driver, signal.SIGTERM)
    assert group.procs[driver].proc.wait(30) == 0
    # it gave the claim back and released its lease: no need to wait for an expiry
    wait_for(
        lambda: (orch.leases.get(mid) or {}).get("owner", "").endswith(f":{other}"),
        LEASE + 5,
        "the other conductor to continue the migration",
    )
    wait_for(lambda: orch.get(mid).done, 60, "the migration to finish")
    wait_for(lambda: job_rows(orch)[mid]["consumed_at"], 30, "the job to be consumed")
    assert "handed over" in group.procs[driver].text()
    assert_finished_once(orch, mid, vm, other)
