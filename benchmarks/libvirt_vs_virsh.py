#!/usr/bin/env python3
"""ferry against ``virsh migrate --live --p2p`` on the project's real libvirt test hosts.

Brings up the three libvirt hosts of ``tests/infra/libvirt_hosts.py`` (lv-a, lv-b, lv-c: one
libvirtd per network namespace; only lv-a and lv-b are used here) on their own subnet, so a test
run on the default one is not disturbed, and tears them down at the end. Guests are the tests'
diskless TCG guests (``tests/infra/guest``) booting the fill kernel: "idle" fills its RAM with
pseudo-random data once and halts, "dirty" rewrites it forever.

Table 1 -- the same guest (RAM filled, kernel "idle") moved back and forth between lv-a and lv-b,
one migration after the other, by each tool in turn (the order of the tools changes every round
after a balanced Latin square, so every tool moves the guest A->B and B->A, and follows every
other tool, about equally often), N runs per tool, for a 64 MiB and a 512 MiB guest:

  virsh       ``virsh -c qemu+tcp://A/system migrate --live --p2p --persistent --undefinesource
              NAME qemu+tcp://B/system``: a new process and connection per migration
  ferry       ``Orchestrator(...).live_migrate(NAME, "lv-b")`` in this process, ferry's default
              policy (poll_interval 0.5 s): the whole flow (validation, record, checks, pre-live-
              migration, the transfer and its monitor, post at source and destination, TaskFlow
              persistence in SQLite) on connections kept open across runs  -- the headline row
  ferry 300ms the same with the max downtime virsh runs with (QEMU's default, 300 ms) from the
              start instead of Nova's first downtime step (50 ms): the same libvirt job as virsh,
              so the ratio of medians shows the orchestration alone
  ferry 0.1   the same as ferry with ``poll_interval = 0.1`` (a per-migration override)
  ferry CLI   ``python -m ferry migrate NAME --to lv-b --json`` (FERRY_CONFIG / FERRY_DB): the
              above plus interpreter start, imports, schema check and new connections

Medians, min-max, the libvirt job's own ``time_elapsed`` and downtime (from libvirt's job-completed
events, which a child process of this script receives on the hosts' sockets: the same source of
truth for every tool), the ratio to virsh with the targets (ferry / virsh <= 1.2 at 64 MiB, <= 1.05
at 512 MiB) and where ferry's time goes: each flow atom (the record's phases), the transfer atom
split into the ``migrateToURI3`` call (timed in this process) and ferry's part around it, and the
time outside the atoms (before the first atom, between atoms, after the last one).

Table 2 -- a 256 MiB guest running the "dirty" kernel under a 32 MiB/s bandwidth cap: ``virsh
migrate --live --p2p --bandwidth 32`` is given 45 s, then ``virsh domjobinfo`` tells what is left
and ``virsh domjobabort`` ends it; then ferry with its default policy and
``live_migration_bandwidth = 32`` (post-copy permitted: a transfer that stops converging is switched
to post-copy) must finish within 60 s: total time, downtime and the lever that did it. The
downtime is the job-completed event's; the record's ``progress["result"]["downtime_ms"]`` is shown
beside it (ferry takes it from the same event, received on the connection that runs the
migration; the destination's statistics have none after a post-copy switchover).

Needs root (namespaces, libvirtd), libvirt-daemon, qemu-system-x86, virsh, gcc (the fill kernel)
and libvirt-python. Run from the repository root::

    python benchmarks/libvirt_vs_virsh.py [--runs N] [--quick] [--net 10.81.0] [--no-cli] [--json]

Progress lines go to stderr, the tables (Markdown) to stdout. The machine is shared: the load
average is printed with each table; compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.infra: the project's own libvirt hosts and guests
    sys.path.insert(0, str(REPO))

from ferry import Orchestrator  # noqa: E402
from ferry.config import HostConfig, MigrationSettings, Settings  # noqa: E402
from ferry.context import Event  # noqa: E402
from ferry.errors import FerryError  # noqa: E402
from ferry.flows import constants as c  # noqa: E402
from ferry.model import Migration, PhaseState  # noqa: E402
from tests.infra import guest as guests  # noqa: E402
from tests.infra.libvirt_hosts import Host, HostsError, LibvirtHosts  # noqa: E402

DEFAULT_NET = "10.81.0"
DEFAULT_RUNS = 10
QUICK_RUNS = 3
SIZES = (64, 512)
QUICK_SIZES = (64,)
#: ferry / virsh medians, per guest size
TARGETS = {64: 1.2, 512: 1.05}
DIRTY_MIB = 256
DIRTY_BANDWIDTH = 32  # MiB/s
VIRSH_GIVE_UP_S = 45.0
FERRY_DIRTY_TARGET_S = 60.0
VIRSH_TIMEOUT_S = 300.0
SETTLE_S = 0.5  # untimed pause before each migration

VIRSH, FERRY, FERRY_FAST, FERRY_CLI = "virsh", "ferry", "ferry-0.1", "ferry-cli"
FERRY_QEMU_DT = "ferry-300ms"
TOOL_LABELS = {
    VIRSH: "`virsh migrate --live --p2p`",
    FERRY: "ferry, library, poll 0.5 s (default)",
    FERRY_QEMU_DT: "ferry, library, max downtime 300 ms from the start (virsh's)",
    FERRY_FAST: "ferry, library, poll 0.1 s",
    FERRY_CLI: "ferry CLI (`python -m ferry migrate`), poll 0.5 s",
}
FAST_POLL = 0.1
#: ferry's first downtime step at QEMU's own default max downtime (300 ms), which virsh leaves
#: in place: 900 ms over Nova's minimum of 3 steps starts at 900 / 3 = 300 ms, and the next
#: step (after 75 s/GiB) is never reached here
QEMU_DOWNTIME = {"live_migration_downtime": 900, "live_migration_downtime_steps": 3}


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def qemu_count() -> int:
    """QEMU processes on the machine (ours and other engineers')."""
    res = subprocess.run(["pgrep", "-c", "qemu-system"], capture_output=True, text=True)
    return int(res.stdout.strip() or 0)


# --------------------------------------------------------------------------------- records
@dataclass
class Run:
    """One migration by one tool."""

    tool: str
    size_mib: int
    direction: str  # "A->B" or "B->A"
    wall_s: float
    ok: bool
    error: str | None = None
    job_s: float | None = None  # the libvirt job's time_elapsed (job-completed event)
    call_s: float | None = None  # ferry library: the migrateToURI3 call, end to end
    downtime_ms: int | None = None  # the job-completed event's downtime
    record_downtime_ms: int | None = None  # ferry: what its record says
    phases: dict[str, float] = field(default_factory=dict)  # ferry: atom -> seconds
    before_s: float | None = None  # ferry library: call -> first atom started
    after_s: float | None = None  # ferry library: last atom done -> call returned
    lever: str | None = None
    iterations: int | None = None
    load1: float = 0.0
    #: ferry library: (seconds since the call, iteration, MiB left) of each progress event
    samples: list[tuple[float, int, float]] = field(default_factory=list)

    @property
    def outside_s(self) -> float | None:
        """Wall time not spent inside a flow atom (ferry only)."""
        if not self.phases:
            return None
        return self.wall_s - sum(self.phases.values())

    @property
    def between_s(self) -> float | None:
        if self.outside_s is None or self.before_s is None or self.after_s is None:
            return None
        return self.outside_s - self.before_s - self.after_s

    @property
    def overhead_s(self) -> float | None:
        """Wall time beyond the libvirt job: the tool's own cost plus libvirt's migration
        phases outside the job's time_elapsed (starting the destination QEMU, finish, confirm)."""
        return self.wall_s - self.job_s if self.job_s is not None else None

    @property
    def around_call_s(self) -> float | None:
        """The transfer atom's time outside the migrateToURI3 call (ferry's own part)."""
        t = self.phases.get(c.TRANSFER)
        return t - self.call_s if t is not None and self.call_s is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "size_mib": self.size_mib,
            "direction": self.direction,
            "wall_s": round(self.wall_s, 4),
            "ok": self.ok,
            "error": self.error,
            "job_s": self.job_s,
            "call_s": self.call_s,
            "downtime_ms": self.downtime_ms,
            "record_downtime_ms": self.record_downtime_ms,
            "phases": self.phases,
            "before_s": self.before_s,
            "after_s": self.after_s,
            "lever": self.lever,
            "iterations": self.iterations,
            "load1": self.load1,
        }


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


