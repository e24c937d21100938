"""``ferry drain`` on three real libvirt hosts: lv-a emptied of 3 running guests, at most 2
migrations at once; a drain aborted mid-way (the migration in flight cancelled before its
switchover, the rest never started, every guest still running on lv-a)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferry.context import Event
from tests.drain.helpers import ACTIVE, intervals, most_at_once
from tests.infra.guest import Guest
from tests.libvirt import import_libvirt
from tests.libvirt.helpers import make_orchestrator, running_copies

libvirt = import_libvirt()

pytestmark = pytest.mark.libvirt

KEYS = {"lv-a": "A", "lv-b": "B", "lv-c": "C"}


def test_drain_three_guests_two_at_once(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    guests = [make_guest(f"dr-{i}", memory_mib=16, kernel="idle", host="A") for i in range(3)]
    orch = make_orchestrator(db_url, libvirt_hosts, live_migration_bandwidth=32)
    d = orch.drain("lv-a", max_parallel=2, reason="kernel update")
    assert d.status == "completed", [(g.instance, g.state, g.reason) for g in d.guests]
    assert {g.destination for g in d.guests} <= {"lv-b", "lv-c"}
    for guest, g in zip(guests, sorted(d.guests, key=lambda g: g.instance), strict=True):
        assert g.destination in ("lv-b", "lv-c")
        where = running_copies(libvirt_connect, str(guest.domain.UUIDString()))
        assert list(where) == [KEYS[str(g.destination)]], where  # on exactly one host
    mids = [str(g.migration) for g in d.guests]
    assert most_at_once(s for m in mids for s in intervals(orch, m, ACTIVE)) <= 2
    assert not [i for i in orch.instances() if i.host == "lv-a"]
    assert {h["name"]: h["enabled"] for h in orch.hosts()}["lv-a"] is False
    assert orch.undrain("lv-a") == d.id
    orch.close()


def test_drain_aborted_mid_way(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    guests = [make_guest(f"ab-{i}", memory_mib=64, kernel="idle", host="A") for i in range(3)]
    # 64 MiB at 16 MiB/s: the first transfer takes ~4 s, aborted once past 20 %
    orch = make_orchestrator(db_url, libvirt_hosts, live_migration_bandwidth=16)
    aborted: list[str] = []
    drain_ids: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "drain" and not drain_ids:
            drain_ids.append(e.data["drain"])
        if e.kind == "progress" and e.data["percent"] > 20 and not aborted and drain_ids:
            aborted.append(e.migration_id)
            orch.abort_drain(drain_ids[0])

    orch.subscribe(on_event)
    d = orch.drain("lv-a", max_parallel=1, order="name")
    assert aborted and d.status == "cancelled"
    states = {g.instance: g for g in d.guests}
    assert orch.get(aborted[0]).status == "cancelled"
    assert states["ab-0"].migration == aborted[0]
    assert all(states[f"ab-{i}"].migration is None for i in (1, 2))  # never started
    assert {g.state for g in d.guests} == {"skipped"}
    for guest in guests:
        where = running_copies(libvirt_connect, str(guest.domain.UUIDString()))
        assert where == {"A": (1, 1)}, where  # running on the source, booted there
    orch.close()
