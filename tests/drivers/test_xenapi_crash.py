"""The orchestrator SIGKILLed while the XenAPI driver migrates, then resumed by another process.

The XAPI simulator runs here and outlives the killed runner (tests/crash/xenapi_runner.py); its
stepped clock is advanced by the runner's polls through a :class:`ClockServer`, and by this test
where the hypervisor goes on while no ferry watches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from tests.conftest import fast_settings
from tests.crash.xenapi_runner import ClockServer
from tests.drivers.xenapi_support import (
    PASSWORD_ENV,
    database_bytes,
    make_driver,
    start_simulator,
)
from tests.xapisim import XapiSimulator

pytestmark = pytest.mark.crash
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[XapiSimulator]:
    simulator = start_simulator()
    monkeypatch.setenv(PASSWORD_ENV, simulator.password)
    yield simulator
    simulator.stop()


@pytest.fixture
def clock(sim: XapiSimulator) -> Iterator[ClockServer]:
    with ClockServer(sim.clock) as server:
        yield server


def run(sim: XapiSimulator, clock: ClockServer, db_url: str, *args: str) -> tuple[int, list[str]]:
    hosts = json.dumps(sim.host_configs(PASSWORD_ENV))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crash.xenapi_runner", db_url, clock.url, hosts, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, PASSWORD_ENV: sim.password},
        check=False,
    )
    assert proc.returncode in (0, 1, -signal.SIGKILL), proc.stderr
    return proc.returncode, proc.stdout.split()


@pytest.mark.parametrize(
    ("point", "meanwhile_s"),
    [
        ("started:transfer", 0),  # before Async.VM.migrate_send: the resume starts it
        ("progress:20", 0),  # mid-transfer: the resume re-attaches to the tagged task
        ("progress:20", 60),  # XAPI finished it while nobody watched: the resume rolls forward
        ("done:transfer", 0),  # after the switchover: post steps only
    ],
)
def test_killed_during_migrate_send_then_resumed(
    sim: XapiSimulator, clock: ClockServer, db_url: str, point: str, meanwhile_s: float
):
    code, out = run(sim, clock, db_url, "migrate", "web-1", "--to", "xs-b1", "--kill-at", point)
    assert code == -signal.SIGKILL, out
    mid = out[0]
    sends = [m for _, m in sim.calls if m == "Async.VM.migrate_send"]
    if point == "progress:20":
        (task,) = sim.tasks("pool-a")
        assert task["status"] == "pending" and 0.2 <= task["progress"] < 1
        assert sim.vm_location("web-1") == ("pool-a", "xs-a1")
    sim.clock.advance(meanwhile_s)

    code, out = run(sim, clock, db_url, "resume", mid)
    assert (code, out[-1]) == (0, "completed")
    assert [m for _, m in sim.calls if m == "Async.VM.migrate_send"] == ["Async.VM.migrate_send"]
    assert len(sends) == (0 if point == "started:transfer" else 1)
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]
    assert sim.leftovers("pool-a") == []
    assert sim.tasks() == []

    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[make_driver(sim)])
    try:
        m = orch.get(mid)
        assert (m.status, m.destination) == ("completed", "xs-b1")
        assert len([h for h in m.history if h.status == "completed"]) == 1
        assert orch.claims.list() == [] and orch.migrations.locks() == {}
        assert orch.leases.all() == []
        blob = database_bytes(db_url)
        for secret in [sim.password, *sim.session_ids()]:
            assert secret.encode() not in blob
    finally:
        orch.close()


def test_killed_mid_transfer_and_the_task_fails_while_down_then_resumed(
    sim: XapiSimulator, clock: ClockServer, db_url: str
):
    """ferry is SIGKILLed mid-transfer; while nobody watches, XAPI's migrate task fails half
    way. The resume finds the tagged task failed and the VM still on the source: it does not
    start a second transfer but reverts -- the interim network gone from pool-b, the task
    destroyed, nothing held, the record failed with XAPI's error code."""
    code, out = run(
        sim, clock, db_url, "migrate", "web-1", "--to", "xs-b1", "--kill-at", "progress:20"
    )
    assert code == -signal.SIGKILL, out
    mid = out[0]
    sim.inject("task_fails", vm="web-1", at=0.5, code="VM_MIGRATE_FAILED")
    sim.clock.advance(60)
    (task,) = sim.tasks("pool-a")
    assert (task["status"], task["error_info"][0]) == ("failure", "VM_MIGRATE_FAILED")

    code, out = run(sim, clock, db_url, "resume", mid)
    assert (code, out[-1]) == (1, "failed")
    assert [m for _, m in sim.calls if m == "Async.VM.migrate_send"] == ["Async.VM.migrate_send"]
    assert sim.vms_named("web-1") == [("pool-a", "xs-a1", "Running")]
    assert sim.leftovers("pool-b", None) == []
    assert sim.tasks() == []

    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[make_driver(sim)])
    try:
        m = orch.get(mid)
        assert m.status == "failed"
        assert "VM_MIGRATE_FAILED" in (m.error or "")
        assert orch.claims.list() == [] and orch.migrations.locks() == {}
        assert orch.leases.all() == []
        blob = database_bytes(db_url)
        for secret in [sim.password, *sim.session_ids()]:
            assert secret.encode() not in blob
    finally:
        orch.close()
