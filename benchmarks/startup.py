#!/usr/bin/env python3
"""Start-up of the ``ferry`` command, as whole processes started from a shell.

Builds a database with ``--migrations`` (default 1,000) completed migrations: real runs of the
14-atom flow (``Orchestrator.live_migrate``) on the simulated cluster of
``benchmarks/bench_cluster.toml`` in stepped time (``speed = 0``, transfers take no wall time),
so the records, attempts, status history and logbooks are what ferry writes. Then times each
command against a baseline process, alternating A B A B for ``--pairs`` pairs (default 7):

  ``ferry --help``, ``ferry --version``            vs  ``python -c "import click"``       <= 3x
  ``ferry list --json``, ``ferry list``,
  ``ferry show ID --json``, ``ferry hosts --json``,
  ``ferry instances``                              vs  ``python -c "import sqlalchemy"``  <= 1.5x

Every process is ``/bin/sh -c COMMAND`` timed with ``time.perf_counter`` from fork to exit,
output discarded; each command runs once untimed first (and must exit 0). The table prints the
median of each side, the median of the per-pair ratios A/B and PASS or FAIL against the target.
Standard library only. Run from the repository root::

    python benchmarks/startup.py [--migrations N] [--pairs P] [--workdir DIR] [--json]

``--workdir`` keeps the database (a second run with the same directory reuses it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CLUSTER_FILE = BENCH_DIR / "bench_cluster.toml"
DB_NAME = "startup.db"
#: targets: the ratio of ferry's process to its baseline's
TARGET_HELP = 3.0
TARGET_READ = 1.5


@dataclass
class Row:
    """One command against its baseline: the wall seconds of each process of each pair."""

    label: str
    command: str
    baseline: str  # as printed
    baseline_command: str
    target: float
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))

    @property
    def passed(self) -> bool:
        return self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.label,
            "baseline": self.baseline,
            "median_s": statistics.median(self.a),
            "baseline_median_s": statistics.median(self.b),
            "ratio_median": self.ratio,
            "target": self.target,
            "pass": self.passed,
            "a_s": self.a,
            "b_s": self.b,
        }


def ferry_command() -> str:
    """The ``ferry`` console script next to this Python, else ``python -m ferry``."""
    script = Path(sys.executable).with_name("ferry")
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m ferry"


def write_config(workdir: Path) -> Path:
    cfg = workdir / "ferry.toml"
    cfg.write_text(
        f'[simulated]\ncluster = "{CLUSTER_FILE}"\nspeed = 0\n[migration]\npost_retry_delay = 0\n'
    )
    return cfg


def build_database(db_url: str, config: Path, migrations: int) -> str:
    """Run migrations until the database holds ``migrations``; returns the newest one's id."""
    sys.path.insert(0, str(BENCH_DIR.parent))
    from ferry import Orchestrator

    with Orchestrator(db_url, config=config) as orch:
        have = orch.list()
        names = sorted(i.name for i in orch.instances())
        started = time.perf_counter()
        for i in range(len(have), migrations):
            orch.live_migrate(names[i % len(names)])
            if (i + 1) % 100 == 0:
                rate = (i + 1 - len(have)) / (time.perf_counter() - started)
                print(f"  {i + 1} migrations ({rate:.0f}/s)", file=sys.stderr)
        newest = orch.list(limit=1)
        count = len(orch.list())
    if count < migrations:
        raise SystemExit(f"the database holds {count} migrations, not {migrations}")
    return newest[0].id


def run_once(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`{command}` exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def rows_for(ferry: str, migration_id: str) -> list[Row]:
    py = shlex.quote(sys.executable)
    click_base = f'{py} -c "import click"'
    sa_base = f'{py} -c "import sqlalchemy"'
    helps = [("ferry --help", "--help"), ("ferry --version", "--version")]
    reads = [
        ("ferry list --json", "list --json"),
        ("ferry list", "list"),
        ("ferry show ID --json", f"show {migration_id} --json"),
        ("ferry hosts --json", "hosts --json"),
        ("ferry instances", "instances"),
    ]
    rows = [
        Row(label, f"{ferry} {args}", 'python -c "import click"', click_base, TARGET_HELP)
        for label, args in helps
    ]
    rows += [
        Row(label, f"{ferry} {args}", 'python -c "import sqlalchemy"', sa_base, TARGET_READ)
        for label, args in reads
    ]
    return rows


def measure(rows: list[Row], env: dict[str, str], pairs: int) -> None:
    for row in rows:  # warm-up: page cache, .pyc files; every command must succeed
        run_once(row.command, env)
        run_once(row.baseline_command, env)
    for _ in range(pairs):
        for row in rows:
            row.a.append(run_once(row.command, env))
            row.b.append(run_once(row.baseline_command, env))


def print_table(rows: list[Row], pairs: int, migrations: int) -> None:
    print(
        f"start-up of whole processes (/bin/sh -c, fork to exit), {pairs} pairs alternating "
        f"A B A B; database: {migrations} migrations (SQLite)"
    )
    header = (
        f"{'command (A)':<22} {'A p50 s':>8} {'baseline (B)':<30} {'B p50 s':>8} "
        f"{'A/B p50':>8} {'target':>7}  result"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.label:<22} {statistics.median(row.a):>8.3f} {row.baseline:<30} "
            f"{statistics.median(row.b):>8.3f} {row.ratio:>7.2f}x {row.target:>6.1f}x  "
            f"{'PASS' if row.passed else 'FAIL'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the database here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.pairs < 1 or args.migrations < 1:
        parser.error("--pairs and --migrations must be >= 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-startup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        config = write_config(workdir)
        db_url = f"sqlite:///{workdir / DB_NAME}"
        started = time.perf_counter()
        migration_id = build_database(db_url, config, args.migrations)
        print(
            f"database ready in {time.perf_counter() - started:.1f} s: {workdir / DB_NAME}",
            file=sys.stderr,
        )
        env = {
            **os.environ,
            "FERRY_DB": db_url,
            "FERRY_CONFIG": str(config),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(BENCH_DIR.parent), os.environ.get("PYTHONPATH")) if p
            ),
            "COLUMNS": "120",
        }
        rows = rows_for(ferry_command(), migration_id)
        measure(rows, env, args.pairs)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(
            f"{datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs), "
            f"Python {platform.python_version()}"
        )
        print_table(rows, args.pairs, args.migrations)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
