#!/usr/bin/env python3
"""Whole-flow live-migration throughput on the simulated cluster (zero-time transfers).

Each migration is ``Orchestrator.live_migrate(name)``: the real 14-atom TaskFlow flow, ferry's own
SQLite tables (records, claims, leases, the simulated cluster) and a TaskFlow logbook, run
sequentially, round-robin over the instances of ``benchmarks/bench_cluster.toml``. Stepped
simulated time (``speed = 0``) makes transfers take no wall time, so what is measured is the cost
of the engine, the tasks' database work and TaskFlow persistence. Configurations, each on a fresh
SQLite file per repetition:

  (a) ferry      ferry's durable TaskFlow backend (the default ``Orchestrator``)
  (b) stock      TaskFlow's stock SQLAlchemy backend on the same SQLite file
  (c) memory     TaskFlow's in-memory backend (ferry's own tables still in SQLite)
  (d) bare       a bare TaskFlow run (no persistence, serial engine) of a linear flow of as many
                 no-op tasks as ferry's flow has atoms (flows, not migrations)

Run from the repository root::

    python benchmarks/flow_throughput.py [--migrations N] [--repeat R] [--json] [--workdir DIR]

See benchmarks/README.md for what each row means and what the SQLite settings imply.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from taskflow import engines, flow as tf_flow, task
from taskflow.patterns import linear_flow
from taskflow.persistence.backends import impl_memory, impl_sqlalchemy

from ferry import Orchestrator
from ferry.config import Settings, SimulatedSettings
from ferry.drivers.simulated import load_cluster
from ferry.flows.live_migration import get_live_migration_flow
from ferry.model import MigrationStatus

BENCH_DIR = Path(__file__).resolve().parent
CLUSTER_FILE = BENCH_DIR / "bench_cluster.toml"
#: the stock backend runs at a few migrations per second: cap its count to keep the run short
STOCK_MAX_MIGRATIONS = 30
#: targets: (a) >= 10x (b), and (a) >= 0.5x (c)
TARGET_VS_STOCK = 10.0
TARGET_VS_MEMORY = 0.5
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

#: (runs per wall second, CPU ms per run)
Timing = tuple[float, float]
#: a configuration's timing and the SQLite settings its connections use
Outcome = tuple[Timing, dict[str, str]]


@dataclass
class Result:
    """One configuration: its rate in each repetition and the median."""

    key: str
    label: str
    unit: str  # "migrations" or "flows"
    count: int
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    pragmas: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def ms_each(self) -> float:
        return 1000.0 / self.median

    @property
    def cpu_ms_each(self) -> float:
        return statistics.median(self.cpu_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "count_per_repeat": self.count,
            "rates_per_s": [round(r, 3) for r in self.rates],
            "median_per_s": round(self.median, 3),
            "ms_each": round(self.ms_each, 3),
            "cpu_ms_each_per_repeat": [round(c, 3) for c in self.cpu_ms],
            "cpu_ms_each_median": round(self.cpu_ms_each, 3),
            "sqlite": self.pragmas,
            "note": self.note,
        }


# ----------------------------------------------------------------------------- helpers
def settings() -> Settings:
    """The benchmark cluster on stepped simulated time (transfers take no wall time)."""
    return Settings(simulated=SimulatedSettings(cluster=str(CLUSTER_FILE), speed=0.0))


def instance_names() -> list[str]:
    return [i.name for i in load_cluster(CLUSTER_FILE).instances]


def count_atoms(flow: tf_flow.Flow) -> int:
    """Tasks and retries of ``flow``, nested flows included."""
    total = 1 if flow.retry is not None else 0
    for node, _meta in flow.iter_nodes():
        total += count_atoms(node) if isinstance(node, tf_flow.Flow) else 1
    return total


def sqlite_pragmas(engine: sa.Engine) -> dict[str, str]:
    """journal_mode and synchronous as a connection of ``engine`` sees them."""
    with engine.connect() as conn:
        journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        sync = int(conn.exec_driver_sql("PRAGMA synchronous").scalar() or 0)
    return {"journal_mode": journal.upper(), "synchronous": SYNCHRONOUS_NAMES.get(sync, str(sync))}


def describe_pragmas(pragmas: dict[str, str]) -> str:
    return ", ".join(f"{who}: {value}" for who, value in pragmas.items())


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def fresh_db(workdir: Path, name: str, keep: bool) -> Iterator[str]:
    """The URL of a new SQLite file ``workdir/name.db`` (an old one is removed first); removed
    afterwards too unless ``keep``."""
    path = workdir / f"{name}.db"
    remove_db(path)
    try:
        yield f"sqlite:///{path}"
    finally:
        if not keep:
            remove_db(path)


def timed(count: int, one: Callable[[int], None]) -> Timing:
    """Run ``one(i)`` for i = 1..count: (runs per wall second, CPU ms of this process per run)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(1, count + 1):
        one(i)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return count / wall, cpu * 1000.0 / count


