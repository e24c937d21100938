"""The same guarantees on PostgreSQL: schema on first use, full runs, atomic claims and leases,
crash and resume."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa

from ferry import NoValidHost, Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.persistence.db import Database
from ferry.persistence.repository import LeaseRepository
from tests.concurrency import assert_twenty_claims_for_room_of_ten, race
from tests.conftest import fast_settings
from tests.crash.test_crash import run
from tests.flows.helpers import assert_nothing_held, assert_on

pytestmark = pytest.mark.postgres


def orchestrator(url: str) -> tuple[Orchestrator, SimulatedDriver]:
    orch = Orchestrator(url, settings=fast_settings())
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    return orch, sim


def test_full_runs(pg_url: str) -> None:
    orch, sim = orchestrator(pg_url)
    m = orch.live_migrate("web-1")
    assert (m.status, m.destination) == ("completed", "compute-3")
    assert [a.outcome for a in m.attempts] == ["rejected", "chosen"]
    assert_on(sim, "web-1", "compute-3")
    sim.inject_fault("compute-1", "check_destination", message="full")
    sim.inject_fault("compute-2", "check_destination", message="full")
    with pytest.raises(NoValidHost):
        orch.live_migrate("web-1")
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    orch.close()
    # a second process-like open of the same database sees everything
    again, _ = orchestrator(pg_url)
    assert [m.status for m in again.list()] == ["failed", "completed"]
    again.close()


def test_concurrent_claims_never_overcommit(pg_url: str) -> None:
    db = Database(pg_url)
    db.upgrade()
    assert_twenty_claims_for_room_of_ten(db)
    db.close()


def test_one_lease_winner_under_contention(pg_url: str) -> None:
    db = Database(pg_url)
    db.upgrade()
    won = race(
        10,
        lambda i: f"runner-{i}" if LeaseRepository(db).acquire("m1", f"runner-{i}", 60) else None,
    )
    winners = [w for w in won if w]
    assert len(winners) == 1
    assert LeaseRepository(db).get("m1")["owner"] == winners[0]  # type: ignore[index]
    db.close()


def test_crash_and_resume(pg_url: str) -> None:
    orch, sim = orchestrator(pg_url)
    sim.ensure_seeded()
    code, out, _ = run(pg_url, "migrate", "web-1", "--kill-at", "progress:50")
    assert code == -signal.SIGKILL
    code, _, err = run(pg_url, "resume", out[0])
    assert code == 0, err
    assert orch.get(out[0]).status == "completed"
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    orch.close()


def test_the_one_query_schema_check(pg_url: str) -> None:
    """On PostgreSQL the check reads ferry's and TaskFlow's version tables and the indexes."""
    from ferry.persistence import schema

    db = Database(pg_url)
    assert not schema.is_current(db.engine)  # a new database: the version tables are missing
    db.upgrade()
    assert schema.is_current(db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '40fc8c914bd2'"))
    assert not schema.is_current(db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '00af93df9d77'"))
        conn.execute(sa.text("DROP INDEX ix_ferry_flowdetails_parent"))
    assert not schema.is_current(db.engine)
    Database(pg_url).upgrade()
    assert schema.is_current(db.engine)
    db.close()
