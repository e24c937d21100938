"""Crash and resume in real subprocesses: SIGKILL at every phase boundary and mid-transfer.

After the resume: exactly one running copy of the VM, a terminal record, no leaked claim, lock or
lease, and nothing after the switchover undone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ferry import MigrationInProgress, Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from tests.conftest import fast_settings
from tests.flows.helpers import assert_nothing_held, assert_on

pytestmark = pytest.mark.crash
ROOT = Path(__file__).resolve().parents[2]
PRE_SWITCHOVER = list(c.PRE_SWITCHOVER_ATOMS)

# every boundary of the successful path (the first destination fails its check, so the
# select-destination atoms run twice and the first-attempt reverts are boundaries too)
SUCCESS_POINTS = [f"{when}:{atom}" for atom in c.ALL_ATOMS for when in ("started", "done")] + [
    "reverted:check-destination",
    "reverted:claim-destination",
    "progress:1",
    "progress:50",
    "progress:90",
]


def spawn(db_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash.runner", db_url, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(db_url: str, *args: str) -> tuple[int, list[str], str]:
    proc = spawn(db_url, *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.split(), err


def make_db(db_url: str) -> tuple[Orchestrator, SimulatedDriver]:
    orch = Orchestrator(db_url, settings=fast_settings())
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    sim.ensure_seeded()
    return orch, sim


def crash_then_resume(db_url: str, point: str, *extra: str) -> str:
    code, out, err = run(db_url, "migrate", "web-1", "--kill-at", point, *extra)
    assert code == -signal.SIGKILL, f"the runner was not killed at {point}: rc={code} {out} {err}"
    mid = out[0]
    code, out, err = run(db_url, "resume", mid)
    assert code in (0, 1), err
    return mid


@pytest.mark.parametrize("point", SUCCESS_POINTS)
def test_killed_anywhere_then_resumed_completes(db_url: str, point: str) -> None:
    orch, sim = make_db(db_url)
    mid = crash_then_resume(db_url, point)
    m = orch.get(mid)
    assert m.status == "completed", (point, m.error, m.phases)
    assert m.destination == "compute-3"
    assert {p.name: p.state for p in m.phases} == {name: "SUCCESS" for name in c.ALL_ATOMS}
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    assert [h.status for h in m.history][-1] == "completed"
    assert len([h for h in m.history if h.status == "completed"]) == 1
    orch.close()


FAILURE_POINTS = [
    "started:pre-live-migration",
    "reverted:pre-live-migration",
    "reverted:check-source",
    "reverted:claim-destination",
    "reverted:validate",
]


@pytest.mark.parametrize("point", FAILURE_POINTS)
def test_killed_while_reverting_then_resumed_fails_cleanly(db_url: str, point: str) -> None:
    orch, sim = make_db(db_url)
    sim.inject_fault("compute-3", "pre_live_migration", message="no space for the instance dir")
    mid = crash_then_resume(db_url, point)
    m = orch.get(mid)
    assert m.status == "failed", (point, m.status, m.error)
    assert "no space for the instance dir" in (m.error or "")
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)
    orch.close()


def test_killed_mid_transfer_while_the_hypervisor_finishes_it(db_url: str) -> None:
    """The orchestrator dies; the hypervisor completes the transfer meanwhile: roll forward."""
    orch, sim = make_db(db_url)
    code, out, _ = run(db_url, "migrate", "web-1", "--kill-at", "progress:50")
    assert code == -signal.SIGKILL
    sim.clock.advance(600)  # the transfer goes on without anyone watching
    inst = sim.find_instance("web-1")
    assert inst is not None and inst.host == "compute-3"  # switched over while nobody watched
    code, _, err = run(db_url, "resume", out[0])
    assert code == 0, err
    assert orch.get(out[0]).status == "completed"
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    orch.close()


def test_abort_a_crashed_run(db_url: str) -> None:
    orch, sim = make_db(db_url)
    code, out, _ = run(db_url, "migrate", "web-1", "--kill-at", "progress:50")
    assert code == -signal.SIGKILL
    m = orch.abort(out[0])  # nobody runs it: reverted here and now
    assert m.status == "cancelled"
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)
    orch.close()


def test_second_runner_refused_while_the_lease_is_live(db_url: str) -> None:
    orch, sim = make_db(db_url)
    proc = spawn(db_url, "migrate", "web-1", "--stop-at", "progress:50")
    assert proc.stdout is not None
    mid = proc.stdout.readline().strip()
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # wait until it has stopped itself
    assert os.WIFSTOPPED(status)
    try:
        with pytest.raises(MigrationInProgress, match="lease"):
            orch.resume(mid)
        lease = orch.leases.get(mid)
        assert lease is not None and lease["owner"].split(":")[1] == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # its process is gone: the run can be taken over at once
    m = orch.resume(mid)
    assert m.status == "completed"
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    orch.close()


def test_a_remote_runner_lease_is_honoured_until_it_expires(db_url: str) -> None:
    orch, sim = make_db(db_url)
    mid = orch.create("web-1")
    assert orch.leases.acquire(mid, "other-machine:4242:cafe", ttl=3600)
    with pytest.raises(MigrationInProgress, match="other-machine"):
        orch.resume(mid)
    with orch.db.connect() as conn:  # the other machine stops renewing: its lease runs out
        from ferry.persistence.models import LEASES

        conn.execute(LEASES.update().values(expires_at=0))
    assert orch.resume(mid).status == "completed"
    assert_nothing_held(orch, sim)
    orch.close()