# ------------------------------------------------------------------ job-completed events
class JobEvents:
    """libvirt's job-completed events of the hosts, from a child process (this script in its
    ``_events`` mode: an event loop on each host's unix socket, one JSON line per event). The
    source's event carries the finished job's statistics -- time_elapsed, downtime, iterations
    -- for every tool alike, also after a post-copy switchover, when the destination keeps none
    and the source domain is gone."""

    def __init__(self, uris: dict[str, str]) -> None:
        args = [f"{key}={uri}" for key, uri in uris.items()]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_events", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="job-events", daemon=True).start()
        if not self._ready.wait(30):
            self.close()
            raise RuntimeError("the job-event listener did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if item.get("ready"):
                    self._ready.set()
                else:
                    self._queue.put(item)

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def wait(self, host: str, domain: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """The stats of the next outgoing-migration job that completed on ``host``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            stats = item.get("stats", {})
            outgoing = stats.get("operation") == 5  # VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
            if outgoing and item.get("host") == host and item.get("domain") == domain:
                return dict(stats)
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def events_main(specs: list[str]) -> int:
    """``_events KEY=URI ...``: print every job-completed event as a JSON line until killed."""
    import libvirt

    libvirt.virEventRegisterDefaultImpl()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    def on_job(_conn: Any, dom: Any, params: dict[str, Any], host: str) -> None:
        print(json.dumps({"host": host, "domain": dom.name(), "stats": params}), flush=True)

    conns = []
    for spec in specs:
        key, _, uri = spec.partition("=")
        conn = libvirt.open(uri)
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job, key)
        conns.append(conn)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        libvirt.virEventRunDefaultImpl()


# --------------------------------------------------------------------------- the hosts
class Bench:
    """The hosts, the guests and the tools."""

    def __init__(self, env: LibvirtHosts, workdir: Path, use_cli: bool) -> None:
        from ferry.drivers.libvirt.connection import libvirt_module

        self.lv = libvirt_module()  # also silences libvirt's default error printer
        self.env = env
        self.workdir = workdir
        self.hosts: dict[str, Host] = env.hosts()
        self.a, self.b = self.hosts["A"], self.hosts["B"]
        self.conns = {key: self.lv.open(h.unix_uri) for key, h in self.hosts.items()}
        self.console_dir = env.settings.directory / "console"
        self.host_configs = tuple(
            HostConfig(
                name=h.name,
                driver="libvirt",
                options={
                    "uri": h.uri,
                    "instances_path": h.instances_path,
                    "reserved_host_memory_mb": 0,
                },
            )
            for h in self.hosts.values()
        )
        self._events: list[tuple[float, str, str | None]] | None = None
        self._call_s: float | None = None
        self._samples: list[tuple[float, int, float]] = []
        self._unpatch = self._time_migrate_calls()
        self.job_events = JobEvents({key: h.unix_uri for key, h in self.hosts.items()})
        self.orch = self.orchestrator(MigrationSettings(), "ferry.db")
        self.use_cli = use_cli
        self.cli_env = dict(os.environ)
        if use_cli:
            cfg = workdir / "ferry-cli.toml"
            cfg.write_text(self.toml(MigrationSettings()))
            self.cli_env.update(
                FERRY_CONFIG=str(cfg), FERRY_DB=f"sqlite:///{workdir / 'ferry-cli.db'}"
            )

    def orchestrator(self, migration: MigrationSettings, db: str) -> Orchestrator:
        settings = Settings(migration=migration, hosts=self.host_configs)
        orch = Orchestrator(f"sqlite:///{self.workdir / db}", settings=settings)
        orch.subscribe(self._on_event)
        return orch

    def toml(self, migration: MigrationSettings) -> str:
        lines = ["[migration]", f"poll_interval = {migration.poll_interval}", ""]
        for hc in self.host_configs:
            lines += ["[[hosts]]", f"name = {json.dumps(hc.name)}", 'driver = "libvirt"']
            lines += [f"{k} = {json.dumps(v)}" for k, v in hc.options.items()]
            lines.append("")
        return "\n".join(lines)

    def _time_migrate_calls(self) -> Callable[[], None]:
        """Measure every ``virDomain.migrateToURI3`` call of this process (ferry's transfer
        thread makes it): what libvirt itself takes, from the destination's prepare to the
        confirm, so the transfer atom's remaining time is ferry's own."""
        cls = self.lv.virDomain
        original = cls.migrateToURI3

        def timed(dom: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(dom, *args, **kwargs)
            finally:
                self._call_s = time.perf_counter() - t0

        cls.migrateToURI3 = timed
        return lambda: setattr(cls, "migrateToURI3", original)

    def _on_event(self, e: Event) -> None:
        if self._events is not None and e.kind in ("phase_started", "phase_done", "progress"):
            self._events.append((time.perf_counter(), e.kind, e.phase))
            if e.kind == "progress" and e.data.get("state") == "running":
                self._samples.append(
                    (
                        time.perf_counter(),
                        int(e.data.get("iteration") or 0),
                        float(e.data.get("memory_remaining_mb") or 0.0),
                    )
                )

    def close(self) -> None:
        self.job_events.close()
        self._unpatch()
        self.orch.close()
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                conn.close()

    # ---- guests
    def start_guest(self, name: str, memory_mib: int, kernel: str) -> None:
        self.remove_guest(name)
        guests.start_guest(
            self.conns["A"],
            name,
            host="A",
            memory_mib=memory_mib,
            kernel=kernel,
            console_dir=self.console_dir,
        )

    def where(self, name: str) -> str | None:
        """The key of the host the guest is active on (None: nowhere)."""
        for key in ("A", "B"):
            try:
                if self.conns[key].lookupByName(name).isActive():
                    return key
            except self.lv.libvirtError:
                continue
        return None

    def remove_guest(self, name: str) -> None:
        for conn in self.conns.values():
            try:
                dom = conn.lookupByName(name)
            except self.lv.libvirtError:
                continue
            with contextlib.suppress(self.lv.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(self.lv.libvirtError):
                if dom.isPersistent():
                    dom.undefine()

    # ---- tools
    def virsh(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-q", *args], capture_output=True, text=True, timeout=timeout
        )

    def migrate(self, tool: str, name: str, size: int, src: str, dst: str) -> Run:
        direction = f"{src}->{dst}"
        load1 = os.getloadavg()[0]
        self.job_events.drain()
        if tool == VIRSH:
            run = self._virsh(name, size, src, dst)
        elif tool == FERRY_CLI:
            run = self._cli(name, size, dst)
        else:
            overrides: dict[str, Any] | None = None
            if tool == FERRY_FAST:
                overrides = {"poll_interval": FAST_POLL}
            elif tool == FERRY_QEMU_DT:
                overrides = dict(QEMU_DOWNTIME)
            run = self._ferry(tool, name, size, dst, overrides)
        run.direction, run.load1 = direction, load1
        if run.ok:  # untimed: the finished job's own statistics
            stats = self.job_events.wait(src, name)
            if stats is not None:
                run.job_s = stats.get("time_elapsed", 0) / 1000.0
                run.downtime_ms = stats.get("downtime")
                run.iterations = stats.get("memory_iteration")
        return run

    def virsh_overhead(self, samples: int = 5) -> float:
        """Median seconds of ``virsh -c URI uri``: process start, connect, disconnect."""
        walls = []
        for _ in range(samples):
            t0 = time.perf_counter()
            self.virsh("-c", self.a.uri, "uri")
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls)

    def cli_startup(self, samples: int = 3) -> float:
        """Median seconds of ``python -m ferry --help``: interpreter start and imports."""
        walls = []
        for _ in range(samples):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "ferry", "--help"],
                capture_output=True,
                env=self.cli_env,
                cwd=REPO,
                timeout=120,
            )
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls)

    def _virsh(self, name: str, size: int, src: str, dst: str) -> Run:
        s, d = self.hosts[src], self.hosts[dst]
        cmd = ["virsh", "-q", "-c", s.uri, "migrate", "--live", "--p2p", "--persistent"]
        cmd += ["--undefinesource", name, f"qemu+tcp://{d.ip}/system"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=VIRSH_TIMEOUT_S)
        wall = time.perf_counter() - t0
        return Run(VIRSH, size, "", wall, res.returncode == 0, res.stderr.strip() or None)

    def _ferry(
        self, tool: str, name: str, size: int, dst: str, overrides: dict[str, Any] | None
    ) -> Run:
        events: list[tuple[float, str, str | None]] = []
        self._events = events
        self._call_s = None
        self._samples = []
        error = None
        t0 = time.perf_counter()
        try:
            m: Migration | None = self.orch.live_migrate(
                name, self.hosts[dst].name, overrides=overrides
            )
        except FerryError as exc:
            m, error = getattr(exc, "migration", None), f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
        self._events = None
        run = Run(tool, size, "", wall, m is not None and m.status == "completed", error)
        run.call_s = self._call_s
        run.samples = [(t - t0, i, left) for t, i, left in self._samples]
        if m is not None:
            fill_from_record(run, m.phases, m.progress)
        started = [t for t, kind, _ in events if kind == "phase_started"]
        done = [t for t, kind, _ in events if kind == "phase_done"]
        if started and done:
            run.before_s, run.after_s = started[0] - t0, t0 + wall - done[-1]
        return run

    def _cli(self, name: str, size: int, dst: str) -> Run:
        cmd = [sys.executable, "-m", "ferry", "migrate", name, "--to", self.hosts[dst].name]
        t0 = time.perf_counter()
        res = subprocess.run(
            [*cmd, "--json"],
            capture_output=True,
            text=True,
            env=self.cli_env,
            cwd=REPO,
            timeout=VIRSH_TIMEOUT_S,
        )
        wall = time.perf_counter() - t0
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError:
            data = {}
        ok = res.returncode == 0 and data.get("status") == "completed"
        run = Run(FERRY_CLI, size, "", wall, ok, None if ok else (res.stderr.strip() or res.stdout))
        if data:
            phases = [PhaseState.from_dict(p) for p in data.get("phases", [])]
            fill_from_record(run, phases, data.get("progress") or {})
        return run


def fill_from_record(run: Run, phases: list[Any], progress: dict[str, Any]) -> None:
    run.phases = {p.name: p.seconds for p in phases if p.seconds is not None}
    result = progress.get("result") or {}
    if result:  # the job's time, downtime and iterations come from libvirt's event instead
        run.record_downtime_ms = result.get("downtime_ms")
        run.lever = result.get("lever")


_UNITS = {"b": 1 / 1048576, "kib": 1 / 1024, "mib": 1.0, "gib": 1024.0}


def jobinfo(text: str) -> dict[str, float]:
    """``virsh domjobinfo`` output -> time_s, downtime_ms, remaining_mib, processed_mib,
    total_mib, dirty_mib_s, iteration (those present)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    out: dict[str, float] = {}

    def number(label: str) -> tuple[float, str] | None:
        m = re.match(r"([0-9.]+)\s*(\S*)", fields.get(label, ""))
        return (float(m.group(1)), m.group(2).lower()) if m else None

    if (v := number("time elapsed")) is not None:
        out["time_s"] = v[0] / 1000.0
    if (v := number("total downtime")) is not None:
        out["downtime_ms"] = v[0]
    for label, key in (
        ("memory remaining", "remaining_mib"),
        ("memory processed", "processed_mib"),
        ("memory total", "total_mib"),
    ):
        if (v := number(label)) is not None:
            out[key] = v[0] * _UNITS.get(v[1], 1.0)
    page = number("page size")
    if (v := number("dirty rate")) is not None:
        out["dirty_mib_s"] = v[0] * (page[0] if page else 4096) / 1048576
    if (v := number("iteration")) is not None:
        out["iteration"] = v[0]
    return out


# ----------------------------------------------------------------------------- table 1
def tool_orders(tools: list[str]) -> list[list[str]]:
    """A balanced Latin square (Williams design): over its rows every tool runs in every
    position, and right after every other tool, equally often -- so neither the direction
    (the guest alternates hosts) nor the previous migration's aftermath favours a tool."""
    n = len(tools)
    first = [0]
    lo, hi = 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    rows = [[(x + i) % n for x in first] for i in range(n)]
    if n % 2:  # odd: the rows reversed too
        rows += [row[::-1] for row in rows]
    return [[tools[x] for x in row] for row in rows]


def table1_size(bench: Bench, size: int, tools: list[str], runs: int) -> list[Run]:
    name = f"bench-{size}"
    note(f"== {size} MiB guest: starting {name} on lv-a (kernel idle) ...")
    bench.start_guest(name, size, "idle")
    where = "A"
    out: list[Run] = []
    try:
        note(f"   warm-up: one untimed migration per tool ({', '.join(tools)})")
        for tool in tools:
            dst = "B" if where == "A" else "A"
            run = bench.migrate(tool, name, size, where, dst)
            if not run.ok:
                raise RuntimeError(f"warm-up {tool} {run.direction} failed: {run.error}")
            where = dst
        orders = tool_orders(tools)
        for rnd in range(runs):
            for tool in orders[rnd % len(orders)]:
                time.sleep(SETTLE_S)  # the previous migration's source QEMU exits meanwhile
                dst = "B" if where == "A" else "A"
                run = bench.migrate(tool, name, size, where, dst)
                out.append(run)
                extra = ""
                if run.phases:
                    extra = f"  transfer {run.phases.get(c.TRANSFER, 0):.3f} s"
                note(
                    f"   round {rnd + 1}/{runs} {tool:<9} {run.direction} "
                    f"{'ok  ' if run.ok else 'FAIL'} {run.wall_s:7.3f} s"
                    f"  job {fmt(run.job_s, 3)} s{extra}  load {run.load1:.2f}"
                    + (f"  {run.error}" if not run.ok else "")
                )
                found = bench.where(name)
                if found is None:
                    raise RuntimeError(f"{name} is running nowhere after {tool} {run.direction}")
                where = found
    finally:
        bench.remove_guest(name)
    return out


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table1(results: dict[int, list[Run]], tools: list[str]) -> list[dict[str, Any]]:
    """Table 1; returns the target checks. Two ratios: of the median wall times (what the
    target asks), and job-normalised: the libvirt job (QEMU copying RAM, the same work whoever
    asked for it, and what the machine's load varies most) taken as the median over every
    tool's runs, plus each tool's own median of wall - job."""
    checks = []
    print(
        "| guest RAM | tool | runs (A→B / B→A) | median s | min-max s | libvirt job s "
        "| wall - job s | downtime ms | ferry / virsh | job-normalised | target |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, all_runs in results.items():
        by_tool = {t: [r for r in all_runs if r.tool == t and r.ok] for t in tools}
        pooled_job = median([r.job_s for r in all_runs if r.ok])
        virsh_med = median([r.wall_s for r in by_tool[VIRSH]])
        virsh_over = median([r.overhead_s for r in by_tool[VIRSH]])
        for tool in tools:
            rs = by_tool[tool]
            failed = sum(1 for r in all_runs if r.tool == tool and not r.ok)
            walls = [r.wall_s for r in rs]
            med = statistics.median(walls) if walls else None
            over = median([r.overhead_s for r in rs])
            ab = sum(1 for r in rs if r.direction == "A->B")
            count = f"{len(rs)} ({ab} / {len(rs) - ab})" + (f", {failed} failed" if failed else "")
            ratio = med / virsh_med if med is not None and virsh_med else None
            norm = None
            if pooled_job is not None and over is not None and virsh_over is not None:
                norm = (pooled_job + over) / (pooled_job + virsh_over)
            target = ""
            goal = TARGETS.get(size)
            if goal is not None and tool != VIRSH and ratio is not None:
                passed = ratio <= goal
                passed_norm = norm is not None and norm <= goal
                if tool == FERRY:
                    target = (
                        f"<= {goal:g}: medians **{'PASS' if passed else 'FAIL'}**, "
                        f"job-normalised **{'PASS' if passed_norm else 'FAIL'}**"
                    )
                    checks.append(
                        {
                            "size_mib": size,
                            "ratio": round(ratio, 3),
                            "ratio_job_normalised": round(norm, 3) if norm else None,
                            "target": goal,
                            "passed": passed,
                            "passed_job_normalised": passed_norm,
                        }
                    )
                elif tool == FERRY_QEMU_DT:
                    target = (
                        f"({'within' if passed else 'over'} {goal:g} by medians, "
                        f"{'within' if passed_norm else 'over'} job-normalised)"
                    )
                else:
                    target = f"({'within' if passed_norm else 'over'} {goal:g}, job-normalised)"
            span = f"{min(walls):.3f}-{max(walls):.3f}" if walls else "-"
            print(
                f"| {size} MiB | {TOOL_LABELS[tool]} | {count} | {fmt(med, 3)} | {span} "
                f"| {fmt(median([r.job_s for r in rs]), 3)} | {fmt(over, 3)} "
                f"| {fmt(median([r.downtime_ms for r in rs]), 0)} "
                f"| {'1.00' if tool == VIRSH else fmt(ratio)} "
                f"| {'1.00' if tool == VIRSH else fmt(norm)} | {target} |"
            )
    return checks


def print_phases(results: dict[int, list[Run]], tools: list[str]) -> None:
    ferry_tools = [t for t in (FERRY, FERRY_QEMU_DT, FERRY_FAST, FERRY_CLI) if t in tools]
    cols = [(size, t) for size in results for t in ferry_tools]
    short = {FERRY: "poll 0.5", FERRY_QEMU_DT: "300 ms", FERRY_FAST: "poll 0.1", FERRY_CLI: "CLI"}
    print("| ferry, median s | " + " | ".join(f"{s} MiB {short[t]}" for s, t in cols) + " |")
    print("|---|" + "---|" * len(cols))

    def row(label: str, fn: Callable[[Run], float | None]) -> None:
        vals = []
        for size, tool in cols:
            rs = [r for r in results[size] if r.tool == tool and r.ok]
            vals.append(fmt(median([fn(r) for r in rs]), 3))
        if any(v != "-" for v in vals):
            print(f"| {label} | " + " | ".join(vals) + " |")

    for atom in c.ALL_ATOMS:
        row(f"`{atom}`", lambda r, a=atom: r.phases.get(a))  # type: ignore[misc]
    row("↳ transfer: the `migrateToURI3` call (libvirt, end to end)", lambda r: r.call_s)
    row("↳ ↳ of which the libvirt job (`time_elapsed`)", lambda r: r.job_s)
    row("↳ transfer: ferry around the call (thread, connection, polls)", lambda r: r.around_call_s)
    row("sum of the atoms", lambda r: sum(r.phases.values()) if r.phases else None)
    row("outside the atoms", lambda r: r.outside_s)
    row("↳ before the first atom (validate, record, logbook, engine)", lambda r: r.before_s)
    row("↳ between atoms (TaskFlow state saves, scheduling)", lambda r: r.between_s)
    row("↳ after the last atom (record read, phases)", lambda r: r.after_s)
    row("**total (wall)**", lambda r: r.wall_s)


# ----------------------------------------------------------------------------- table 2
@dataclass
class DirtyResult:
    virsh_outcome: str = ""
    virsh_wall_s: float = 0.0
    virsh_stats: dict[str, float] = field(default_factory=dict)
    virsh_error: str | None = None
    ferry: Run | None = None
    load_before: str = ""
    load_after: str = ""


def table2(bench: Bench) -> DirtyResult:
    name = f"bench-dirty-{DIRTY_MIB}"
    out = DirtyResult(load_before=load())
    note(f"== dirty {DIRTY_MIB} MiB guest, bandwidth {DIRTY_BANDWIDTH} MiB/s: starting {name}")
    bench.start_guest(name, DIRTY_MIB, "dirty")
    try:
        a, b = bench.a, bench.b
        cmd = ["virsh", "-q", "-c", a.uri, "migrate", "--live", "--p2p", "--persistent"]
        cmd += ["--undefinesource", "--bandwidth", str(DIRTY_BANDWIDTH), name]
        cmd.append(f"qemu+tcp://{b.ip}/system")
        note(f"   virsh: {' '.join(cmd)} (abort after {VIRSH_GIVE_UP_S:.0f} s)")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=VIRSH_GIVE_UP_S)
            if proc.poll() is None:
                info = bench.virsh("-c", a.uri, "domjobinfo", name)
                out.virsh_stats = jobinfo(info.stdout)
                out.virsh_wall_s = time.perf_counter() - t0
                bench.virsh("-c", a.uri, "domjobabort", name)
                _stdout, stderr = proc.communicate(timeout=60)
                out.virsh_outcome = "not finished: aborted"
                out.virsh_error = stderr.strip().splitlines()[-1] if stderr.strip() else None
            else:
                out.virsh_wall_s = time.perf_counter() - t0
                _stdout, stderr = proc.communicate()
                out.virsh_outcome = "completed" if proc.returncode == 0 else "failed"
                out.virsh_error = stderr.strip() or None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        note(f"   virsh: {out.virsh_outcome} after {out.virsh_wall_s:.1f} s {out.virsh_stats}")
        src = bench.where(name)
        if src is None:
            raise RuntimeError(f"{name} is running nowhere after virsh")
        dst = "B" if src == "A" else "A"
        orch = bench.orchestrator(
            MigrationSettings(live_migration_bandwidth=DIRTY_BANDWIDTH), "ferry-dirty.db"
        )
        try:
            saved, bench.orch = bench.orch, orch
            try:
                note(f"   ferry: default policy, live_migration_bandwidth={DIRTY_BANDWIDTH}")
                out.ferry = bench.migrate(FERRY, name, DIRTY_MIB, src, dst)
            finally:
                bench.orch = saved
        finally:
            orch.close()
        r = out.ferry
        note(
            f"   ferry: {'completed' if r.ok else 'FAILED'} in {r.wall_s:.1f} s, downtime "
            f"{r.downtime_ms} ms, lever {r.lever}" + (f": {r.error}" if r.error else "")
        )
    finally:
        bench.remove_guest(name)
        out.load_after = load()
    return out


def print_table2(d: DirtyResult) -> dict[str, Any]:
    r = d.ferry
    print(
        f"| {DIRTY_MIB} MiB guest rewriting its RAM, {DIRTY_BANDWIDTH} MiB/s cap | outcome "
        "| time s | left / downtime | how |"
    )
    print("|---|---|---|---|---|")
    st = d.virsh_stats
    left = "-"
    if "remaining_mib" in st:
        left = f"{st['remaining_mib']:.0f} MiB of {st.get('total_mib', DIRTY_MIB):.0f} MiB left"
    how = []
    if "iteration" in st:
        how.append(f"iteration {st['iteration']:.0f}")
    if "dirty_mib_s" in st:
        how.append(f"dirty rate {st['dirty_mib_s']:.1f} MiB/s")
    print(
        f"| `virsh migrate --live --p2p --bandwidth {DIRTY_BANDWIDTH}` | {d.virsh_outcome} "
        f"| {d.virsh_wall_s:.1f} | {left} | {', '.join(how) or '-'} |"
    )
    check: dict[str, Any] = {"target_s": FERRY_DIRTY_TARGET_S}
    if r is not None:
        passed = r.ok and r.wall_s <= FERRY_DIRTY_TARGET_S
        outcome = "completed" if r.ok else f"failed: {r.error}"
        how_f = [f"lever: **{r.lever}**"]
        switch = next(((t, i, left) for t, i, left in r.samples if i >= 3), None)
        if r.lever == "post-copy" and switch is not None:
            how_f.append(
                f"switched when iteration {switch[1]} was seen, {switch[0]:.1f} s in, "
                f"{switch[2]:.0f} MiB left"
            )
        if r.iterations is not None:
            how_f.append(f"{r.iterations} pre-copy iterations")
        if r.job_s is not None:
            how_f.append(f"libvirt job {r.job_s:.1f} s")
        print(
            f"| ferry, default policy, `live_migration_bandwidth = {DIRTY_BANDWIDTH}` "
            f"| {outcome}; <= {FERRY_DIRTY_TARGET_S:.0f} s: **{'PASS' if passed else 'FAIL'}** "
            f"| {r.wall_s:.1f} | downtime {fmt(r.downtime_ms, 0)} ms (the record says "
            f"{fmt(r.record_downtime_ms, 0)} ms) | {', '.join(how_f)} |"
        )
        check.update(passed=passed, ferry=r.to_dict())
    return check


# -------------------------------------------------------------------------------- main
def machine_info() -> dict[str, str]:
    def first_line(*cmd: str) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (
            (res.stdout or res.stderr).strip().splitlines()[0] if res.stdout or res.stderr else "?"
        )

    qemu = first_line("qemu-system-x86_64", "--version")
    m = re.search(r"version (\S+)", qemu)
    try:
        lvpy = importlib.metadata.version("libvirt-python")
    except importlib.metadata.PackageNotFoundError:
        lvpy = "?"
    return {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "libvirt": first_line("libvirtd", "--version").split()[-1],
        "virsh": first_line("virsh", "--version"),
        "qemu": m.group(1) if m else qemu,
        "libvirt-python": lvpy,
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="ferry live migration against `virsh migrate --live --p2p` on the project's "
        "real libvirt test hosts (needs root)."
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        metavar="N",
        help=f"timed migrations per tool and guest size (default {DEFAULT_RUNS}; "
        f"{QUICK_RUNS} with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"N={QUICK_RUNS}, the {QUICK_SIZES[0]} MiB guest only, plus table 2",
    )
    p.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=None,
        metavar="MIB,...",
        help="guest sizes of table 1 (default 64,512)",
    )
    p.add_argument(
        "--net",
        default=DEFAULT_NET,
        help=f"the hosts' subnet, three octets (default {DEFAULT_NET}; the tests use 10.78.0)",
    )
    p.add_argument("--no-cli", action="store_true", help="skip the `python -m ferry` rows")
    p.add_argument("--no-fast-poll", action="store_true", help="skip the poll 0.1 s rows")
    p.add_argument(
        "--no-qemu-downtime",
        action="store_true",
        help="skip the rows of ferry with virsh's (QEMU's default) max downtime of 300 ms",
    )
    p.add_argument("--skip-table1", action="store_true", help="only the dirty-guest table")
    p.add_argument("--skip-table2", action="store_true", help="only the back-and-forth table")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the hosts' directory and ferry's databases (default: "
        "<tmp>/ferry-bench-libvirt-NET, removed afterwards; a given one is kept)",
    )
    p.add_argument("--json", action="store_true", help="also print every run as JSON")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


@contextlib.contextmanager
def hosts_up(directory: Path, net: str, keep: bool) -> Iterator[LibvirtHosts]:
    """The three hosts under ``directory``, guarded by a lock file; always torn down."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{directory}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{directory} is in use by another benchmark run") from None
        env = LibvirtHosts(directory, net=net)
        try:
            env.down()  # leftovers of a killed run in this directory
            t0 = time.perf_counter()
            env.up()
            note(
                f"hosts up in {time.perf_counter() - t0:.2f} s: "
                + ", ".join(f"{h.name} {h.ip}" for h in env.hosts().values())
                + f" (netns {env.netns('A')[:-2]}-*)"
            )
            yield env
        finally:
            t0 = time.perf_counter()
            env.down()
            note(f"hosts down in {time.perf_counter() - t0:.2f} s")
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
                Path(f"{directory}.lock").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("libvirt_vs_virsh: must run as root (network namespaces, libvirtd)", file=sys.stderr)
        return 2
    tools = [VIRSH, FERRY]
    if not args.no_qemu_downtime:
        tools.append(FERRY_QEMU_DT)
    if not args.no_fast_poll:
        tools.append(FERRY_FAST)
    if not args.no_cli:
        tools.append(FERRY_CLI)
    directory = args.workdir or Path(tempfile.gettempdir()) / f"ferry-bench-libvirt-{args.net}"
    info = machine_info()
    started = time.perf_counter()
    results: dict[int, list[Run]] = {}
    dirty: DirtyResult | None = None
    loads: dict[str, tuple[str, str, int]] = {}
    virsh_base: dict[int, float] = {}
    cli_base: dict[int, float] = {}
    try:
        with hosts_up(directory.absolute(), args.net, args.workdir is not None) as env:
            guests.build_kernel("idle")
            guests.build_kernel("dirty")
            work = Path(tempfile.mkdtemp(prefix="ferry-bench-db-"))
            bench = Bench(env, work, use_cli=FERRY_CLI in tools)
            try:
                if not args.skip_table1:
                    for size in args.sizes:
                        before, qemus = load(), qemu_count()
                        virsh_base[size] = bench.virsh_overhead()
                        if bench.use_cli:
                            cli_base[size] = bench.cli_startup()
                        results[size] = table1_size(bench, size, tools, args.runs)
                        loads[f"{size} MiB"] = (before, load(), qemus)
                if not args.skip_table2:
                    qemus = qemu_count()
                    dirty = table2(bench)
                    loads["dirty"] = (dirty.load_before, dirty.load_after, qemus)
            finally:
                bench.close()
                shutil.rmtree(work, ignore_errors=True)
    except (HostsError, guests.GuestError) as exc:
        print(f"libvirt_vs_virsh: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started

    print()
    print(
        "machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + f"; benchmark {elapsed:.0f} s"
    )
    checks: list[dict[str, Any]] = []
    if results:
        print()
        print(
            f"**Table 1** — the same guest (RAM filled once, diskless TCG) migrated between lv-a "
            f"and lv-b, tools alternating, {args.runs} timed runs each after one untimed warm-up; "
            "wall seconds per migration. ferry: persistent destination, source undefined, like "
            "virsh's `--persistent --undefinesource`."
        )
        print()
        checks = print_table1(results, tools)
        print()
        print(
            "*libvirt job*: `time_elapsed` of the job-completed event on the source (QEMU copying "
            "RAM; the same work for every tool). *wall - job*: the tool's own time plus libvirt's "
            "migration phases outside the job (destination QEMU start, finish, confirm). "
            "*ferry / virsh*: ratio of the median wall times. *job-normalised*: (median job over "
            "all tools' runs + the tool's median wall - job) / (the same for virsh) -- on a "
            "loaded machine the job time varies several-fold from run to run and swamps the "
            "ratio of medians, while wall - job stays within a few tens of ms."
        )
        print()
        print(
            "virsh's own start-up, for reference: `virsh -c qemu+tcp://… uri` (process start, "
            "connect, disconnect; no migration) took "
            + ", ".join(
                f"{v:.3f} s (median of 5, before the {k} MiB runs)" for k, v in virsh_base.items()
            )
            + "."
        )
        if cli_base:
            print()
            print(
                "ferry CLI's own start-up, for reference: `python -m ferry --help` (interpreter "
                "start and imports; no database, no connection) took "
                + ", ".join(
                    f"{v:.3f} s (median of 3, before the {k} MiB runs)" for k, v in cli_base.items()
                )
                + "."
            )
        print()
        print("ferry's time per phase (medians over the runs; rows do not add up exactly):")
        print()
        print_phases(results, tools)
    dirty_check: dict[str, Any] = {}
    if dirty is not None:
        print()
        print("**Table 2** — where ferry must beat the plain tool:")
        print()
        dirty_check = print_table2(dirty)
    print()
    print(
        "load average (1/5/15 min, 2 cores shared with other engineers' tests) and QEMU "
        "processes on the machine when each part started:"
    )
    for part, (before, after, qemus) in loads.items():
        print(f"  {part}: {before} at the start, {after} at the end; {qemus} QEMU processes")
    if args.json:
        print()
        print(
            json.dumps(
                {
                    "machine": info,
                    "runs": args.runs,
                    "table1": {str(s): [r.to_dict() for r in rs] for s, rs in results.items()},
                    "checks": checks,
                    "table2": dirty_check,
                    "loads": loads,
                    "virsh_startup_s": virsh_base,
                    "cli_startup_s": cli_base,
                    "elapsed_s": round(elapsed, 1),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_events"]:
        sys.exit(events_main(sys.argv[2:]))
    sys.exit(main())
