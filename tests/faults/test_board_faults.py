"""The job board restarted while conductors run migrations: Redis with and without persistence
(a board that lost its jobs is rebuilt from the database, the truth), ZooKeeper restarted (its
sessions survive) and a conductor's session expired. Each run ends consistent: every migration
terminal exactly once, its job consumed once, the board empty, nothing held, no VM on two hosts;
the history says which jobs were posted again. The operator does nothing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.infra import redis as redis_infra
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    in_process_conductors,
    sim_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis]
VMS = 3


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    """A Redis server of this test's own (it is restarted): its directory and port."""
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=7')")
    if redis_infra.redis_server_bin() is None:
        pytest.skip("no redis-server binary here (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="ferry-redis-fault-")
    port = redis_infra.free_port()
    try:
        yield directory, port
    finally:
        redis_infra.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def mid_transfer(orch: Orchestrator, mids: list[str]) -> bool:
    return any((orch.get(m).progress or {}).get("percent", 0) >= 10 for m in mids)


def run_through_restart(
    tmp_path: Path, url: str, restart: object
) -> tuple[Orchestrator, list[str]]:
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
    with in_process_conductors([Orchestrator(config=cfg), Orchestrator(config=cfg)]):
        wait_for(lambda: mid_transfer(orch, mids), 60, "a transfer to be under way")
        restart()  # type: ignore[operator]
        wait_for(lambda: all(orch.get(m).done for m in mids), 120, "every migration to end")
        wait_for(lambda: not board_jobs(orch), 60, "the board to empty")
    return orch, mids


@pytest.mark.parametrize("persist", [False, True], ids=["no-persistence", "append-only-file"])
def test_redis_restarted_while_conductors_run(
    tmp_path: Path, own_redis: tuple[str, int], persist: bool
) -> None:
    directory, port = own_redis
    url = redis_infra.start(directory, port, persist=persist)

    def restart() -> None:
        redis_infra.stop(directory)
        assert redis_infra.start(directory, port, persist=persist) == url

    orch, mids = run_through_restart(tmp_path, url, restart)
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
