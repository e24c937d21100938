"""The same job store on a ZooKeeper board (ephemeral claims): post -> conductor runs -> done.
Runs when a ZooKeeper server is reachable (``$FERRY_TEST_ZOOKEEPER_URL``, else 127.0.0.1:2181);
skipped with the reason printed otherwise."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    in_process_conductors,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.zookeeper


def test_post_run_completed_on_zookeeper(tmp_path: Path, zookeeper_url: str) -> None:
    board = f"{zookeeper_url.rstrip('/')}/ferry-test-{uuid.uuid4().hex[:8]}/jobs"
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=f"sqlite:///{tmp_path / 'ferry.db'}",
        board_url=board,
        namespace="ferry",
    )
    orch = Orchestrator(config=cfg)
    try:
        mid = orch.submit("web-1")
        [job] = board_jobs(orch)
        assert job.details["migration_id"] == mid
        with in_process_conductors([Orchestrator(config=cfg)]) as [conductor]:
            assert conductor.board.supports_expiry is False  # ephemeral claims
            wait_for(lambda: orch.get(mid).done, 60, "the migration to finish")
            wait_for(lambda: not board_jobs(orch), 30, "the board to empty")
        assert orch.get(mid).status == "completed"
        assert_store_clean(orch, [mid])
    finally:
        orch.close()


def test_sigkill_mid_transfer_taken_over_on_zookeeper(tmp_path: Path, zookeeper_url: str) -> None:
    """A SIGKILLed conductor's ephemeral claim goes with its session; the other one resumes."""
    import signal

    from tests.jobs.helpers import conductors, job_rows, sim_of, transfers_of, write_cluster

    cluster = tmp_path / "cluster.toml"
    [vm] = write_cluster(cluster, hosts=2, vms_per_host={1: 1}, memory_mb=4096, bandwidth_mbps=512)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=f"sqlite:///{tmp_path / 'ferry.db'}",
        board_url=f"{zookeeper_url.rstrip('/')}/ferry-test-{uuid.uuid4().hex[:8]}/jobs",
        namespace="ferry",
        cluster=cluster,
        speed=1.0,
        lease_seconds=2.0,
    )
    orch = Orchestrator(config=cfg)
    sim_of(orch).ensure_seeded()
    try:
        with conductors(cfg, tmp_path) as group:
            mid = orch.submit(vm)
            group.start("c1")
            group.start("c2")
            wait_for(
                lambda: (orch.get(mid).progress or {}).get("percent", 0) >= 10,
                60,
                "the transfer to be under way",
            )
            owner = (orch.leases.get(mid) or {})["owner"]
            driver = owner.rsplit(":", 1)[1]
            other = "c2" if driver == "c1" else "c1"
            group.signal(driver, signal.SIGKILL)
            wait_for(lambda: orch.get(mid).done, 60, "the other conductor to finish it")
            wait_for(lambda: not board_jobs(orch), 30, "the board to empty")
        assert orch.get(mid).status == "completed"
        assert job_rows(orch)[mid]["consumed_by"].endswith(f":{other}")
        assert len(transfers_of(orch)) == 1
        assert_store_clean(orch, [mid])
    finally:
        orch.close()
