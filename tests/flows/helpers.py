"""Invariants checked after every run on the simulated cluster."""

from __future__ import annotations

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver


def running_copies(sim: SimulatedDriver, vm: str) -> list[str]:
    """Hosts where a guest of ``vm`` exists."""
    inst = sim.find_instance(vm)
    assert inst is not None
    return sorted(
        {a["host"] for a in sim.artifacts(instance_uuid=inst.uuid) if a["name"] == "guest"}
    )


def assert_nothing_held(orch: Orchestrator, sim: SimulatedDriver) -> None:
    """No claim, no instance lock, no lease, no destination-check marker left behind."""
    assert orch.claims.list() == []
    assert all(v == (0, 0, 0) for v in orch.claims.claimed().values())
    assert orch.migrations.locks() == {}
    assert orch.leases.all() == []
    assert sim.check_markers() == []


def assert_on(sim: SimulatedDriver, vm: str, host: str) -> None:
    """The VM runs on ``host`` only, and nothing of it is left on any other host."""
    inst = sim.find_instance(vm)
    assert inst is not None
    assert inst.host == host
    assert inst.power_state in ("running", "paused")
    loc = sim.locate(inst.uuid)
    assert loc.host == host and not loc.transfer_in_flight
    elsewhere = [a for a in sim.artifacts(instance_uuid=inst.uuid) if a["host"] != host]
    assert elsewhere == [], elsewhere
    assert running_copies(sim, vm) == [host]
