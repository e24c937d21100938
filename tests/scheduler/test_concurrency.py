"""Seed 003 and seed 004 under contention: 20 migrations at once towards hosts with room for 10,
from threads and from processes, on SQLite and on PostgreSQL. Exactly 10 complete, the others end
NoValidHost (after a reschedule, or because no host was left), no host is overcommitted, no two
guests share a pCPU, and nothing stays claimed.

The whole-migration tests hold each migration's first claim until all 20 have chosen a host
(:class:`FirstClaimGate`). Left to the machine's timing, a migration mostly chooses its host
after the others' claims are in the cache, and the scheduler never picks a full host: in six
ungated runs on SQLite (threads and processes) no migration tried a second host, and at most one
had a claim refused. So a reschedule could not be asserted without the gate. With the gate
every migration chooses on the empty cache, all 20 pick dst-2 (most free RAM) and claim it at
once: 6 win, the 14 others are refused and reschedule to dst-1, where 4 win.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry import NoValidHost, Orchestrator
from ferry.model import Host, Instance
from ferry.model.numa import HostNumaState, NumaTopology, Pinning
from ferry.persistence.db import Database
from ferry.scheduler.repository import ClaimRepository
from tests.concurrency import race
from tests.scheduler.helpers import (
    assert_cache_matches_drivers,
    assert_no_overcommit,
    orchestrator,
    room_for_ten,
    settings_for,
)

VMS = [f"vm-{i:02d}" for i in range(20)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ferry.db'}"
    else:
        yield request.getfixturevalue("pg_url")


# ------------------------------------------------------------------------ whole migrations
class FirstClaimGate:
    """Wraps an orchestrator's ``claims.claim_resources`` so that each migration's first claim
    waits at ``barrier`` (20 parties: one per migration, threads or processes). A migration
    reaches its first claim only after the scheduler chose its host, so when the barrier opens
    all 20 chose on a cache without claims; later claims (reschedules) pass straight through."""

    def __init__(self, orch: Orchestrator, barrier: Any) -> None:
        self.barrier = barrier
        self.first_done: set[str] = set()
        self.real = orch.claims.claim_resources
        orch.claims.claim_resources = self.claim  # type: ignore[method-assign]

    def claim(self, migration_id: str, *args: Any, **kwargs: Any) -> Any:
        if migration_id not in self.first_done:
            self.first_done.add(migration_id)
            self.barrier.wait(timeout=120)
        return self.real(migration_id, *args, **kwargs)


def outcome(orch: Orchestrator, vm: str) -> str:
    try:
        m = orch.live_migrate(vm)
    except NoValidHost as exc:
        assert exc.migration is not None and exc.migration.status == "failed"
        return "no-valid-host"
    assert m.status == "completed"
    return f"completed:{m.destination}"


def check_room_for_ten(orch: Orchestrator, outcomes: list[str]) -> None:
    done = [o for o in outcomes if o.startswith("completed")]
    assert len(done) == 10, outcomes
    assert outcomes.count("no-valid-host") == 10, outcomes
    # dst-1 takes 4 and dst-2 takes 6 (by RAM, or by NUMA cells of 5 pCPUs for 2-vCPU guests)
    assert done.count("completed:dst-1") == 4 and done.count("completed:dst-2") == 6
    sim = orch.drivers.drivers[0]
    assert_no_overcommit(sim)  # type: ignore[arg-type]
    placed = {i.name: i.host for i in orch.instances()}
    assert sum(1 for v in VMS if placed[v] != "src") == 10
    assert orch.migrations.locks() == {}
    assert_cache_matches_drivers(orch)
    records = orch.list()
    assert sorted(m.status for m in records) == ["completed"] * 10 + ["failed"] * 10
    for m in records:
        if m.status == "failed":
            assert "no valid host" in (m.error or "")
    check_reschedules(orch)


def check_reschedules(orch: Orchestrator) -> None:
    """The hosts each migration tried (its record's attempts), behind :class:`FirstClaimGate`:
    every one chose dst-2 first; the 6 that completed there tried nothing else; the 4 that
    completed on dst-1 had their dst-2 claim refused and rescheduled; the 10 that failed were
    refused on dst-2 and then on dst-1, or found dst-1 full of claims (NoValidHost at once)."""
    shapes: dict[str, int] = {}
    for m in orch.list():
        record = orch.get(m.id)  # list() leaves the attempts out
        attempts = [(a.host, a.outcome) for a in record.attempts]
        assert attempts and attempts[0][0] == "dst-2", attempts
        for a in record.attempts:
            if a.outcome == "rejected":
                assert (a.reason or "").startswith("claim: "), a
        if record.status == "completed" and record.destination == "dst-2":
            assert attempts == [("dst-2", "chosen")]
            shape = "won first"
        elif record.status == "completed":
            assert attempts == [("dst-2", "rejected"), ("dst-1", "chosen")]
            shape = "rescheduled, won"
        else:
            assert attempts in (
                [("dst-2", "rejected")],
                [("dst-2", "rejected"), ("dst-1", "rejected")],
            ), attempts
            shape = "rescheduled, lost" if len(attempts) == 2 else "lost, no host left"
        shapes[shape] = shapes.get(shape, 0) + 1
    assert shapes["won first"] == 6 and shapes["rescheduled, won"] == 4, shapes
    assert shapes.get("rescheduled, lost", 0) + shapes.get("lost, no host left", 0) == 10


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_twenty_migrations_from_threads(url: str, tmp_path: Path, pinned: bool) -> None:
    orch, _sim = orchestrator(url, room_for_ten(tmp_path, pinned=pinned))
    try:
        FirstClaimGate(orch, threading.Barrier(20))
        outcomes = race(20, lambda i: outcome(orch, VMS[i]))
        check_room_for_ten(orch, outcomes)
    finally:
        orch.close()


def _migrate_in_child(
    url: str, cluster: str, vm: str, barrier: Any, gate: Any, results: Any
) -> None:  # pragma: no cover - runs in a forked process
    orch = Orchestrator(url, settings=settings_for(Path(cluster)))
    try:
        FirstClaimGate(orch, gate)
        barrier.wait(timeout=120)
        results.put((vm, outcome(orch, vm)))
    except BaseException as exc:
        results.put((vm, f"error: {type(exc).__name__}: {exc}"))
    finally:
        orch.close()


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_twenty_migrations_from_processes(url: str, tmp_path: Path, pinned: bool) -> None:
    cluster = room_for_ten(tmp_path, pinned=pinned)
    orch, _sim = orchestrator(url, cluster)
    orch.refresh_host_states()
    orch.close()  # no connection of the parent crosses the fork
    ctx = multiprocessing.get_context("fork")
    barrier, gate = ctx.Barrier(20), ctx.Barrier(20)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_in_child, args=(url, str(cluster), vm, barrier, gate, results))
        for vm in VMS
    ]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    orch, _sim = orchestrator(url, cluster)
    try:
        check_room_for_ten(orch, [got[vm] for vm in VMS])
    finally:
        orch.close()


# ------------------------------------------------------------------- claims only (the core)
TOPOLOGY = NumaTopology.uniform(cells=2, cpus_per_cell=5, memory_mb_per_cell=8192)


def numa_host(name: str) -> Host:
    """10 pCPUs in two cells of 5: room for 4 pinned 2-vCPU guests (2 per cell)."""
    return Host(
        name=name,
        driver="t",
        hypervisor_type="qemu",
        hypervisor_version=1,
        vcpus=10,
        memory_mb=16_384,
        disk_gb=1000,
        numa=HostNumaState(TOPOLOGY),
    )


PINNED = Instance("u", "vm", "src", vcpus=2, memory_mb=1024, disk_gb=1, extra={"pinned": True})


def claim_on_hosts(db: Database, mid: str, hosts: list[str]) -> tuple[str, Pinning] | None:
    """What a migration does: try each host until a claim holds."""
    repo = ClaimRepository(db)
    for h in hosts:
        result = repo.claim_resources(mid, h, PINNED)
        if result.ok:
            assert result.pinning is not None
            return h, result.pinning
    return None


def check_claims(db: Database, won: list[tuple[str, Pinning] | None], hosts: list[str]) -> None:
    held = [w for w in won if w is not None]
    assert len(held) == 4 * len(hosts)
    repo = ClaimRepository(db)
    for h in hosts:
        mine = [p for host, p in held if host == h]
        assert len(mine) == 4
        pcpus = [c for p in mine for c in p.vcpu_to_pcpu]
        assert len(pcpus) == len(set(pcpus)) == 8  # no pCPU claimed twice
        for p in mine:  # each claim inside one cell
            cell = TOPOLOGY.cells[p.cell]
            assert p.pcpus <= cell.cpus
        assert repo.claimed()[h] == (8, 4096, 4)
        state = repo.host_states([h])[0]
        assert sorted(len(c.claimed) for c in state.cells) == [4, 4]
        assert all(c.free_mb >= 0 and len(c.free_pcpus) == 1 for c in state.cells)
    assert len(repo.list()) == len(held)


def test_claims_from_threads_never_share_a_pcpu(url: str) -> None:
    db = Database(url)
    db.upgrade()
    hosts = ["h1", "h2"]
    ClaimRepository(db).refresh_hosts([numa_host(h) for h in hosts])
    won = race(20, lambda i: claim_on_hosts(db, f"m{i}", hosts))
    check_claims(db, won, hosts)
    db.close()


def _claim_in_child(url: str, i: int, barrier: Any, results: Any) -> None:  # pragma: no cover
    db = Database(url)
    try:
        barrier.wait(timeout=60)
        won = claim_on_hosts(db, f"m{i}", ["h1", "h2"])
        results.put((i, None if won is None else (won[0], won[1].to_dict())))
    finally:
        db.close()


def test_claims_from_processes_never_share_a_pcpu(url: str) -> None:
    db = Database(url)
    db.upgrade()
    hosts = ["h1", "h2"]
    ClaimRepository(db).refresh_hosts([numa_host(h) for h in hosts])
    db.close()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(20), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_child, args=(url, i, barrier, results)) for i in range(20)
    ]
    for p in procs:
        p.start()
    raw = [results.get(timeout=120)[1] for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    won = [None if r is None else (r[0], Pinning.from_dict(r[1])) for r in raw]
    db = Database(url)
    check_claims(db, won, hosts)
    db.close()


def test_release_and_complete_race_with_claims(url: str) -> None:
    """Claims released (reverts) and completed (claims turned into usage) while others claim:
    the counters stay exact and no pCPU is ever held twice."""
    db = Database(url)
    db.upgrade()
    repo = ClaimRepository(db)
    repo.refresh_hosts([numa_host("h1")])
    lock = threading.Lock()
    log: list[tuple[str, str]] = []

    def churn(i: int) -> None:
        mid = f"m{i}"
        won = claim_on_hosts(db, mid, ["h1"])
        if won is None:
            return
        action: Callable[[str], Any] = repo.release if i % 2 else repo.complete
        action(mid)
        with lock:
            log.append((mid, "released" if i % 2 else "completed"))

    race(12, churn)
    state = repo.host_states(["h1"])[0]
    completed = sum(1 for _m, what in log if what == "completed")
    assert repo.list() == [] and repo.claimed()["h1"] == (0, 0, 0)
    assert state.host.vcpus_used == 2 * completed
    assert sum(len(c.pinned) for c in state.cells) == 2 * completed
    assert all(not c.claimed and c.claimed_mb == 0 for c in state.cells)
    db.close()
