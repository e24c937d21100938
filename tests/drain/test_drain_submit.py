"""``ferry drain --submit``: the drain's migrations posted to the job store (a real Redis board,
PostgreSQL) and run by 2 conductor processes, one SIGKILLed mid-drain: the other takes its
migration over, the drain completes and every guest runs on exactly one host."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.drain.helpers import ACTIVE, intervals, most_at_once
from tests.integration.conftest import pg_admin_url, pg_url  # noqa: F401 - shared fixtures
from tests.jobs.conftest import namespace, redis_server  # noqa: F401 - shared fixtures
from tests.jobs.helpers import (
    Conductors,
    assert_store_clean,
    conductors,
    job_rows,
    sim_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.crash]

LEASE = 2.0


@pytest.fixture
def setup(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
    redis_server: str,  # noqa: F811
    namespace: str,  # noqa: F811
) -> Iterator[tuple[Orchestrator, Conductors, list[str]]]:
    cluster = tmp_path / "cluster.toml"
    # 5 guests on h1, each transfer ~4 s (2048 MiB at 512 MiB/s, speed 1): long enough to kill
    # a conductor in the middle of one
    vms = write_cluster(cluster, hosts=3, vms_per_host={1: 5}, memory_mb=2048, bandwidth_mbps=512)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=pg_url,
        board_url=redis_server,
        namespace=namespace,
        cluster=cluster,
        speed=1.0,
        lease_seconds=LEASE,
    )
    orch = Orchestrator(config=cfg)
    sim_of(orch).ensure_seeded()
    with conductors(cfg, tmp_path) as group:
        yield orch, group, vms
    orch.close()


def test_submit_two_conductors_one_killed(
    setup: tuple[Orchestrator, Conductors, list[str]],
) -> None:
    orch, group, vms = setup
    group.start("c1")
    group.start("c2")
    group.wait_started("c1")
    group.wait_started("c2")
    handle = orch.drain("h1", max_parallel=2, submit=True, wait=False)

    def driven_mid_transfer() -> str | None:
        for g in handle.drain.guests:
            if g.migration and (orch.get(g.migration).progress or {}).get("percent", 0) >= 10:
                lease = orch.leases.get(g.migration)
                if lease is not None:
                    return str(lease["owner"]).rsplit(":", 1)[1]
        return None

    victim = wait_for(driven_mid_transfer, 90, "a conductor mid-transfer")
    group.signal(victim, signal.SIGKILL)
    d = handle.wait(timeout=240)
    assert d.status == "completed", [(g.instance, g.state, g.reason) for g in d.guests]
    sim = sim_of(orch)
    for g in d.guests:
        inst = sim.find_instance(g.instance)
        assert inst is not None and inst.host == g.destination and g.destination != "h1"
    mids = [str(g.migration) for g in d.guests]
    assert len(mids) == len(vms) == 5
    survivor = "c2" if victim == "c1" else "c1"
    assert most_at_once(s for m in mids for s in intervals(orch, m, ACTIVE)) <= 2
    wait_for(lambda: not orch.leases.all(), 30, "the leases to be given back")
    assert_store_clean(orch, mids)
    rows = job_rows(orch)  # every migration run by a conductor, the killed one's taken over
    assert {rows[m]["consumed_by"].rsplit(":", 1)[1] for m in mids} <= {"c1", "c2"}
    assert any(rows[m]["dispatches"] == 2 for m in mids), rows
    assert any(rows[m]["consumed_by"].endswith(f":{survivor}") for m in mids)


def test_submit_aborted_with_no_conductor_running(
    setup: tuple[Orchestrator, Conductors, list[str]],
) -> None:
    """Posted migrations that no conductor takes: the abort reverts them in the drain's own
    process (it does not wait for a conductor forever); the guests stay on h1."""
    orch, _group, vms = setup
    handle = orch.drain("h1", max_parallel=2, submit=True, wait=False)

    def posted() -> list[str] | None:
        mids = [str(g.migration) for g in handle.drain.guests if g.migration]
        return mids if len(mids) == 2 else None

    mids = wait_for(posted, 60, "two migrations posted")
    d = handle.abort()
    assert d.status == "cancelled", [(g.instance, g.state, g.reason) for g in d.guests]
    sim = sim_of(orch)
    for name in vms:
        inst = sim.find_instance(name)
        assert inst is not None and inst.host == "h1"
    for mid in mids:
        assert orch.get(mid).status == "cancelled"
    assert not orch.leases.all()
