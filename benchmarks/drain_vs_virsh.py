#!/usr/bin/env python3
"""``ferry drain`` against ``virsh migrate --live --p2p`` through ``xargs -P2``, on the project's
real libvirt test hosts, both as whole processes started from a shell.

Brings up the three libvirt hosts of ``tests/infra/libvirt_hosts.py`` on their own subnet with
``benchmarks/libvirt_vs_virsh.py``'s ``hosts_up`` and ``Bench`` (the same hosts, guests and ferry
CLI configuration as that benchmark; lv-c's advertised free RAM raised to 4 guests' worth with
FERRY_LV_C_FREE_MIB), starts 4 small "idle" guests on lv-a (RAM filled once with pseudo-random
data, then halted) and moves all 4 back and forth:

  drain  ``sh -c 'python -m ferry drain lv-a --max-parallel 2'``: one ferry process
         (FERRY_CONFIG / FERRY_DB: one SQLite file for the whole run) that plans, disables lv-a,
         runs the 4 migrations at most 2 at once, follows them and prints its report; then,
         untimed, ``ferry undrain lv-a``. No ``--to``: each test host has the machine's 2
         vCPUs and ferry does not overcommit vCPUs, so one destination takes only 2 of the
         1-vCPU guests; the scheduler puts 2 on lv-b and 2 on lv-c
  virsh  ``sh -c "printf '%s\\n' '-c qemu+tcp://B/system migrate --live --p2p --persistent
         --undefinesource G1 qemu+tcp://A/system' ... | xargs -P2 -L1 virsh -q"``: every guest
         back to lv-a from where the drain put it, a virsh process and connection per guest,
         2 at once

alternating A B A B: each pair is a drain out of lv-a, then virsh back into lv-a, after one
untimed warm-up pair. A run counts when its process exits 0 and every guest then runs on the
destination. Printed (Markdown): each pair's wall seconds and its ratio drain / virsh, p50 and
p90 of each tool, the median of the per-pair ratios and the target (<= 1.15: PASS or FAIL), and
for reference the start-up of ``python -m ferry --help`` and of a bare virsh connection.

Needs root (namespaces, libvirtd), libvirt-daemon, qemu-system-x86, virsh, gcc (the fill kernel)
and libvirt-python. From the repository root::

    python benchmarks/drain_vs_virsh.py [--pairs 5] [--memory 64] [--net 10.83.0] [--json]

Progress lines go to stderr, the tables to stdout. The machine is shared: the load average is
printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks, tests.infra
    sys.path.insert(0, str(REPO))

from benchmarks.libvirt_vs_virsh import Bench, hosts_up, load, machine_info, note  # noqa: E402
from tests.infra import guest as guests  # noqa: E402
from tests.infra.libvirt_hosts import HostsError  # noqa: E402

DEFAULT_NET = "10.83.0"
DEFAULT_PAIRS = 5
GUESTS = 4
PARALLEL = 2
MEMORY_MIB = 64
TARGET = 1.15  # median of the per-pair ratios drain / virsh
TIMEOUT_S = 600.0
SETTLE_S = 0.5  # untimed pause before each run: the previous sources' QEMUs exit meanwhile
DRAIN, VIRSH = "drain", "virsh"


@dataclass
class Run:
    tool: str
    direction: str
    wall_s: float
    ok: bool
    error: str | None
    load1: float
    command: str = ""


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


class DrainBench:
    """The 4 guests, the two commands and where the guests are."""

    def __init__(self, bench: Bench, memory_mib: int) -> None:
        self.bench = bench
        self.names = [f"drain-{i}" for i in range(1, GUESTS + 1)]
        self.memory_mib = memory_mib
        self.env = dict(bench.cli_env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH")) if p
        )
        self.ferry = f"{shlex.quote(sys.executable)} -m ferry"

    def start_guests(self) -> None:
        for name in self.names:
            self.bench.start_guest(name, self.memory_mib, "idle")  # on lv-a

    def remove_guests(self) -> None:
        for name in self.names:
            self.bench.remove_guest(name)

    def where(self, name: str) -> str | None:
        """The key of the host the guest is active on (None: nowhere)."""
        for key, conn in self.bench.conns.items():
            try:
                if conn.lookupByName(name).isActive():
                    return key
            except self.bench.lv.libvirtError:
                continue
        return None

    def drain_command(self) -> str:
        return f"{self.ferry} drain {self.bench.a.name} --max-parallel {PARALLEL}"

    def virsh_command(self) -> str:
        """Every guest back to lv-a from where the drain put it: one ``virsh`` argument line
        per guest, ``xargs -L1`` runs one virsh per line, PARALLEL at once."""
        a = self.bench.a
        lines = []
        for name in self.names:
            src = self.bench.hosts[self.where(name) or "B"]
            lines.append(
                f"-c {src.uri} migrate --live --p2p --persistent --undefinesource {name} "
                f"qemu+tcp://{a.ip}/system"
            )
        listing = " ".join(shlex.quote(line) for line in lines)
        return f"printf '%s\\n' {listing} | xargs -P{PARALLEL} -L1 virsh -q"

    def shell(self, command: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        t0 = time.perf_counter()
        res = subprocess.run(
            ["sh", "-c", command],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO,
            timeout=TIMEOUT_S,
        )
        return time.perf_counter() - t0, res

    def run(self, tool: str) -> Run:
        time.sleep(SETTLE_S)
        load1 = os.getloadavg()[0]
        before = [self.where(n) for n in self.names]
        command = self.drain_command() if tool == DRAIN else self.virsh_command()
        wall, res = self.shell(command)
        after = {n: self.where(n) for n in self.names}
        error = None
        if res.returncode != 0:
            error = f"exit {res.returncode}: {res.stderr.strip()[-500:]}\n{res.stdout[-2000:]}"
        else:  # the drain: anywhere but lv-a; virsh: back on lv-a
            away = {n: w for n, w in after.items() if (w in (None, "A")) == (tool == DRAIN)}
            if away:
                error = "not where expected afterwards: " + ", ".join(
                    f"{n} on {w or 'no host'}" for n, w in away.items()
                )
        if tool == DRAIN:  # untimed: lv-a stays disabled until undrained
            _, undrain = self.shell(f"{self.ferry} undrain {self.bench.a.name}")
            if undrain.returncode != 0:
                error = error or f"undrain failed: {undrain.stderr.strip()[-300:]}"

        def names(keys: Iterable[str | None]) -> str:
            return "+".join(sorted({self.bench.hosts[k].name for k in keys if k}))

        direction = f"{names(before)} -> {names(after.values())}"
        return Run(tool, direction, wall, error is None, error, load1, command)


def run_pairs(db: DrainBench, pairs: int) -> list[tuple[Run, Run]]:
    out: list[tuple[Run, Run]] = []
    for i in range(pairs + 1):
        label = "warm-up" if i == 0 else f"pair {i}/{pairs}"
        drain = db.run(DRAIN)
        note(f"   {label} drain {drain.direction} {drain.wall_s:6.3f} s load {drain.load1:.2f}")
        if i == 0:
            note(f"     {drain.command}")
        if not drain.ok:
            raise RuntimeError(f"{label}: drain {drain.direction} failed: {drain.error}")
        virsh = db.run(VIRSH)
        note(f"   {label} virsh {virsh.direction} {virsh.wall_s:6.3f} s load {virsh.load1:.2f}")
        if i == 0:
            note(f"     {virsh.command}")
        if not virsh.ok:
            raise RuntimeError(f"{label}: virsh {virsh.direction} failed: {virsh.error}")
        if i:
            out.append((drain, virsh))
    return out


def print_table(pairs: list[tuple[Run, Run]], memory_mib: int) -> dict[str, object]:
    ratios = [d.wall_s / v.wall_s for d, v in pairs]
    print(
        f"{GUESTS} guests of {memory_mib} MiB (RAM filled once), {PARALLEL} at a time; wall "
        "seconds of the whole process started from `sh -c`"
    )
    print()
    print(
        "| pair | `ferry drain` lv-a → lv-b+lv-c s | `virsh` via `xargs -P2` lv-b+lv-c → lv-a s "
        "| drain / virsh |"
    )
    print("|---|---|---|---|")
    for i, ((d, v), r) in enumerate(zip(pairs, ratios, strict=True), 1):
        print(f"| {i} | {d.wall_s:.3f} | {v.wall_s:.3f} | {r:.2f} |")
    print()
    print("| tool | runs | p50 s | p90 s | min-max s |")
    print("|---|---|---|---|---|")
    summary: dict[str, object] = {}
    for tool, label, idx in (
        (DRAIN, f"`ferry drain lv-a --max-parallel {PARALLEL}`", 0),
        (VIRSH, f"`virsh migrate --live --p2p` via `xargs -P{PARALLEL}`", 1),
    ):
        walls = [p[idx].wall_s for p in pairs]
        p50, p90 = percentile(walls, 0.5), percentile(walls, 0.9)
        print(
            f"| {label} | {len(walls)} | {fmt(p50, 3)} | {fmt(p90, 3)} "
            f"| {min(walls):.3f}-{max(walls):.3f} |"
        )
        summary[tool] = {"p50_s": p50, "p90_s": p90, "walls_s": walls}
    med = statistics.median(ratios)
    passed = med <= TARGET
    print()
    print(
        f"median of the per-pair ratios drain / virsh: {med:.2f} "
        f"(per pair: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"target <= {TARGET:g}: **{'PASS' if passed else 'FAIL'}**"
    )
    summary.update(ratios=ratios, median_ratio=med, target=TARGET, passed=passed)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="`ferry drain` of 4 guests, 2 at once, against `virsh migrate --live --p2p` "
        "through `xargs -P2` on the project's real libvirt test hosts (needs root)."
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=DEFAULT_PAIRS,
        metavar="N",
        help=f"timed pairs (drain, then virsh), after one untimed pair (default {DEFAULT_PAIRS})",
    )
    p.add_argument("--memory", type=int, default=MEMORY_MIB, metavar="MIB", help="each guest's RAM")
    p.add_argument(
        "--net",
        default=DEFAULT_NET,
        help=f"the hosts' subnet, three octets (default {DEFAULT_NET}; the tests use 10.78.0)",
    )
    p.add_argument("--json", action="store_true", help="also print every run as JSON")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("drain_vs_virsh: must run as root (network namespaces, libvirtd)", file=sys.stderr)
        return 2
    directory = Path(tempfile.gettempdir()) / f"ferry-bench-drain-{args.net}"
    # lv-c advertises 48 MiB free by default (the tests' low-memory host); room for 2 guests here
    os.environ.setdefault("FERRY_LV_C_FREE_MIB", str(4 * args.memory))
    info = machine_info()
    started = time.perf_counter()
    load_before = load()
    try:
        with hosts_up(directory.absolute(), args.net, keep=False) as env:
            guests.build_kernel("idle")
            work = Path(tempfile.mkdtemp(prefix="ferry-bench-drain-db-"))
            bench = Bench(env, work, use_cli=True)
            db = DrainBench(bench, args.memory)
            try:
                cli_start = bench.cli_startup()
                virsh_start = bench.virsh_overhead()
                note(f"== starting {GUESTS} guests of {args.memory} MiB on lv-a (kernel idle)")
                db.start_guests()
                pairs = run_pairs(db, args.pairs)
            finally:
                db.remove_guests()
                bench.close()
                shutil.rmtree(work, ignore_errors=True)
    except (HostsError, guests.GuestError, RuntimeError) as exc:
        print(f"drain_vs_virsh: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print()
    print(
        "machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + f"; benchmark {elapsed:.0f} s"
    )
    print()
    summary = print_table(pairs, args.memory)
    print()
    print(
        f"for reference: `python -m ferry --help` (interpreter start, imports) {cli_start:.3f} s "
        f"(median of 3); `virsh -c qemu+tcp://… uri` {virsh_start:.3f} s (median of 5)"
    )
    print(f"load average (1/5/15 min): {load_before} at the start, {load()} at the end")
    if args.json:
        print()
        runs = [asdict(r) for p in pairs for r in p]
        print(json.dumps({"machine": info, "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
