"""A drain's process SIGKILLed at chosen moments, then ``ferry resume ID``: every guest on
exactly one host, no claim, lock or lease left, the in-flight limit never exceeded (from the
records' status histories), the drain's report matching the cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from tests.drain.helpers import assert_every_guest_on_one_host, drain_cluster, max_in_flight

pytestmark = pytest.mark.crash
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2

POINTS = [
    "status:accepted:1",  # the first migration made, not yet linked to its guest
    "drain:running:2",
    "started:transfer:2",
    "progress:50:1",
    "done:post-at-source:1",  # past a switchover
    "drain:completed:3",
    "started:claim-destination:4",
    "status:accepted:5",
]


def config(tmp_path: Path) -> Path:
    cluster = drain_cluster(tmp_path, guests=6)
    path = tmp_path / "ferry.toml"
    path.write_text(
        f'[simulated]\nspeed = 0\ncluster = "{cluster}"\n[migration]\npost_retry_delay = 0\n'
    )
    return path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("point", POINTS)
def test_drain_killed_then_resumed(tmp_path: Path, point: str) -> None:
    cfg = config(tmp_path)
    db_url = f"sqlite:///{tmp_path / 'ferry.db'}"
    runner = ("-m", "tests.drain.crash_runner", str(cfg), db_url)
    code, out, err = run(*runner, "drain", "src", "--max-parallel", str(LIMIT), "--kill-at", point)
    assert code == -signal.SIGKILL, f"not killed at {point}: rc={code} {out} {err}"
    drain_id = out[0]
    env = {"FERRY_DB": db_url, "FERRY_CONFIG": str(cfg)}
    code, out, err = run("-m", "ferry", "resume", drain_id, env=env)
    # exit 1: src still runs huge-1, the guest that fits nowhere (and says so)
    assert code == 1 and "src still runs huge-1" in err, (point, out, err)
    orch = Orchestrator(db_url, config=cfg)
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    d = orch.get_drain(drain_id)
    assert d.status == "partial", point
    guests = {g.instance: g for g in d.guests}
    for g in d.guests:
        inst = sim.find_instance(g.instance)
        assert inst is not None
        if g.state == "completed":
            assert inst.host == g.destination != "src", (point, g)
        else:
            assert inst.host == "src" and g.state == "skipped", (point, g)
    assert {n for n, g in guests.items() if g.state == "skipped"} == {"idle-1", "huge-1"}
    assert_every_guest_on_one_host(orch, sim)
    assert orch.leases.all() == []
    migrations = [m.id for m in orch.list()]
    assert {g.migration for g in d.guests if g.migration} == set(migrations)
    assert max_in_flight(orch, migrations) <= LIMIT
    orch.close()