def time_migrations(orch: Orchestrator, names: list[str], count: int) -> Timing:
    """Warm up with one migration, then migrate ``count`` times round-robin (the timed run
    continues the rotation after the warm-up's ``names[0]``)."""

    def migrate(i: int) -> None:
        record = orch.live_migrate(names[i % len(names)])
        if record.status != MigrationStatus.COMPLETED:  # live_migrate raises on failure anyway
            raise RuntimeError(f"migration {record.id} ended {record.status}")

    migrate(0)
    return timed(count, migrate)


# -------------------------------------------------------------------- configurations
def run_ferry(url: str, names: list[str], count: int) -> Outcome:
    with contextlib.closing(Orchestrator(url, settings=settings())) as orch:
        timing = time_migrations(orch, names, count)
        pragmas = sqlite_pragmas(orch.db.engine)
    return timing, {"ferry tables + logbook": describe_pragmas(pragmas)}


def run_stock(url: str, names: list[str], count: int) -> Outcome:
    backend = impl_sqlalchemy.SQLAlchemyBackend({"connection": url})
    try:
        with contextlib.closing(backend.get_connection()) as conn:
            conn.upgrade()
        with contextlib.closing(
            Orchestrator(url, settings=settings(), taskflow_backend=backend)
        ) as orch:
            timing = time_migrations(orch, names, count)
            ferry_pragmas = sqlite_pragmas(orch.db.engine)
        stock_pragmas = sqlite_pragmas(backend.engine)
    finally:
        backend.close()
    return timing, {
        "ferry tables": describe_pragmas(ferry_pragmas),
        "stock logbook": describe_pragmas(stock_pragmas),
    }


def run_memory(url: str, names: list[str], count: int) -> Outcome:
    backend = impl_memory.MemoryBackend()
    try:
        with contextlib.closing(
            Orchestrator(url, settings=settings(), taskflow_backend=backend)
        ) as orch:
            timing = time_migrations(orch, names, count)
            pragmas = sqlite_pragmas(orch.db.engine)
    finally:
        backend.close()
    return timing, {"ferry tables": describe_pragmas(pragmas), "logbook": "in memory (not durable)"}


class NoOp(task.Task):
    def execute(self) -> None:
        return None


def run_bare(_url: str, _names: list[str], count: int, atoms: int) -> Outcome:
    def build() -> linear_flow.Flow:
        flow = linear_flow.Flow("bare")
        flow.add(*(NoOp(f"noop-{i}") for i in range(atoms)))
        return flow

    def one(_i: int) -> None:
        engines.load(build(), engine="serial").run()

    one(0)  # warm-up
    return timed(count, one), {"persistence": "none"}


