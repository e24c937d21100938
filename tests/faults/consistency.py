"""The end state every fault run must reach, checked in one place (the tests and the soak)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.drivers.simulated.tables import TRANSFERS
from ferry.jobs.tables import SLOTS
from ferry.model import MigrationStatus
from tests.flows.helpers import assert_nothing_held, assert_on

#: where the guest runs after each terminal status
HOME = {"completed": "destination", "failed": "source", "cancelled": "source"}


def transfers(sim: SimulatedDriver, instance_uuid: str) -> list[dict[str, Any]]:
    with sim.db.connect() as conn:
        q = sa.select(TRANSFERS).where(TRANSFERS.c.instance_uuid == instance_uuid)
        return [dict(r) for r in conn.execute(q).mappings().all()]


def assert_consistent(orch: Orchestrator, sim: SimulatedDriver, mid: str, vm: str) -> str:
    """The record terminal, the guest running on exactly the host its status says, nothing held
    (claim, instance lock, lease, check marker, limit slot), at most one completed transfer;
    returns the status."""
    m = orch.get(mid)
    assert MigrationStatus(m.status).terminal, (m.status, m.error)
    where = HOME.get(m.status)
    assert where is not None, (m.status, m.error)
    assert_on(sim, vm, m.destination if where == "destination" else m.source)
    assert_nothing_held(orch, sim)
    with orch.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(SLOTS)).scalar() == 0
    inst = sim.find_instance(vm)
    assert inst is not None
    done = [t for t in transfers(sim, inst.uuid) if t["state"] == "completed"]
    assert len(done) <= 1, done  # never migrated twice
    finished = [h for h in m.history if MigrationStatus(h.status).terminal]
    assert len(finished) == 1, m.history
    return str(m.status)
