"""Whole migrations through ferry's flow on three real libvirt hosts: A->B and back, the
reschedule past a host that fails its check, progress under a bandwidth cap, abort, the
completion timeout with each action, a dirtying guest brought across by each lever (auto-converge
alone on a paced one), `ferry force-complete` from another process, and an orchestrator SIGKILLed
mid-transfer then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from ferry import MigrationCancelled, MigrationFailed, Orchestrator
from ferry.context import Event
from tests.infra.guest import Guest
from tests.infra.libvirt_hosts import LIBVIRT_PORT
from tests.libvirt import import_libvirt
from tests.libvirt.helpers import host_configs, make_orchestrator, running_copies, toml_hosts

libvirt = import_libvirt()

pytestmark = pytest.mark.libvirt


def _uuid(guest: Guest) -> str:
    return str(guest.domain.UUIDString())


def test_migrate_a_to_b_and_back(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    guest = make_guest("web-1", memory_mib=64, kernel="idle", host="A")
    orch = make_orchestrator(db_url, libvirt_hosts)
    there = orch.live_migrate("web-1", "lv-b")
    assert there.status == "completed", there.error
    assert (there.source, there.destination, there.block_migration) == ("lv-a", "lv-b", False)
    assert there.progress["result"]["lever"] in ("none needed", "downtime steps")
    assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}  # running, migrated
    dom_b = libvirt_connect("B").lookupByUUIDString(_uuid(guest))
    assert dom_b.isPersistent()
    with pytest.raises(libvirt.libvirtError):
        libvirt_connect("A").lookupByUUIDString(_uuid(guest))  # undefined on the source
    orch.instances()  # every host's (kept) connection is open before counting
    sockets = _libvirt_sockets()
    back = orch.live_migrate("web-1", "lv-a")
    assert back.status == "completed", back.error
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["A"]
    assert orch.instances()[0].host == "lv-a"
    # each transfer's own connection is closed with it (the job-completed callback is
    # deregistered first, or it would keep the socket open): no socket more than after the first
    assert _libvirt_sockets() <= sockets
    orch.close()


def _libvirt_sockets() -> int:
    """This process's established TCP connections to a libvirtd."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == LIBVIRT_PORT and c.status == psutil.CONN_ESTABLISHED
    )