# ------------------------------------------------------------------------------ output
def print_table(results: list[Result], by_key: dict[str, Result]) -> None:
    stock, memory = by_key["b"], by_key["c"]
    header = (
        f"{'configuration':<40} {'count':>5} {'per s':>7} {'ms each':>8} {'CPU ms':>7} "
        f"{'vs (b)':>7} {'vs (c)':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        label = f"({r.key}) {r.label}"
        print(
            f"{label:<40} {r.count:>5} {r.median:>7.1f} {r.ms_each:>8.1f} {r.cpu_ms_each:>7.1f} "
            f"{r.median / stock.median:>6.1f}x {r.median / memory.median:>6.2f}x"
        )


def checks(by_key: dict[str, Result]) -> list[dict[str, Any]]:
    a, b, c = by_key["a"], by_key["b"], by_key["c"]
    out = []
    for name, other, target in (
        ("(a) >= 10x (b)", b, TARGET_VS_STOCK),
        ("(a) >= 0.5x (c)", c, TARGET_VS_MEMORY),
    ):
        ratio = a.median / other.median
        out.append(
            {
                "check": name,
                "passed": ratio >= target,
                "ratio": round(ratio, 3),
                "target": target,
                "a_per_s": round(a.median, 3),
                "other_per_s": round(other.median, 3),
            }
        )
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("taskflow", "SQLAlchemy", "ferry"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[dist] = "?"
    return out


# -------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Whole-flow live migrations per second on the simulated cluster "
        "(zero-time transfers), with ferry's, TaskFlow's stock and TaskFlow's in-memory "
        "persistence, and a bare TaskFlow run for reference."
    )
    parser.add_argument(
        "--migrations",
        type=int,
        default=100,
        metavar="N",
        help="timed migrations (flows) per repetition (default 100; the stock "
        f"backend runs min(N, {STOCK_MAX_MIGRATIONS}))",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="R",
        help="repetitions per configuration; the median is reported (default 3)",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the results as JSON after the table"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the SQLite files go, kept there for inspection (default: a temporary "
        "directory, removed afterwards)",
    )
    args = parser.parse_args(argv)
    if args.migrations < 1:
        parser.error("--migrations must be >= 1")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = instance_names()
    atoms = count_atoms(get_live_migration_flow())
    n = args.migrations
    n_stock = min(n, STOCK_MAX_MIGRATIONS)

    Runner = Callable[[str, list[str], int], Outcome]
    configs: list[tuple[Result, Runner]] = [
        (Result("a", "ferry durable backend (default)", "migrations", n), run_ferry),
        (
            Result(
                "b",
                "TaskFlow stock SQLAlchemy backend",
                "migrations",
                n_stock,
                note=f"fewer migrations: min(N, {STOCK_MAX_MIGRATIONS})",
            ),
            run_stock,
        ),
        (Result("c", "TaskFlow in-memory backend", "migrations", n), run_memory),
        (
            Result("d", f"bare TaskFlow, {atoms} no-op tasks", "flows", n),
            lambda url, nm, k: run_bare(url, nm, k, atoms),
        ),
    ]

    with contextlib.ExitStack() as stack:
        keep = args.workdir is not None  # a chosen directory keeps the databases to inspect
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ferry-bench-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        # interleaved rounds (a, b, c, d, a, b, ...): a slow patch of the machine hits every
        # configuration alike instead of biasing the ratios
        for rep in range(args.repeat):
            for result, runner in configs:
                with fresh_db(workdir, f"bench-{result.key}-{rep}", keep) as url:
                    (rate, cpu_ms), pragmas = runner(url, names, result.count)
                result.rates.append(rate)
                result.cpu_ms.append(cpu_ms)
                result.pragmas = pragmas
                print(
                    f"  ({result.key}) run {rep + 1}/{args.repeat}: {result.count} "
                    f"{result.unit} at {rate:.1f}/s ({cpu_ms:.1f} CPU ms each)",
                    file=sys.stderr,
                    flush=True,
                )
        elapsed = time.perf_counter() - started

    results = [r for r, _ in configs]
    by_key = {r.key: r for r in results}
    print()
    print(
        f"ferry flow throughput: {atoms}-atom live-migration flow, simulated cluster "
        f"{CLUSTER_FILE.name} ({len(names)} instances, round-robin, sequential), "
        "stepped time (zero-time transfers)"
    )
    fewer = f" ({n_stock} for (b): the stock backend is slow)" if n_stock < n else ""
    print(
        f"median of {args.repeat} interleaved run(s) of {n} migrations{fewer}, each after a "
        "one-migration "
        "warm-up on a fresh SQLite file; (d) counts flows. 'per s' and 'ms each' are wall "
        "clock; 'CPU ms' is this process's CPU time per migration (flow)"
    )
    print()
    print_table(results, by_key)
    print()
    print("SQLite settings in force (PRAGMA, read from each configuration's connections):")
    for r in results:
        for who, value in r.pragmas.items():
            print(f"  ({r.key}) {who}: {value}")
    print()
    print("targets:")
    outcome = checks(by_key)
    for chk in outcome:
        print(
            f"  {chk['check']:<16} {'PASS' if chk['passed'] else 'FAIL'}: "
            f"{chk['a_per_s']:.1f}/s vs {chk['other_per_s']:.1f}/s = {chk['ratio']:.2f}x "
            f"(target {chk['target']:g}x)"
        )
    print()
    print(
        f"total benchmark time {elapsed:.1f} s; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    if args.json:
        print()
        print(
            json.dumps(
                {
                    "migrations": n,
                    "stock_migrations": n_stock,
                    "repeat": args.repeat,
                    "atoms": atoms,
                    "cluster": str(CLUSTER_FILE.relative_to(BENCH_DIR.parent)),
                    "results": [r.to_dict() for r in results],
                    "checks": outcome,
                    "elapsed_s": round(elapsed, 2),
                    "versions": versions(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
