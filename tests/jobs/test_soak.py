"""The soak: 3 conductors, 100 migrations on the simulated cluster, conductors SIGKILLed at
random and restarted -> every migration terminal exactly once, no VM on two hosts, no leaked
claim, lease or slot, the board empty at the end.

``FERRY_SOAK_MIGRATIONS`` (default 100) and ``FERRY_SOAK_SEED`` change its size and its kills;
``tox -e soak`` runs a bigger one."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    conductors,
    env_int,
    sim_of,
    transfers_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.crash]


def test_soak_random_sigkills(
    tmp_path: Path, pg_url: str, redis_server: str, namespace: str
) -> None:
    migrations = env_int("FERRY_SOAK_MIGRATIONS", 100)
    seed = env_int("FERRY_SOAK_SEED", int(time.time()))
    rng = random.Random(seed)
    hosts = 10
    cluster = tmp_path / "cluster.toml"
    # 256 MiB at 512 MiB/s: each transfer takes ~0.5 s of wall time at speed 1
    vms = write_cluster(
        cluster,
        hosts=hosts,
        vms_per_host=-(-migrations // hosts),
        memory_mb=256,
        bandwidth_mbps=512,
    )[:migrations]
    cfg = write_config(
        tmp_path / "ferry.toml",
        db_url=pg_url,
        board_url=redis_server,
        namespace=namespace,
        cluster=cluster,
        speed=1.0,
        lease_seconds=1.5,
        poll_interval=0.1,
        max_jobs=4,
        per_source=2,
        per_destination=3,
        total=10,
    )
    orch = Orchestrator(config=cfg)
    sim = sim_of(orch)
    sim.ensure_seeded()
    mids = [orch.submit(vm) for vm in vms]
    names = ["c1", "c2", "c3"]
    kills = 0
    with conductors(cfg, tmp_path) as group:
        for name in names:
            group.start(name)
        deadline = time.monotonic() + env_int("FERRY_SOAK_SECONDS", 150)
        next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
        while not all(r.done for r in orch.list()):
            assert time.monotonic() < deadline, (
                f"seed {seed}: {Counter(r.status for r in orch.list())} after {kills} kills"
            )
            if time.monotonic() >= next_kill:
                victim = rng.choice(names)
                group.signal(victim, signal.SIGKILL)
                group.procs[victim].proc.wait(10)
                kills += 1
                group.start(victim)
                next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
            time.sleep(0.05)  # pacing of this chaos loop, not synchronisation
        wait_for(lambda: not board_jobs(orch), 60, f"seed {seed}: the board to empty")
        for name in names:
            group.wait_started(name)
        codes = group.stop_all()
    assert set(codes.values()) == {0}, codes
    assert kills >= 3, f"seed {seed}: only {kills} kills; the soak ran too fast to mean much"
    statuses = Counter(orch.get(m).status for m in mids)
    assert statuses == Counter({"completed": migrations}), (seed, statuses)
    transfers = Counter(t["instance_uuid"] for t in transfers_of(orch))
    for mid in mids:
        record = orch.get(mid)
        assert transfers[record.instance] == 1, (seed, record.instance_name)
        assert sim.find_instance(record.instance).host == record.destination  # type: ignore[union-attr]
    assert_store_clean(orch, mids)
    orch.close()
    print(f"soak: {migrations} migrations, {kills} SIGKILLs, seed {seed}")
