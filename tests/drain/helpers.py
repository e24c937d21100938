"""The drain test cluster and the checks every drain test makes of it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.drivers.simulated.tables import INSTANCES
from ferry.model import MigrationStatus
from tests.flows.helpers import assert_on
from tests.scheduler.helpers import host, vm, write_cluster

TERMINAL = {s.value for s in MigrationStatus if s.terminal}


def drain_cluster(tmp_path: Path, guests: int = 8) -> Path:
    """``src`` with ``guests`` running guests of 1-3 GiB, ``idle-1`` (paused), ``huge-1`` (fits
    nowhere) and ``pin-1`` (pinned); ``dst-1`` (room for about half the small ones), ``dst-2``
    (room for the rest, NUMA cells for the pinned one) and ``old`` (older hypervisor: never a
    destination)."""
    hosts = [
        host("src", vcpus=64, memory_mb=262_144, cells=2),
        host("dst-1", vcpus=32, memory_mb=12_288),
        host("dst-2", vcpus=32, memory_mb=65_536, cells=2),
        host("old", vcpus=32, memory_mb=131_072, version=1),
    ]
    items = [
        vm(f"g-{i:02d}", "src", memory_mb=1024 * (1 + i % 3), pinned=False) for i in range(guests)
    ]
    items += [
        vm("idle-1", "src", pinned=False, power_state="paused"),
        vm("huge-1", "src", memory_mb=100_000, pinned=False),
        vm("pin-1", "src", vcpus=2, memory_mb=2048, pinned=True),
    ]
    return write_cluster(tmp_path / "drain.toml", hosts, items)


def add_guest(sim: SimulatedDriver, name: str, on: str, memory_mb: int = 1024) -> None:
    """A guest that boots on ``on`` (as if someone started it there)."""
    spec = vm(name, on, memory_mb=memory_mb, pinned=False)
    row = {k: spec[k] for k in ("uuid", "name", "host", "vcpus", "memory_mb", "disk_gb")}
    table = INSTANCES
    with sim.db.connect() as conn:
        conn.execute(
            sa.insert(table).values(
                **row,
                power_state="running",
                dirty_rate_mbps=spec["dirty_rate_mbps"],
                volumes=[],
                vifs=[],
                cpu_policy=None,
                numa_pinning=None,
            )
        )


def max_in_flight(orch: Orchestrator, migration_ids: Iterable[str]) -> int:
    """The most of these migrations in flight at one moment, from their status histories (in
    flight: from the first status to the terminal one)."""
    points: list[tuple[float, int]] = []
    for mid in migration_ids:
        history = orch.get(mid).history
        start = history[0].at
        end = next((h.at for h in history if h.status in TERMINAL), float("inf"))
        points += [(start, 1), (end, -1)]
    most = now = 0
    for _at, step in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts at a tie
        now += step
        most = max(most, now)
    return most


def assert_every_guest_on_one_host(orch: Orchestrator, sim: SimulatedDriver) -> None:
    for inst in sim.list_instances():
        if inst.power_state == "running":
            assert_on(sim, inst.name, inst.host)
    assert orch.claims.list() == []
    assert orch.migrations.locks() == {}


ACTIVE = {"preparing", "running", "post-migrating"}


def intervals(
    orch: Orchestrator, migration_id: str, statuses: set[str]
) -> list[tuple[float, float]]:
    """The spans of the migration's status history spent in ``statuses`` (a migration that waits
    for a slot goes back to ``queued``, which ends a span)."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for change in orch.get(migration_id).history:
        if change.status in statuses and start is None:
            start = change.at
        elif change.status not in statuses and start is not None:
            out.append((start, change.at))
            start = None
    if start is not None:
        out.append((start, float("inf")))
    return out


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The most of ``spans`` overlapping at one moment (one ending as another starts: not)."""
    points = [p for a, b in spans for p in ((a, 1), (b, -1))]
    most = now = 0
    for _at, step in sorted(points):  # ends (-1) before starts (+1) at a tie
        now += step
        most = max(most, now)
    return most
