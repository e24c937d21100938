"""PostgreSQL restarted, and stopped for a while, while two conductors run migrations: the runs
that met the outage stop (the database refused a write: resumable), their jobs go back to the
board, and once the server is back a conductor resumes them. The operator does nothing. The
simulated cluster (the hypervisors) lives in an SQLite file of its own: the outage is ferry's
database's only. ``FERRY_FAULT_PG_DOWN`` sets how long the server stays stopped (seconds; CI:
a few)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.config import load_settings
from ferry.drivers.simulated import SimulatedDriver
from ferry.persistence.db import Database
from tests.infra import postgres as pg_infra, redis as redis_infra
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    in_process_conductors,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.redis]
DOWN_SECONDS = float(os.environ.get("FERRY_FAULT_PG_DOWN", "3"))
VMS = 3


def run_through_outage(
    tmp_path: Path, pg: tuple[str, int, str], redis_url: str, down: float, moment: float = 10.0
) -> tuple[Orchestrator, list[str], float]:
    """Three migrations, two conductors; the server stopped for ``down`` seconds once a
    transfer is ``moment`` percent through; returns the orchestrator, the migrations and the
    seconds from the server's return until every migration ended and the board was empty."""
    directory, port, url = pg
    tmp_path.mkdir(parents=True, exist_ok=True)
    cluster = tmp_path / "cluster.toml"
    vms = write_cluster(cluster, hosts=2, vms_per_host={1: VMS}, memory_mb=2048, bandwidth_mbps=512)
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=url,
        board_url=redis_url,
        namespace="faults",
        speed=1.0,
        lease_seconds=2.0,
    )
    hv_url = f"sqlite:///{tmp_path / 'hv.db'}"

    def orchestrator() -> Orchestrator:
        sim = SimulatedDriver(Database(hv_url), cluster_file=cluster, speed=1.0)
        return Orchestrator(settings=load_settings(cfg), drivers=[sim])

    orch = orchestrator()
    orch.drivers.drivers[0].ensure_seeded()  # type: ignore[attr-defined]
    mids = [orch.submit(vm) for vm in vms]
    with in_process_conductors([orchestrator(), orchestrator()]):
        wait_for(
            lambda: any((orch.get(m).progress or {}).get("percent", 0) >= moment for m in mids),
            60,
            "a transfer to be under way",
        )
        pg_infra.stop(directory)
        threading.Event().wait(down)  # the outage itself (its length is the fault), no sync
        pg_infra.start_again(directory, port)
        back = time.monotonic()
        wait_for(lambda: all(orch.get(m).done for m in mids), 180, "every migration to end")
        wait_for(lambda: not board_jobs(orch), 60, "the board to empty")
        recovered = time.monotonic() - back
    return orch, mids, recovered


@pytest.mark.parametrize("down", [0.0, DOWN_SECONDS], ids=["restarted", "stopped-a-while"])
def test_postgres_outage_while_conductors_run(
    tmp_path: Path,
    own_postgres: tuple[str, int, str],
    own_redis: tuple[str, int],
    down: float,
) -> None:
    redis_dir, redis_port = own_redis
    redis_url = redis_infra.start(redis_dir, redis_port)
    orch, mids, _ = run_through_outage(tmp_path, own_postgres, redis_url, down)
    try:
        for mid in mids:
            m = orch.get(mid)
            # a run that met the outage before its switchover may have been reverted (its
            # guest back on the source): consistent too, and the cause is its error
            assert m.status in ("completed", "failed"), (mid, m.status, m.error)
        assert_store_clean(orch, mids)
    finally:
        orch.close()
