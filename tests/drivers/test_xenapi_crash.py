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

from ferry import Migration, Orchestrator
from ferry.drivers.xenapi.session import load_sdk
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


def finished_record(sim: XapiSimulator, db_url: str, mid: str) -> Migration:
    """The migration's record, after asserting that nothing is held for it (claims, instance
    locks, leases) and that neither the password nor any session id is in the database."""
    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[make_driver(sim)])
    try:
        m = orch.get(mid)
        assert orch.claims.list() == [] and orch.migrations.locks() == {}
        assert orch.leases.all() == []
    finally:
        orch.close()
    blob = database_bytes(db_url)
    for secret in [sim.password, *sim.session_ids()]:
        assert secret.encode() not in blob
    return m


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

    m = finished_record(sim, db_url, mid)
    assert (m.status, m.destination) == ("completed", "xs-b1")
    assert len([h for h in m.history if h.status == "completed"]) == 1


@pytest.mark.parametrize(
    ("meanwhile", "status", "error_code"),
    [
        ("task.cancel", "cancelled", None),  # an administrator's `xe task-cancel`
        ("mirror_failed", "failed", "MIRROR_FAILED"),  # the storage mirror breaks half way
        ("task_fails", "failed", "VM_MIGRATE_FAILED"),  # the migration itself fails half way
    ],
)
def test_killed_mid_transfer_of_a_vm_with_a_volume_then_its_task_ends_while_down(
    sim: XapiSimulator,
    clock: ClockServer,
    db_url: str,
    meanwhile: str,
    status: str,
    error_code: str | None,
):
    """vol-1 (a disk on nfs-a and a volume on its own SR) goes to pool-b: ferry introduced the
    volume SR there (PBD created and plugged on xs-b1) and an interim network, started
    migrate_send and is SIGKILLed mid-transfer. While it is down the task is cancelled, or
    fails (the storage mirror or the migration itself). The resume sees the tagged task ended
    with the VM still on the source: no second migrate_send; it reverts -- the volume SR
    forgotten on pool-b, its PBD and the interim network gone, the source's SR still
    plugged, the task destroyed, nothing held -- and the record ends cancelled (ferry's status
    for a cancelled transfer) or failed with XAPI's code."""
    code, out = run(
        sim, clock, db_url, "migrate", "vol-1", "--to", "xs-b1", "--kill-at", "progress:20"
    )
    assert code == -signal.SIGKILL, out
    mid = out[0]
    made = sim.leftovers("pool-b")
    assert [x for x in made if not x.startswith("network:")] == [
        "PBD:vol-1-data@xs-b1",
        "SR:vol-1-data",
    ]
    assert len(made) == 3  # and the interim network
    before = sim.leftovers("pool-a")
    (task,) = sim.tasks("pool-a")
    assert task["status"] == "pending" and 0.2 <= task["progress"] < 0.9
    if meanwhile == "task.cancel":
        xapi = load_sdk().Session(sim.url("pool-a"))
        xapi.xenapi.login_with_password(sim.username, sim.password, "1.1", "test")
        xapi.xenapi.task.cancel(task["ref"])
        xapi.xenapi.session.logout()
    elif meanwhile == "mirror_failed":
        sim.inject("mirror_failed", vm="vol-1", at=0.5)
    else:
        sim.inject("task_fails", vm="vol-1", at=0.5, code=error_code)
    sim.clock.advance(60)
    (task,) = sim.tasks("pool-a")
    assert task["status"] == ("cancelled" if error_code is None else "failure")
    assert sim.vms_named("vol-1") == [("pool-a", "xs-a2", "Running")]

    code, out = run(sim, clock, db_url, "resume", mid)
    assert (code, out[-1]) == (1, status)
    assert [m for _, m in sim.calls if m == "Async.VM.migrate_send"] == ["Async.VM.migrate_send"]
    assert sim.vms_named("vol-1") == [("pool-a", "xs-a2", "Running")]
    assert sim.leftovers("pool-b", None) == []  # volume SR, its PBD, interim network: gone
    with sim.model.lock:
        assert sim.model.find("pool-b", "SR", name_label="vol-1-data") == []
        (src_sr,) = sim.model.find("pool-a", "SR", name_label="vol-1-data")
        pbds = sim.model.render("pool-a", "SR", src_sr)["PBDs"]
        assert pbds and all(sim.model.get("pool-a", "PBD", p)["currently_attached"] for p in pbds)
    assert sim.leftovers("pool-a") == before
    assert sim.tasks() == []

    m = finished_record(sim, db_url, mid)
    assert (m.status, m.leftovers) == (status, [])
    if error_code is not None:
        assert error_code in (m.error or "")
