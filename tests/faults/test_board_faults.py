"""The job board restarted while conductors run migrations: Redis with and without persistence
(a board that lost its jobs is rebuilt from the database, the truth), ZooKeeper restarted (its
sessions survive) and a conductor's session expired. Each run ends consistent: every migration
terminal exactly once, its job consumed once, the board empty, nothing held, no VM on two hosts;
the history says which jobs were posted again. The operator does nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ferry import Orchestrator
from tests.infra import redis as redis_infra, zookeeper as zk_infra
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    in_process_conductors,
    job_rows,
    sim_of,
    transfers_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis]
VMS = 3


def mid_transfer(orch: Orchestrator, mids: list[str], percent: float = 10.0) -> bool:
    return any((orch.get(m).progress or {}).get("percent", 0) >= percent for m in mids)


def run_through_restart(
    tmp_path: Path, url: str, restart: object, moment: float = 10.0
) -> tuple[Orchestrator, list[str], float]:
    """Three migrations submitted, two conductors; ``restart(orch, mids, conductors)`` once a
    transfer is ``moment`` percent through; returns the orchestrator, the migrations and the
    seconds from the fault's end until every migration ended and the board was empty."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cluster = tmp_path / "cluster.toml"
    vms = write_cluster(cluster, hosts=2, vms_per_host={1: VMS}, memory_mb=2048, bandwidth_mbps=512)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=f"sqlite:///{tmp_path / 'ferry.db'}",
        board_url=url,
        namespace="faults",
        cluster=cluster,
        speed=1.0,
        lease_seconds=2.0,
    )
    orch = Orchestrator(config=cfg)
    sim_of(orch).ensure_seeded()
    mids = [orch.submit(vm) for vm in vms]
    with in_process_conductors([Orchestrator(config=cfg), Orchestrator(config=cfg)]) as group:
        wait_for(lambda: mid_transfer(orch, mids, moment), 60, "a transfer to be under way")
        restart(orch, mids, group)  # type: ignore[operator]
        back = time.monotonic()
        wait_for(lambda: all(orch.get(m).done for m in mids), 120, "every migration to end")
        wait_for(lambda: not board_jobs(orch), 60, "the board to empty")
        recovered = time.monotonic() - back
    return orch, mids, recovered


@pytest.mark.parametrize("persist", [False, True], ids=["no-persistence", "append-only-file"])
def test_redis_restarted_while_conductors_run(
    tmp_path: Path, own_redis: tuple[str, int], persist: bool
) -> None:
    directory, port = own_redis
    url = redis_infra.start(directory, port, persist=persist)

    def restart(*_: object) -> None:
        redis_infra.stop(directory)
        assert redis_infra.start(directory, port, persist=persist) == url

    orch, mids, _ = run_through_restart(tmp_path, url, restart)
    try:
        for mid in mids:
            assert orch.get(mid).status == "completed", (mid, orch.get(mid).error)
        assert_store_clean(orch, mids)
        notes = [h.detail or "" for m in mids for h in orch.get(m).history]
        reposted = [n for n in notes if "posted again" in n]
        if persist:
            assert reposted == []  # the jobs survived the restart: nothing to rebuild
        else:
            assert reposted, notes  # lost with the server: rebuilt from the database
    finally:
        orch.close()


def test_rebuild_posts_each_lost_job_once(tmp_path: Path, own_redis: tuple[str, int]) -> None:
    """The board emptied under two idle clients: the first rebuild posts every waiting
    migration's job once, the second (another process's) finds nothing to do."""
    import redis

    directory, port = own_redis
    url = redis_infra.start(directory, port)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=f"sqlite:///{tmp_path / 'ferry.db'}",
        board_url=url,
        namespace="faults",
    )
    first, second = Orchestrator(config=cfg), Orchestrator(config=cfg)
    try:
        mids = [first.submit("web-1"), first.submit("db-1")]
        before = {j.details["migration_id"]: j.uuid for j in board_jobs(first)}
        assert sorted(before) == sorted(mids)
        assert first.jobstore.rebuild() == []  # nothing lost: nothing posted
        redis.Redis.from_url(url).flushall()  # the server lost its data
        assert sorted(first.jobstore.rebuild()) == sorted(mids)
        assert second.jobstore.rebuild() == []
        after = {j.details["migration_id"]: j.uuid for j in board_jobs(first)}
        assert sorted(after) == sorted(mids) and not set(after.values()) & set(before.values())
        rows = first.jobstore.jobs.all()
        assert {r["migration_id"]: r["job_uuid"] for r in rows} == after
        # a stale job id (another process swapped it first) is never swapped again
        assert not first.jobstore.jobs.swap_job(mids[0], before[mids[0]], "x")
    finally:
        first.close()
        second.close()


@pytest.mark.zookeeper
def test_zookeeper_restarted_while_conductors_run(
    tmp_path: Path, own_zookeeper: tuple[str, int]
) -> None:
    """The server's data and sessions survive its restart: the conductors go on."""
    directory, port = own_zookeeper
    url = zk_infra.start(directory, port)

    def restart(*_: object) -> None:
        zk_infra.stop(directory)
        assert zk_infra.start(directory, port) == url

    orch, mids, _ = run_through_restart(tmp_path, f"{url}/ferry/jobs", restart)
    try:
        for mid in mids:
            assert orch.get(mid).status == "completed", (mid, orch.get(mid).error)
        assert_store_clean(orch, mids)
    finally:
        orch.close()


@pytest.mark.zookeeper
def test_a_conductors_zookeeper_session_expired(
    tmp_path: Path, own_zookeeper: tuple[str, int]
) -> None:
    """The session of the conductor driving a migration expires (the server ends it, as after
    a long pause): its ephemeral claim is gone, it stops driving, a conductor claims the job
    again and finishes the migration -- one transfer, completed once."""
    from kazoo.client import KazooClient

    directory, port = own_zookeeper
    url = zk_infra.start(directory, port)
    expired: list[str] = []

    def expire(orch: Orchestrator, mids: list[str], group: list[Any]) -> None:
        driving = {c.owner: c for c in group}
        for mid in mids:
            lease = orch.leases.get(mid)
            if lease and lease["owner"] in driving and mid_transfer(orch, [mid]):
                conductor = driving[lease["owner"]]
                break
        else:
            conductor = group[0]
        # a second client on the same session, closed: the server expires the session
        ghost = KazooClient(hosts=f"127.0.0.1:{port}", client_id=conductor.board._client.client_id)
        ghost.start(timeout=10)
        ghost.stop()
        ghost.close()
        expired.append(conductor.owner)

    orch, mids, _ = run_through_restart(tmp_path, f"{url}/ferry/jobs", expire)
    try:
        assert expired
        # the expired conductor's claim went with its session: that job was dispatched again
        assert max(r["dispatches"] for r in job_rows(orch).values()) >= 2, job_rows(orch)
        for mid in mids:
            assert orch.get(mid).status == "completed", (mid, orch.get(mid).error)
        assert_store_clean(orch, mids)
        sim = sim_of(orch)
        for inst in sim.list_instances():
            done = [t for t in transfers_of(orch, inst.uuid) if t["state"] == "completed"]
            assert len(done) <= 1, done
    finally:
        orch.close()