def test_reschedule_past_the_host_that_fails_its_check(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    """The scheduler prefers lv-c (B keeps most of its memory reserved, so C looks roomier);
    C's own check finds 48 MiB really free, is excluded with that reason, and B is tried next."""
    guest = make_guest("api-1", memory_mib=64, kernel=None, host="A", wait_filled=False)
    total_b = libvirt_connect("B").getInfo()[1]
    orch = make_orchestrator(
        db_url, libvirt_hosts, per_host={"lv_b": {"reserved_host_memory_mb": total_b - 512}}
    )
    m = orch.live_migrate("api-1")
    assert m.status == "completed", m.error
    assert [(a.host, a.outcome) for a in m.attempts] == [("lv-c", "rejected"), ("lv-b", "chosen")]
    assert "not enough free memory" in (m.attempts[0].reason or "")
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["B"]
    orch.close()


def test_block_migration_decided_by_the_destination(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    """lv-c shares no storage with lv-a: the check decides a block migration; the instance
    directory made on C for it is removed from A after the move."""
    guest = make_guest("tiny-1", memory_mib=16, kernel="idle", host="A")
    on_a = Path(libvirt_hosts["lv-a"]["local_instances_path"]) / _uuid(guest)
    on_a.mkdir()  # the instance directory on the source, with a file in it
    (on_a / "console.log").write_text("boot\n")
    orch = make_orchestrator(db_url, libvirt_hosts)
    m = orch.live_migrate("tiny-1", "lv-c")
    assert m.status == "completed", m.error
    assert m.block_migration is True
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["C"]
    local_c = Path(libvirt_hosts["lv-c"]["local_instances_path"])
    assert (local_c / _uuid(guest)).is_dir()
    assert not on_a.exists()  # storage not shared with C: post at source removed it
    orch.close()


def test_progress_is_observed_under_a_bandwidth_cap(
    db_url: str, libvirt_hosts: dict[str, Any], make_guest: Callable[..., Guest]
) -> None:
    make_guest("cap-1", memory_mib=64, kernel="idle", host="A")
    samples: list[dict[str, Any]] = []
    orch = make_orchestrator(db_url, libvirt_hosts, live_migration_bandwidth=16)
    orch.subscribe(lambda e: samples.append(e.data) if e.kind == "progress" else None)
    m = orch.live_migrate("cap-1", "lv-b")
    assert m.status == "completed", m.error
    running = [s for s in samples if s["state"] == "running" and s["memory_processed_mb"] > 0]
    assert len(running) >= 5  # 64 MiB at 16 MiB/s, polled every 0.2 s
    processed = [s["memory_processed_mb"] for s in running]
    assert processed == sorted(processed) and processed[-1] > processed[0]
    assert all(0 < s["percent"] < 100 for s in running)
    assert running[0]["memory_total_mb"] >= 64
    assert samples[-1]["percent"] == 100.0
    orch.close()


def test_abort_mid_transfer(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    guest = make_guest("abort-1", memory_mib=64, kernel="idle", host="A")
    orch = make_orchestrator(db_url, libvirt_hosts, live_migration_bandwidth=16)

    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data["percent"] > 20:
            orch.migrations.request_abort(e.migration_id)  # as `ferry abort` elsewhere would

    orch.subscribe(on_event)
    with pytest.raises(MigrationCancelled):
        orch.live_migrate("abort-1", "lv-b")
    m = orch.list()[0]
    assert m.status == "cancelled"
    assert running_copies(libvirt_connect, _uuid(guest)) == {"A": (1, 1)}  # running, booted
    with pytest.raises(libvirt.libvirtError):
        libvirt_connect("B").lookupByUUIDString(_uuid(guest))  # nothing left on B
    orch.close()


@pytest.mark.parametrize(
    ("action", "post_copy", "expected"),
    [
        ("abort", False, "failed"),
        ("force_complete", False, "pause"),
        ("force_complete", True, "post-copy"),
    ],
)
def test_completion_timeout_actions(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
    action: str,
    post_copy: bool,
    expected: str,
) -> None:
    """A dirtying guest that cannot converge at 32 MiB/s: past the completion timeout (1 s/GiB of
    the 2 GiB floor = 2 s) it is aborted (back on A) or forced across by pausing or post-copy."""
    guest = make_guest("hot-1", memory_mib=64, kernel="dirty", host="A")
    orch = make_orchestrator(
        db_url,
        libvirt_hosts,
        live_migration_bandwidth=32,
        live_migration_completion_timeout=1,
        live_migration_timeout_action=action,
        live_migration_permit_post_copy=post_copy,
    )
    if expected == "failed":
        with pytest.raises(MigrationFailed, match="completion timeout"):
            orch.live_migrate("hot-1", "lv-b")
        assert list(running_copies(libvirt_connect, _uuid(guest))) == ["A"]
    else:
        m = orch.live_migrate("hot-1", "lv-b")
        assert m.status == "completed", m.error
        assert m.progress["result"]["lever"] == expected
        assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}
        assert guest.wait_passes(guest.passes() + 1, timeout=30) is None  # still computing
    orch.close()


@pytest.mark.parametrize(
    ("policy", "lever"),
    [
        ({}, "post-copy"),  # ferry's default policy
        (
            {
                "live_migration_permit_post_copy": False,
                "live_migration_downtime": 3000,
                "live_migration_downtime_steps": 3,
                "live_migration_downtime_delay": 3,
            },
            "downtime steps",
        ),
    ],
    ids=["default-post-copy", "downtime-steps"],
)
def test_dirty_guest_converges_with_each_lever(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
    policy: dict[str, Any],
    lever: str,
) -> None:
    guest = make_guest("dirty-1", memory_mib=64, kernel="dirty", host="A")
    orch = make_orchestrator(db_url, libvirt_hosts, live_migration_bandwidth=32, **policy)
    m = orch.live_migrate("dirty-1", "lv-b")
    assert m.status == "completed", m.error
    assert m.progress["result"]["lever"] == lever, m.progress["result"]
    # the guest was paused for the switchover: libvirt's job-completed event on the source says
    # how long (after post-copy it is the only place that does)
    assert m.progress["result"]["downtime_ms"] > 0, m.progress["result"]
    assert list(running_copies(libvirt_connect, _uuid(guest))) == ["B"]
    orch.close()


# 1.5 s of downtime moves 48 MiB at 32 MiB/s, not the ~61 MiB the "warm" guest rewrites in
# well under a pass, so the downtime steps alone never finish; only the CPU throttle can
_AUTO_CONVERGE_BOUND = {
    "live_migration_permit_post_copy": False,
    "live_migration_downtime": 1500,
    "live_migration_downtime_steps": 3,
    "live_migration_downtime_delay": 3,
    "live_migration_bandwidth": 32,
}


@pytest.mark.parametrize("auto_converge", [True, False], ids=["auto-converge", "without"])
def test_auto_converge_is_what_finishes_a_warm_guest(
    db_url: str,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
    auto_converge: bool,
) -> None:
    """The "warm" guest (rewriting its RAM at ~200 MiB/s of vCPU time) under a 32 MiB/s cap with
    the max downtime bounded: with auto-converge (throttle from 50 %, +25 % a step) it
    completes, the record naming the lever and the throttle; without it the downtime steps reach
    their 1500 ms top (at 18 s) and still do not finish: the completion timeout (12 s/GiB of the
    2 GiB floor = 24 s) aborts it."""
    guest = make_guest("warm-1", memory_mib=64, kernel="warm", host="A")
    orch = make_orchestrator(
        db_url,
        libvirt_hosts,
        live_migration_permit_auto_converge=auto_converge,
        live_migration_auto_converge_initial=50,
        live_migration_auto_converge_increment=25,
        live_migration_completion_timeout=12 if not auto_converge else 60,
        **_AUTO_CONVERGE_BOUND,
    )
    throttles: list[int] = []
    orch.subscribe(
        lambda e: (
            throttles.append(e.data["throttle_percent"])
            if e.kind == "progress" and e.data.get("throttle_percent")
            else None
        )
    )
    if auto_converge:
        m = orch.live_migrate("warm-1", "lv-b")
        assert m.status == "completed", m.error
        assert m.progress["result"]["lever"] == "auto-converge", m.progress["result"]
        # libvirt was handed the initial throttle and the step (QEMU's own are 20 and 10)
        assert throttles[0] == 50, throttles
        assert set(throttles) <= {50, 75, 99}, throttles
        assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}
        assert guest.wait_passes(guest.passes() + 1, timeout=30) is None  # still computing
    else:
        with pytest.raises(MigrationFailed, match="completion timeout"):
            orch.live_migrate("warm-1", "lv-b")
        assert list(running_copies(libvirt_connect, _uuid(guest))) == ["A"]
        assert throttles == []
    orch.close()


def _migrate_in_a_child(
    tmp_path: Path, libvirt_hosts: dict[str, Any], name: str, migration: str
) -> tuple[subprocess.Popen[bytes], Orchestrator, str, dict[str, str]]:
    """``ferry migrate NAME --to lv-b`` in a child process with the ``[migration]`` lines
    given, once its record shows the transfer past 10 %: the child, an orchestrator on the
    same config and database, the migration's id and the environment the CLI needs."""
    config = tmp_path / "ferry.toml"
    config.write_text(
        f"[migration]\n{migration}\npoll_interval = 0.2\n\n"
        + toml_hosts(host_configs(libvirt_hosts))
    )
    db_url = f"sqlite:///{tmp_path / 'ferry.db'}"
    env = {**os.environ, "FERRY_CONFIG": str(config), "FERRY_DB": db_url}
    child = subprocess.Popen(
        [sys.executable, "-m", "ferry", "migrate", name, "--to", "lv-b"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orch = Orchestrator(db_url, config=str(config))
    deadline = time.monotonic() + 60
    mid = None
    while time.monotonic() < deadline and child.poll() is None:
        records = orch.list()
        if records and records[0].progress.get("percent", 0) > 10:
            mid = records[0].id
            break
        time.sleep(0.05)  # polling the record another process writes
    if mid is None:
        child.kill()
        child.wait()
        pytest.fail("the transfer never got going")
    return child, orch, mid, env


def _migrate_and_kill_mid_transfer(
    tmp_path: Path, libvirt_hosts: dict[str, Any], name: str, bandwidth: int = 16
) -> tuple[Orchestrator, str]:
    """``ferry migrate NAME --to lv-b`` in a child process at ``bandwidth`` MiB/s, SIGKILLed
    once its record shows the transfer past 10 %; an orchestrator on the same config and
    database, and the id."""
    child, orch, mid, _ = _migrate_in_a_child(
        tmp_path, libvirt_hosts, name, f"live_migration_bandwidth = {bandwidth}"
    )
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert orch.get(mid).status == "running"
    return orch, mid


def test_ferry_force_complete_from_another_process(
    tmp_path: Path,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    """A dirtying guest at 32 MiB/s never converges; post-copy is not permitted and the
    completion timeout is far away. `ferry force-complete ID`, run as its own process while
    `ferry migrate` waits, makes the monitor pause the guest to finish: the migrate command
    exits 0, the record names the lever and the guest runs (resumed) on B."""
    guest = make_guest("force-1", memory_mib=64, kernel="dirty", host="A")
    child, orch, mid, env = _migrate_in_a_child(
        tmp_path,
        libvirt_hosts,
        "force-1",
        "live_migration_bandwidth = 32\nlive_migration_permit_post_copy = false\n"
        "live_migration_completion_timeout = 800",
    )
    asked = subprocess.run(
        [sys.executable, "-m", "ferry", "force-complete", mid, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["status"] == "running"
    assert child.wait(timeout=120) == 0
    m = orch.get(mid)
    assert m.status == "completed", m.error
    assert m.progress["result"]["lever"] == "pause", m.progress["result"]
    assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}
    orch.close()


def test_orchestrator_killed_mid_transfer_then_resumed(
    tmp_path: Path,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    """`ferry migrate` is SIGKILLed while libvirtd moves the guest; `ferry resume` finds the
    transfer still running (or done), re-attaches and finishes: one running domain, record
    completed."""
    guest = make_guest("crash-1", memory_mib=64, kernel="idle", host="A")
    orch, mid = _migrate_and_kill_mid_transfer(tmp_path, libvirt_hosts, "crash-1")
    m = orch.resume(mid)
    assert m.status == "completed", m.error
    assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}
    assert json.loads(json.dumps(m.progress))["result"]["lever"]
    orch.close()


def test_transfer_that_died_while_ferry_was_down_is_started_again(
    tmp_path: Path,
    libvirt_hosts: dict[str, Any],
    make_guest: Callable[..., Guest],
    libvirt_connect: Any,
) -> None:
    """ferry is SIGKILLed mid-transfer and the job is then aborted on the host (as an operator
    with virsh domjobabort would): on resume the guest still runs on the source with no job, so
    the transfer is started again and completes."""
    guest = make_guest("crash-2", memory_mib=64, kernel="idle", host="A")
    # 8 MiB/s: the transfer is still running when the test aborts it
    orch, mid = _migrate_and_kill_mid_transfer(tmp_path, libvirt_hosts, "crash-2", bandwidth=8)
    dom = libvirt_connect("A").lookupByUUIDString(_uuid(guest))
    dom.abortJob()
    deadline = time.monotonic() + 30
    while dom.jobInfo()[0] != 0:  # VIR_DOMAIN_JOB_NONE: libvirtd has wound the job up
        assert time.monotonic() < deadline, "the aborted job did not end"
        time.sleep(0.05)
    assert running_copies(libvirt_connect, _uuid(guest)) == {"A": (1, 1)}
    m = orch.resume(mid)
    assert m.status == "completed", m.error
    assert running_copies(libvirt_connect, _uuid(guest)) == {"B": (1, 2)}
    orch.close()
