"""A drain honours every concurrency limit, with the job store's slots: ``--max-parallel`` out of
the host, ``[limits] per_destination`` into each host and ``[limits] total`` -- checked from the
records' status-history timestamps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ferry import Orchestrator
from ferry.config import LimitSettings
from ferry.drivers.simulated import SimulatedDriver
from ferry.jobs.limits import SlotRepository
from tests.drain.helpers import (
    ACTIVE,
    assert_every_guest_on_one_host,
    drain_cluster,
    intervals,
    most_at_once,
)
from tests.scheduler.helpers import settings_for


def limited(db_url: str, cluster: Path, **limits: int) -> tuple[Orchestrator, SimulatedDriver]:
    settings = dataclasses.replace(settings_for(cluster), limits=LimitSettings(**limits))
    orch = Orchestrator(db_url, settings=settings)
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    sim.ensure_seeded()
    return orch, sim


def _moved(orch: Orchestrator, drain_id: str) -> list[str]:
    d = orch.get_drain(drain_id)
    return [str(g.migration) for g in d.guests if g.state == "completed"]


def test_per_destination_and_total_limits(db_url: str, tmp_path: Path) -> None:
    orch, sim = limited(db_url, drain_cluster(tmp_path, guests=8), per_destination=1, total=2)
    d = orch.drain("src", max_parallel=3, order="name")
    moved = _moved(orch, d.id)
    assert len(moved) == 9 and d.status == "partial"  # huge-1 fits nowhere, idle-1 is paused
    active = [s for mid in moved for s in intervals(orch, mid, ACTIVE)]
    assert most_at_once(active) == 2  # total, although --max-parallel 3
    for dest in ("dst-1", "dst-2"):
        into = [
            s
            for mid in moved
            if orch.get(mid).destination == dest
            for s in intervals(orch, mid, {"running", "post-migrating"})
        ]
        assert most_at_once(into) == 1, dest
    details = [h.detail or "" for mid in moved for h in orch.get(mid).history]
    assert any(x.startswith("waiting for a slot") for x in details)
    assert SlotRepository(orch.db, orch.settings.limits).usage() == {}  # all given back
    assert_every_guest_on_one_host(orch, sim)
    orch.close()


def test_total_limit_and_slots_held_elsewhere(db_url: str, tmp_path: Path) -> None:
    orch, sim = limited(db_url, drain_cluster(tmp_path, guests=6), per_destination=0, total=3)
    # a migration elsewhere (a conductor's) holds one of the 3 slots of the total
    slots = SlotRepository(orch.db, orch.settings.limits)
    assert slots.acquire("elsewhere", {"total": 3}) is None
    d = orch.drain("src", max_parallel=4, order="name")
    moved = _moved(orch, d.id)
    assert len(moved) == 7
    active = [s for mid in moved for s in intervals(orch, mid, ACTIVE)]
    assert most_at_once(active) == 2
    assert slots.usage() == {"total": 1}
    assert_every_guest_on_one_host(orch, sim)
    orch.close()


def test_max_parallel_is_the_limit_out_of_the_host(db_url: str, tmp_path: Path) -> None:
    orch, sim = limited(db_url, drain_cluster(tmp_path, guests=6), per_source=1, per_destination=0)
    d = orch.drain("src", max_parallel=3, order="name")  # above [limits] per_source
    moved = _moved(orch, d.id)
    active = [s for mid in moved for s in intervals(orch, mid, ACTIVE)]
    assert most_at_once(active) == 3
    assert_every_guest_on_one_host(orch, sim)
    orch.close()
