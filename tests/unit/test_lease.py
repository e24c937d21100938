"""The one lease rule (ferry.runner.lease): taking, renewing, losing, ending; on stepped time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ferry.persistence.db import Database
from ferry.persistence.repository import LeaseRepository
from ferry.runner.lease import Heartbeat, Lease, OwnershipLost, runner_process_gone


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class Engine:
    def __init__(self) -> None:
        self.suspended = 0

    def suspend(self) -> None:
        self.suspended += 1


@pytest.fixture
def leases(tmp_path: Path) -> tuple[LeaseRepository, Clock]:
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    db.upgrade()
    clock = Clock()
    return LeaseRepository(db, now=clock), clock


HERE = socket.gethostname()


def dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{HERE}:{proc.pid}:gone"


def test_a_free_lease_is_taken_and_ended_once(leases: Any) -> None:
    repo, _ = leases
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:a", 30)
    assert lease.take() and lease.leased
    assert repo.get("m1")["owner"] == lease.owner
    lease.end()
    lease.end()  # safe twice
    assert repo.get("m1") is None and not lease.leased


def test_a_live_runners_lease_is_respected_until_it_expires(leases: Any) -> None:
    repo, clock = leases
    other = f"{HERE}:{os.getpid()}:other"  # this very process: provably alive
    assert repo.acquire("m1", other, 30)
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30)
    assert not lease.take()
    assert lease.holder() == other and lease.expires_in() >= 0
    clock.t += 31
    assert lease.take() and repo.get("m1")["owner"] == lease.owner


def test_a_dead_local_runners_lease_is_taken_over_at_once(leases: Any) -> None:
    repo, _ = leases
    gone = dead_owner()
    assert runner_process_gone(gone)
    assert repo.acquire("m1", gone, 30)
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30)
    assert lease.take()
    assert repo.get("m1")["owner"] == lease.owner


def test_a_remote_runner_is_never_presumed_dead(leases: Any) -> None:
    repo, _ = leases
    assert not runner_process_gone("some-other-host:1:x")
    assert repo.acquire("m1", "some-other-host:1:x", 30)
    assert not Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30).take()


def test_renewal_refused_loses_the_lease_and_suspends_the_engine(leases: Any) -> None:
    repo, clock = leases
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30)
    assert lease.take()
    lease.engine = Engine()
    clock.t += 10
    lease.renew()
    assert not lease.lost and repo.get("m1")["expires_at"] == clock.t + 30
    clock.t += 31  # expired: another runner takes it
    assert repo.acquire("m1", "elsewhere:1:x", 30)
    lease.renew()
    assert lease.lost and lease.engine.suspended == 1
    with pytest.raises(OwnershipLost):
        lease.check()
    lease.renew()  # lost once: nothing more
    assert lease.engine.suspended == 1


def test_a_stop_request_hands_the_run_off(leases: Any) -> None:
    repo, _ = leases
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30)
    lease.stopping.set()
    assert not lease.take()  # a stopping runner takes nothing new
    with pytest.raises(OwnershipLost, match="shutting down"):
        lease.check()


def test_heartbeat_holds_and_drops_leases(leases: Any) -> None:
    repo, _ = leases
    beat = Heartbeat(30)
    lease = Lease(repo, "m1", f"{HERE}:{os.getpid()}:me", 30)
    beat.add(lease)
    beat.add(lease)
    beat.remove(lease)
    beat.remove(lease)  # discard: no error
    beat.stop()
