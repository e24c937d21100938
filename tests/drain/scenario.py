"""The drain crash scenario of issue 15, shared by ``test_drain_crash.py`` (a few kills, in CI)
and ``soak.py`` (20): 50 guests on one host, 4 destinations of mixed room, pinned guests, an
anti-affinity group, a guest that fits nowhere; the drain's process SIGKILLed at random moments,
each followed by a resume (itself killed, but the last); then every invariant checked."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.model.drain import Drain
from tests.drain.helpers import ACTIVE, assert_every_guest_on_one_host, intervals, most_at_once
from tests.scheduler.helpers import assert_no_overcommit, host, vm, write_cluster

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 3  # --max-parallel
PER_DESTINATION = 2  # [limits] per_destination
GROUP = ("aa-0", "aa-1", "aa-2")  # --not-together
PAUSED = {"idle-0", "idle-1"}
#: the kinds of moment a kill comes at (crash_runner specs without the count): a migration
#: made but not linked, a guest's state recorded, mid-transfer, past a switchover, ...
MOMENTS = [
    "status:accepted",
    "drain:running",
    "drain:completed",
    "started:claim-destination",
    "started:transfer",
    "progress:50",
    "done:post-at-source",
    "status:completed",
]


def cluster(directory: Path) -> Path:
    """``src``: 40 guests of 1 GiB, 4 pinned of 2 GiB, the anti-affinity group of 3, 2 paused
    and ``huge-0`` (fits nowhere): 50. Destinations: ``dst-1`` 24 GiB and ``dst-3`` 12 GiB with
    NUMA cells (the only ones a pinned guest fits), ``dst-2`` 16 GiB, ``dst-4`` 8 GiB."""
    hosts = [
        host("src", vcpus=128, memory_mb=262_144, cells=2),
        host("dst-1", vcpus=64, memory_mb=24 * 1024, cells=2),
        host("dst-2", vcpus=64, memory_mb=16 * 1024),
        host("dst-3", vcpus=64, memory_mb=12 * 1024, cells=2),
        host("dst-4", vcpus=64, memory_mb=8 * 1024),
    ]
    guests = [vm(f"vm-{i:02d}", "src", pinned=False) for i in range(40)]
    guests += [vm(f"pin-{i}", "src", vcpus=2, memory_mb=2048, pinned=True) for i in range(4)]
    guests += [vm(name, "src", pinned=False) for name in GROUP]
    guests += [vm(name, "src", pinned=False, power_state="paused") for name in sorted(PAUSED)]
    guests += [vm("huge-0", "src", memory_mb=100_000, pinned=False)]
    assert len(guests) == 50
    return write_cluster(directory / "crash50.toml", hosts, guests)


def config(directory: Path) -> Path:
    path = directory / "ferry.toml"
    path.write_text(
        f'[simulated]\nspeed = 0\ncluster = "{cluster(directory)}"\n'
        f"[migration]\npost_retry_delay = 0\n[limits]\nper_destination = {PER_DESTINATION}\n"
    )
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout.split(), proc.stderr


@dataclass
class Kill:
    spec: str
    killed: bool
    moved: int  # guests completed when it ended
    seconds: float


def run(directory: Path, kills: int, seed: int, report: Callable[[Kill], None] = print) -> Drain:
    """The scenario with up to ``kills`` kills (fewer when the drain ends first); returns the
    finished drain after the checks."""
    rng = random.Random(seed)
    cfg = config(directory)
    db_url = f"sqlite:///{directory / 'ferry.db'}"
    base = ["-m", "tests.drain.crash_runner", str(cfg), db_url]
    orch = Orchestrator(db_url, config=cfg)
    first = True
    drain_id = ""
    for _ in range(kills):
        # a handful of events in: every kill lands while work is left (47 guests to move)
        spec = f"{rng.choice(MOMENTS)}:{rng.randint(1, 4)}"
        args = ["drain", "src", "--max-parallel", str(LIMIT), "--order", "largest"]
        args += ["--not-together", ",".join(GROUP)]
        if not first:
            args = ["resume", drain_id]
        start = time.monotonic()
        code, out, err = _run([*base, *args, "--kill-at", spec])
        drain_id = drain_id or out[0]
        killed = code == -signal.SIGKILL
        assert killed or code == 0, (spec, code, out, err[-3000:])
        moved = orch.get_drain(drain_id).counts()["completed"]
        report(Kill(spec, killed, moved, time.monotonic() - start))
        first = False
        if not killed:
            break
    env = {"FERRY_DB": db_url, "FERRY_CONFIG": str(cfg)}
    code, out, err = _run(["-m", "ferry", "resume", drain_id, "--json"], env=env)
    # exit 1: src still runs huge-0, the guest that fits nowhere (and says so)
    assert code == 1 and "src still runs huge-0" in err, (code, err[-3000:])
    d = check(orch, drain_id)
    orch.close()
    return d


def check(orch: Orchestrator, drain_id: str) -> Drain:
    """Every guest on exactly one host, no claim, lock or lease left, no limit ever exceeded
    (from the records' status histories), the anti-affinity group apart, the report matching
    the cluster."""
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    d = orch.get_drain(drain_id)
    assert d.status == "partial", d.status
    assert len(d.guests) == 50
    for g in d.guests:
        inst = sim.find_instance(g.instance)
        assert inst is not None
        if g.state == "completed":
            assert inst.host == g.destination != "src", g
            assert orch.get(str(g.migration)).status == "completed"
        else:
            assert inst.host == "src" and g.state == "skipped", g
    skipped = {g.instance for g in d.guests if g.state == "skipped"}
    assert skipped == PAUSED | {"huge-0"}, skipped
    huge = next(g for g in d.guests if g.instance == "huge-0")
    assert (huge.reason or "").startswith("fits nowhere: dst-1: ")
    hosts_of_group = {sim.find_instance(n).host for n in GROUP}  # type: ignore[union-attr]
    assert len(hosts_of_group) == 3, hosts_of_group
    for i in range(4):
        assert sim.find_instance(f"pin-{i}").host in ("dst-1", "dst-3")  # type: ignore[union-attr]
    assert_every_guest_on_one_host(orch, sim)
    assert_no_overcommit(sim)
    assert orch.leases.all() == []
    migrations = [m.id for m in orch.list()]
    assert {g.migration for g in d.guests if g.migration} == set(migrations)
    completed = [m for m in migrations if orch.get(m).status == "completed"]
    assert most_at_once(s for m in migrations for s in intervals(orch, m, ACTIVE)) <= LIMIT
    for dest in ("dst-1", "dst-2", "dst-3", "dst-4"):
        into = [
            s
            for m in completed
            if orch.get(m).destination == dest
            for s in intervals(orch, m, {"running", "post-migrating"})
        ]
        assert most_at_once(into) <= PER_DESTINATION, dest
    return d
