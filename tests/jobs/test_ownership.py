"""The fence around a conductor's run, without servers (SQLite, a stand-in board): a run whose
lease was taken over writes nothing more and reverts nothing; the next owner resumes it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ferry import Orchestrator
from ferry.context import Event
from ferry.jobs.ownership import (
    HandOff,
    Ownership,
    OwnershipListener,
    OwnershipLost,
)
from tests.flows.helpers import assert_nothing_held, assert_on
from tests.jobs.helpers import sim_of, transfers_of


class Board:
    """Stands in for a job board: who holds the one claim."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def find_owner(self, job: Any) -> str:
        return self.owner

    def extend_claim(self, job: Any, who: str, expiry: float) -> bool:
        return self.owner == who


def owned_run(orch: Orchestrator, mid: str, owner: str) -> tuple[Any, Ownership, Board]:
    board = Board(owner)
    own = Ownership(
        board=board,
        job=object(),
        leases=orch.leases,
        migration_id=mid,
        owner=owner,
        ttl=30,
        stopping=threading.Event(),
    )
    assert own.take()
    engine = orch.runner.load_engine(mid, own)
    own.engine = engine
    return engine, own, board


def atom_states(orch: Orchestrator, mid: str) -> dict[str, str]:
    return {p.name: p.state for p in orch.get(mid).phases}


def test_a_run_that_lost_its_lease_before_starting_writes_nothing(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    engine, own, _ = owned_run(orch, mid, "host:1:a")
    assert orch.leases.take_over(mid, "host:1:a", "host:2:b", 30)
    with pytest.raises(OwnershipLost):
        engine.run()
    assert orch.runner.flow_state(mid) == "PENDING"
    assert set(atom_states(orch, mid).values()) <= {"PENDING"}
    assert orch.get(mid).status == "accepted"
    assert own.lost and "host:2:b" in (own.lost_reason or "")


def test_a_lease_lost_mid_transfer_stops_the_run_like_a_crash(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    engine, own, _ = owned_run(orch, mid, "host:1:a")
    taken: list[bool] = []

    def take_over_at_half(event: Event) -> None:
        if event.kind == "progress" and event.data["percent"] >= 50 and not taken:
            taken.append(orch.leases.take_over(mid, "host:1:a", "host:2:b", 30))

    orch.subscribe(take_over_at_half)
    with pytest.raises(OwnershipLost):
        engine.run()
    assert taken == [True]
    assert own.lost
    # unwound like a crash: the transfer is still RUNNING, nothing was reverted
    states = atom_states(orch, mid)
    assert states["transfer"] == "RUNNING"
    assert "REVERTED" not in states.values() and "REVERTING" not in states.values()
    assert orch.get(mid).status == "running"
    # the new owner resumes it: the transfer is re-attached, never started twice
    orch.leases.release(mid, "host:2:b")
    assert orch.resume(mid).status == "completed"
    assert len(transfers_of(orch)) == 1
    sim = sim_of(orch)
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)


def test_claim_renewed_recently_is_not_asked_again(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    _engine, own, board = owned_run(orch, mid, "host:1:a")
    board.owner = "host:2:b"  # (impossible within a lease of the last renewal)
    assert own.surely_mine()  # no round trip to the board
    own._confirmed -= own.ttl
    assert not own.surely_mine()


def test_claim_loss_suspends_at_the_next_state_change(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    engine, own, board = owned_run(orch, mid, "host:1:a")

    def lose_claim(state: str, details: dict[str, Any]) -> None:
        if details.get("task_name") == "validate" and state == "SUCCESS":
            # another conductor claims the job: possible only once the claim expired, a lease
            # after its last renewal (as after a stall)
            board.owner = "host:2:b"
            own._confirmed -= own.ttl

    engine.atom_notifier.register("SUCCESS", lose_claim)
    with OwnershipListener(engine, own):
        engine.run()
    assert orch.runner.flow_state(mid) == "SUSPENDED"
    assert own.lost
    states = atom_states(orch, mid)
    assert states["validate"] == "SUCCESS" and states["transfer"] == "PENDING"


def test_stopping_hands_over_at_the_next_wait(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    engine, own, _ = owned_run(orch, mid, "host:1:a")
    orch.subscribe(lambda e: own.stopping.set() if e.kind == "progress" else None)
    with pytest.raises(HandOff):
        engine.run()
    assert atom_states(orch, mid)["transfer"] == "RUNNING"
    orch.leases.release(mid, "host:1:a")
    assert orch.resume(mid).status == "completed"
    assert len(transfers_of(orch)) == 1
