"""Job store test helpers: clusters and config files, conductor processes, polling with
deadlines (never sleeps as synchronisation) and the invariants every test ends with."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.drivers.simulated.tables import TRANSFERS
from ferry.jobs.board import open_board
from ferry.jobs.conductor import Conductor
from ferry.jobs.tables import COUNTERS, JOBS, SLOTS
from ferry.model import TERMINAL_STATUSES
from tests.flows.helpers import running_copies

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def write_cluster(
    path: Path,
    *,
    hosts: int,
    vms_per_host: int | dict[int, int],
    memory_mb: int = 256,
    dirty_rate_mbps: float = 8,
    bandwidth_mbps: float = 1200,
) -> list[str]:
    """A cluster of identical hosts ``h1..hN`` on shared storage; returns the VM names.

    ``vms_per_host`` is a count for every host or {host number: count}.
    """
    lines = ['name = "jobs-test"']
    for h in range(1, hosts + 1):
        lines += [
            "[[hosts]]",
            f'name = "h{h}"',
            'hypervisor_type = "qemu"',
            "hypervisor_version = 9001000",
            "vcpus = 512",
            "memory_mb = 1048576",
            "disk_gb = 10000",
            f"bandwidth_mbps = {bandwidth_mbps}",
            'storage_group = "shared"',
        ]
    counts = (
        vms_per_host
        if isinstance(vms_per_host, dict)
        else dict.fromkeys(range(1, hosts + 1), vms_per_host)
    )
    names = []
    for h, count in sorted(counts.items()):
        for i in range(1, count + 1):
            name = f"vm-{h}-{i}"
            names.append(name)
            lines += [
                "[[instances]]",
                f'uuid = "{uuid.uuid5(uuid.NAMESPACE_DNS, name)}"',
                f'name = "{name}"',
                f'host = "h{h}"',
                'power_state = "running"',
                "vcpus = 1",
                f"memory_mb = {memory_mb}",
                "disk_gb = 0",
                f"dirty_rate_mbps = {dirty_rate_mbps}",
            ]
    path.write_text("\n".join(lines) + "\n")
    return names


def write_config(
    path: Path,
    *,
    db_url: str,
    board_url: str,
    namespace: str,
    cluster: Path | None = None,
    speed: float = 0.0,
    lease_seconds: float = 2.0,
    poll_interval: float = 0.1,
    max_jobs: int = 4,
    per_source: int = 0,
    per_destination: int = 0,
    total: int = 0,
    migration_poll: float = 0.1,
) -> Path:
    text = f"""
[database]
url = "{db_url}"
[migration]
poll_interval = {migration_poll}
post_retry_delay = 0
[simulated]
speed = {speed}
{f'cluster = "{cluster}"' if cluster else ""}
[jobboard]
url = "{board_url}"
namespace = "{namespace}"
[conductor]
max_jobs = {max_jobs}
lease_seconds = {lease_seconds}
poll_interval = {poll_interval}
[limits]
per_source = {per_source}
per_destination = {per_destination}
total = {total}
"""
    path.write_text(text)
    return path


def sim_of(orch: Orchestrator) -> SimulatedDriver:
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    return sim


# ------------------------------------------------------------------ conductors
@dataclass
class ConductorProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """One scrape of its ``--metrics-port`` (parsed by prometheus-client's parser): each
        sample's name -> value (samples with labels are left out)."""
        import re
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        found = wait_for(
            lambda: re.search(r"metrics on (http://\S+/metrics)", self.text()),
            30,
            f"conductor {self.name} to serve its metrics",
        )
        with urllib.request.urlopen(found.group(1), timeout=10) as resp:
            text = resp.read().decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }


