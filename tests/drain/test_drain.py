"""Host maintenance on the simulated cluster: the plan, the drain (limits, failures, guests that
appear), the host disabled for scheduling, bad input, abort and undrain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry import errors
from ferry.context import Event
from ferry.drain.planner import drain_status, plan_drain
from ferry.drain.service import DrainOptions
from ferry.model import Host, Instance
from ferry.scheduler.state import HostState
from tests.drain.helpers import (
    add_guest,
    assert_every_guest_on_one_host,
    drain_cluster,
    max_in_flight,
)
from tests.scheduler.helpers import orchestrator


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ferry.db'}"


# --------------------------------------------------------------------- the plan (pure)
def _state(name: str, memory_mb: int, version: int = 9, used: int = 0) -> HostState:
    return HostState(Host(name, "sim", "qemu", version, 64, memory_mb, 1000, memory_mb_used=used))


def _guest(name: str, memory_mb: int, power: str = "running") -> Instance:
    return Instance(f"u-{name}", name, "src", power, vcpus=1, memory_mb=memory_mb, disk_gb=0)


def test_plan_counts_the_claims_of_the_guests_planned_before() -> None:
    states = [_state("src", 64_000), _state("a", 10_000), _state("b", 8_000), _state("c", 99, 1)]
    guests = [_guest("g3", 6_000), _guest("g1", 4_000), _guest("g2", 5_000)]
    guests += [_guest("off", 1_000, "shutdown"), _guest("big", 20_000)]
    plan = {e.instance: e for e in plan_drain(guests, states, "src", order="smallest")}
    # smallest first: g1 -> a (most free), g2 -> b (a has 6,000 left, b 8,000), g3 -> a
    assert [plan[g].destination for g in ("g1", "g2", "g3")] == ["a", "b", "a"]
    assert plan["off"].skipped == "not running (shutdown)" and plan["off"].destination is None
    assert plan["big"].skipped == "fits nowhere"
    assert set(plan["big"].reasons) == {"a", "b", "c"}
    assert "older" in plan["big"].reasons["c"] and "RAM" in plan["big"].reasons["a"]
    largest = plan_drain(guests, states, "src", order="largest")
    assert [e.instance for e in largest][:3] == ["big", "g3", "g2"]
    forced = {e.instance: e for e in plan_drain(guests, states, "src", to="b")}
    assert forced["g1"].destination == "b" and forced["g3"].skipped == "fits nowhere"
    assert forced["g3"].reasons["a"] == "not the --to host"


def test_drain_status_from_the_guests() -> None:
    assert drain_status(["completed", "completed"], aborted=False) == "completed"
    assert drain_status([], aborted=False) == "completed"
    assert drain_status(["completed", "failed"], aborted=False) == "partial"
    assert drain_status(["skipped"], aborted=False) == "partial"
    assert drain_status(["failed", "skipped"], aborted=False) == "failed"
    assert drain_status(["completed"], aborted=True) == "cancelled"


# ------------------------------------------------------------------------- the drain
def test_drain_moves_every_running_guest_within_the_limit(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path))
    planned = orch.plan_drain("src")
    assert orch.drains() == []  # the plan changed nothing
    assert {e.instance: e.skipped for e in planned if e.skipped} == {
        "idle-1": "not running (paused)",
        "huge-1": "fits nowhere",
    }
    events: list[Event] = []
    orch.subscribe(lambda e: events.append(e) if e.kind == "drain" else None)
    d = orch.drain("src", max_parallel=2, reason="firmware")
    guests = {g.instance: g for g in d.guests}
    assert d.status == "partial" and d.host == "src"
    moved = {n for n, g in guests.items() if g.state == "completed"}
    assert moved == {f"g-{i:02d}" for i in range(8)} | {"pin-1"}
    assert guests["idle-1"].state == "skipped" and guests["huge-1"].state == "skipped"
    assert "dst-1" in (guests["huge-1"].reason or "") and "old" in (guests["huge-1"].reason or "")
    for name in moved:
        inst = sim.find_instance(name)
        assert inst is not None and inst.host == guests[name].destination != "src"
        assert orch.get(str(guests[name].migration)).status == "completed"
    assert max_in_flight(orch, [str(guests[n].migration) for n in moved]) == 2
    assert {e.data.get("instance") for e in events if e.status == "completed"} == moved
    assert_every_guest_on_one_host(orch, sim)
    # the host stays disabled: shown, and never chosen, not even when forced
    hosts = {h["name"]: h for h in orch.hosts()}
    assert hosts["src"]["enabled"] is False
    assert hosts["src"]["drain"] == d.id and hosts["src"]["disabled_reason"] == "firmware"
    assert hosts["dst-1"]["enabled"] is True and hosts["dst-1"]["drain"] is None
    here = str(guests["g-00"].destination)
    other = "dst-1" if here == "dst-2" else "dst-2"
    sim.set_host_state(other, enabled=False)
    with pytest.raises(errors.NoValidHost) as info:
        orch.live_migrate("g-00")
    assert info.value.reasons["src"] == "host is disabled"
    sim.set_host_state(other, enabled=True)
    with pytest.raises(errors.MigrationPreCheckError, match="maintenance"):
        orch.live_migrate("g-00", "src")
    assert orch.undrain("src") == d.id
    assert {h["name"]: h["enabled"] for h in orch.hosts()}["src"] is True
    assert orch.live_migrate("g-00", "src").destination == "src"
    orch.close()


def test_drain_in_the_background_returns_a_handle(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=3))
    handle = orch.drain("src", max_parallel=2, order="largest", wait=False)
    assert handle.drain.host == "src"  # recorded before the call returned
    d = handle.wait(timeout=120)
    assert handle.done() and d.id == handle.id and d.status == "partial"
    assert [g.instance for g in d.guests][:2] == ["huge-1", "g-02"]  # largest first
    assert_every_guest_on_one_host(orch, sim)
    orch.close()


def test_one_failing_guest_does_not_stop_the_others(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=4))
    # pin-1 fits dst-2 only (dst-1 has no NUMA cells): dst-2 refuses every guest, so the others
    # are rescheduled to dst-1 and pin-1 has nowhere to go
    sim.inject_fault("dst-2", "check_destination", times=0, message="maintenance soon")
    d = orch.drain("src", max_parallel=3, order="name")
    guests = {g.instance: g for g in d.guests}
    assert guests["pin-1"].state == "failed" and guests["pin-1"].migration
    assert orch.get(str(guests["pin-1"].migration)).status == "failed"
    assert all(guests[f"g-{i:02d}"].state == "completed" for i in range(4))
    assert {guests[f"g-{i:02d}"].destination for i in range(4)} == {"dst-1"}
    assert d.status == "partial"
    assert sim.find_instance("pin-1").host == "src"  # type: ignore[union-attr]
    assert_every_guest_on_one_host(orch, sim)
    orch.close()


def test_guests_appearing_during_the_drain_are_moved_too(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=2))
    added: list[str] = []

    def boot_one(event: Event) -> None:
        if event.kind == "drain" and event.status == "running" and not added:
            added.append("late-1")
            add_guest(sim, "late-1", "src")

    orch.subscribe(boot_one)
    d = orch.drain("src", max_parallel=1)
    late = next(g for g in d.guests if g.instance == "late-1")
    assert late.state == "completed" and late.destination in ("dst-1", "dst-2")
    assert sim.find_instance("late-1").host == late.destination  # type: ignore[union-attr]
    orch.close()


def test_a_guest_still_arriving_waits_for_its_migration(db_url: str, tmp_path: Path) -> None:
    import dataclasses

    from ferry.model import MigrationStatus

    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=2))
    add_guest(sim, "a-late", "src")
    late = sim.find_instance("a-late")
    assert late is not None
    # first by name; a migration from dst-1 has switched it over to src and is not finished
    orch.migrations.create("incoming", dataclasses.replace(late, host="dst-1"), {})
    released: list[str] = []

    def finish_incoming(event: Event) -> None:
        if event.kind == "drain" and event.status == "completed" and not released:
            released.append("incoming")
            orch.migrations.set_status("incoming", MigrationStatus.COMPLETED, unlock=late.uuid)

    orch.subscribe(finish_incoming)
    d = orch.drain("src", max_parallel=1, order="name")
    guest = next(g for g in d.guests if g.instance == "a-late")
    assert released and guest.state == "completed" and guest.migration != "incoming"
    assert sim.find_instance("a-late").host == guest.destination  # type: ignore[union-attr]
    orch.close()


def test_abort_stops_new_migrations_and_keeps_the_moved_ones(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=6))
    aborted: list[Any] = []

    def abort_after_first(event: Event) -> None:
        if event.kind == "drain" and event.status == "completed" and not aborted:
            aborted.append(orch.abort_drain(event.data["drain"]))

    orch.subscribe(abort_after_first)
    d = orch.drain("src", max_parallel=1)
    assert aborted and aborted[0].status == "running" and aborted[0].abort_requested
    assert d.status == "cancelled"
    states = [g.state for g in d.guests]
    assert states.count("completed") == 1
    assert any(g.reason == "drain cancelled" for g in d.guests)
    assert_every_guest_on_one_host(orch, sim)
    assert orch.abort_drain(d.id).status == "cancelled"  # twice: the same
    orch.close()


def test_abort_aborts_the_migrations_in_flight(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=4))
    drain_ids: list[str] = []
    orch.subscribe(
        lambda e: drain_ids.append(e.data["drain"]) if e.kind == "drain" and not drain_ids else None
    )

    def abort_in_transfer(event: Event) -> None:
        if event.kind == "phase_started" and event.phase == "transfer" and len(drain_ids) == 1:
            drain_ids.append("aborted")
            orch.abort_drain(drain_ids[0])

    orch.subscribe(abort_in_transfer)
    d = orch.drain("src", max_parallel=2)
    assert d.status == "cancelled"
    started = [g for g in d.guests if g.migration]
    assert 1 <= len(started) <= 2
    statuses = {orch.get(str(g.migration)).status for g in started}
    assert "cancelled" in statuses and statuses <= {"cancelled", "completed"}
    assert all(g.state == "skipped" for g in d.guests if not g.migration)
    for g in started:
        inst = sim.find_instance(g.instance)
        assert inst is not None
        assert inst.host == ("src" if g.state == "skipped" else g.destination)
    assert_every_guest_on_one_host(orch, sim)
    orch.close()


def test_abort_of_a_drain_nobody_runs_finishes_it_here(db_url: str, tmp_path: Path) -> None:
    orch, _sim = orchestrator(db_url, drain_cluster(tmp_path, guests=2))

    drain_id = orch.drain_service.start(DrainOptions("src", max_parallel=1))
    # recorded, not finished: a second drain and undrain are refused, nothing changes
    with pytest.raises(errors.HostDraining, match=drain_id):
        orch.drain("src")
    with pytest.raises(errors.HostDraining, match="abort it first"):
        orch.undrain("src")
    assert [d.id for d in orch.drains()] == [drain_id]
    d = orch.abort_drain(drain_id)
    assert d.status == "cancelled"
    assert {g.state for g in d.guests} == {"skipped"}
    assert orch.list() == []
    assert orch.undrain("src") == drain_id
    orch.close()


# ------------------------------------------------------------------------- bad input
def test_bad_input_changes_nothing(db_url: str, tmp_path: Path) -> None:
    orch, sim = orchestrator(db_url, drain_cluster(tmp_path, guests=2))
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"host": "nope"}, errors.HostNotFound, "nope"),
        ({"host": "src", "max_parallel": 0}, errors.ConfigError, "max-parallel"),
        ({"host": "src", "max_parallel": -2}, errors.ConfigError, "max-parallel"),
        ({"host": "src", "to": "src"}, errors.ConfigError, "being drained"),
        ({"host": "src", "to": "nope"}, errors.HostNotFound, "nope"),
        ({"host": "src", "to": "dst-1", "to_group": "g"}, errors.ConfigError, "combined"),
        ({"host": "src", "to_group": "nope"}, errors.ConfigError, "unknown host group"),
    ]
    for kwargs, exc, text in cases:
        with pytest.raises(exc, match=text):
            orch.drain(**kwargs)
    for other in ("dst-1", "dst-2", "old"):
        sim.set_host_state(other, enabled=False)
    with pytest.raises(errors.NoValidHost, match="disabled"):
        orch.drain("src")
    assert orch.drains() == [] and orch.list() == []
    assert all(h["drain"] is None for h in orch.hosts())
    orch.close()


def test_fifty_guests_onto_four_hosts_of_mixed_room(db_url: str, tmp_path: Path) -> None:
    from tests.scheduler.helpers import assert_no_overcommit, host, vm, write_cluster

    hosts = [host("src", vcpus=128, memory_mb=131_072)]
    hosts += [
        host(f"dst-{i}", vcpus=64, memory_mb=mb)
        for i, mb in enumerate((20 * 1024, 15 * 1024, 10 * 1024, 512), 1)
    ]
    guests = [vm(f"vm-{i:02d}", "src", memory_mb=1024, pinned=False) for i in range(50)]
    orch, sim = orchestrator(db_url, write_cluster(tmp_path / "fifty.toml", hosts, guests))
    d = orch.drain("src", max_parallel=3, order="name")
    states = [g.state for g in d.guests]
    assert states.count("completed") == 45 and states.count("skipped") == 5
    skipped = {g.instance for g in d.guests if g.state == "skipped"}
    assert skipped == {f"vm-{i}" for i in range(45, 50)}  # planned last, by name
    assert all((g.reason or "").startswith("fits nowhere: dst-1: ") for g in d.guests if g.reason)
    by_host: dict[str, int] = {}
    for g in d.guests:
        if g.destination and g.state == "completed":
            by_host[g.destination] = by_host.get(g.destination, 0) + 1
    assert by_host == {"dst-1": 20, "dst-2": 15, "dst-3": 10}
    moved = [str(g.migration) for g in d.guests if g.migration]
    assert max_in_flight(orch, moved) == 3
    assert_no_overcommit(sim)
    assert_every_guest_on_one_host(orch, sim)
    orch.close()