@dataclass
class Conductors:
    """``ferry conductor`` subprocesses sharing one config file; stopped at the end."""

    config: Path
    workdir: Path
    procs: dict[str, ConductorProcess] = field(default_factory=dict)
    generation: int = 0

    def start(
        self, name: str, max_jobs: int | None = None, *, metrics: bool = False
    ) -> ConductorProcess:
        self.generation += 1
        log = self.workdir / f"{name}.{self.generation}.log"
        args = [sys.executable, "-m", "ferry", "--config", str(self.config), "-v"]
        args += ["conductor", "--name", name]
        if max_jobs is not None:
            args += ["--max-jobs", str(max_jobs)]
        if metrics:
            args += ["--metrics-port", "0"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs[name] = ConductorProcess(name, proc, log)
        return self.procs[name]

    def wait_started(self, name: str, timeout: float = 60) -> None:
        """Until the conductor runs (its signal handlers are installed, its board connected)."""
        p = self.procs[name]
        wait_for(
            lambda: " job(s) at once from " in p.text() or p.proc.poll() is not None,
            timeout,
            f"conductor {name} to start",
        )
        assert p.proc.poll() is None, p.text()

    def owner_of(self, name: str) -> str:
        import socket

        return f"{socket.gethostname()}:{self.procs[name].proc.pid}:{name}"

    def by_owner(self, owner: str) -> ConductorProcess:
        for p in self.procs.values():
            if owner == f"{owner.split(':')[0]}:{p.proc.pid}:{p.name}":
                return p
        raise KeyError(owner)

    def signal(self, name: str, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.procs[name].proc.send_signal(sig)

    def stop_all(self, timeout: float = 30) -> dict[str, int | None]:
        """SIGTERM every conductor (SIGCONT first, in case one is stopped) and wait."""
        for p in self.procs.values():
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGCONT)
                    p.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            try:
                codes[name] = p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                codes[name] = None
        return codes


@contextlib.contextmanager
def conductors(config: Path, workdir: Path) -> Iterator[Conductors]:
    group = Conductors(config, workdir)
    try:
        yield group
    finally:
        group.stop_all()


@contextlib.contextmanager
def in_process_conductors(orchs: list[Orchestrator], **kwargs: Any) -> Iterator[list[Conductor]]:
    """Conductors in threads of this process (one per orchestrator); stopped at the end."""
    running = [Conductor(o.runner, name=f"local-{i}", **kwargs) for i, o in enumerate(orchs)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in running]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        for c in running:
            c.stop()
        for c, t in zip(running, threads, strict=True):
            t.join(60)
            c.close()


# ------------------------------------------------------------------ inspection
def board_jobs(orch: Orchestrator) -> list[Any]:
    board = open_board(orch.settings.jobboard, "test-inspector", persistence=orch.backend)
    try:
        return list(board.iterjobs(ensure_fresh=True))
    finally:
        board.close()


def transfers_of(orch: Orchestrator, instance_uuid: str | None = None) -> list[dict[str, Any]]:
    q = sa.select(TRANSFERS).order_by(TRANSFERS.c.id)
    if instance_uuid is not None:
        q = q.where(TRANSFERS.c.instance_uuid == instance_uuid)
    with orch.db.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def job_rows(orch: Orchestrator) -> dict[str, dict[str, Any]]:
    with orch.db.connect() as conn:
        return {r["migration_id"]: dict(r) for r in conn.execute(sa.select(JOBS)).mappings()}


def slot_state(orch: Orchestrator) -> tuple[dict[str, int], list[tuple[str, str]]]:
    with orch.db.connect() as conn:
        counters = {k: int(u) for k, u in conn.execute(sa.select(COUNTERS.c.key, COUNTERS.c.used))}
        slots = [(m, k) for m, k in conn.execute(sa.select(SLOTS.c.migration_id, SLOTS.c.key))]
    return counters, slots


def terminal_count(orch: Orchestrator, mid: str) -> int:
    """How many times the record entered a terminal status."""
    terminal = {s.value for s in TERMINAL_STATUSES}
    return sum(1 for h in orch.migrations.get(mid).history if h.status in terminal)


def assert_store_clean(orch: Orchestrator, migration_ids: list[str]) -> None:
    """Every migration terminal exactly once and its job consumed once; the board empty; no
    lease, claim, instance lock, check marker or concurrency slot left; no VM on two hosts."""
    sim = sim_of(orch)
    assert board_jobs(orch) == []
    leases = orch.leases.all()
    assert leases == [], [(lease, orch.get(lease["migration_id"]).status) for lease in leases]
    assert orch.claims.list() == []
    assert all(v == (0, 0, 0) for v in orch.claims.claimed().values())
    assert orch.migrations.locks() == {}
    assert sim.check_markers() == []
    counters, slots = slot_state(orch)
    assert slots == [] and all(v == 0 for v in counters.values()), (counters, slots)
    rows = job_rows(orch)
    for mid in migration_ids:
        record = orch.get(mid)
        assert record.done, (mid, record.status)
        assert terminal_count(orch, mid) == 1, [h.status for h in record.history]
        assert rows[mid]["consumed_at"] is not None, rows[mid]
        assert rows[mid]["outcome"] == record.status
    for inst in sim.list_instances():
        assert len(running_copies(sim, inst.name)) == 1, inst.name
        assert not sim.locate(inst.uuid).transfer_in_flight


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
