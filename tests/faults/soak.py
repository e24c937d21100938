"""Every dependency fault N times at random moments, and a table of how the runs ended.

    python -m tests.faults.soak N [--only NAME ...] [--pg-down SECONDS] [--seed S]

Faults: SQLite on a full disk, made read-only, locked past the busy timeout (at a random phase
boundary or transfer percentage of a real migrating process, then lifted and the migration
resumed as ``ferry resume`` does); Redis restarted without and with persistence, ZooKeeper
restarted, a conductor's ZooKeeper session expired, PostgreSQL restarted and stopped for
``--pg-down`` seconds (at a random transfer percentage, while two conductors run three
migrations; the operator does nothing). Each run is checked consistent exactly as the tests
check it (tests/faults); "recover" is the time from the fault's end until every migration had
ended. Needs root and the servers' binaries (a fault that cannot run here is reported skipped).
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferry.flows import constants as c
from tests.faults import sqlite as sqlite_faults
from tests.faults.test_board_faults import run_through_restart
from tests.faults.test_postgres_faults import run_through_outage
from tests.faults.test_sqlite_faults import Unavailable, prepared, soak_case
from tests.infra import postgres as pg_infra, redis as redis_infra, zookeeper as zk_infra
from tests.jobs.helpers import assert_store_clean

Outcome = tuple[list[str], float]  # the migrations' end statuses, seconds to recover


def sqlite_point(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"progress:{rng.randint(1, 95)}"
    return f"{rng.choice(['started', 'done'])}:{rng.choice(c.ALL_ATOMS)}"


def sqlite_run(kind: str) -> Callable[[Path, random.Random, argparse.Namespace], Outcome]:
    def run(root: Path, rng: random.Random, _args: argparse.Namespace) -> Outcome:
        with prepared(root, kind) as setup:
            status, recovered = soak_case(setup, sqlite_point(rng))
        return [status], recovered

    return run


def _board_end(orch: Any, mids: list[str], recovered: float) -> Outcome:
    try:
        statuses = [orch.get(m).status for m in mids]
        assert all(s == "completed" for s in statuses), statuses
        assert_store_clean(orch, mids)
        return statuses, recovered
    finally:
        orch.close()


def redis_run(persist: bool) -> Callable[[Path, random.Random, argparse.Namespace], Outcome]:
    def run(root: Path, rng: random.Random, _args: argparse.Namespace) -> Outcome:
        if redis_infra.redis_server_bin() is None:
            raise Unavailable("no redis-server binary")
        directory, port = str(root / "redis"), redis_infra.free_port()
        url = redis_infra.start(directory, port, persist=persist)

        def restart(*_: object) -> None:
            redis_infra.stop(directory)
            redis_infra.start(directory, port, persist=persist)

        try:
            return _board_end(*run_through_restart(root / "run", url, restart, rng.uniform(5, 90)))
        finally:
            redis_infra.stop(directory)

    return run


def zk_run(expire: bool) -> Callable[[Path, random.Random, argparse.Namespace], Outcome]:
    def run(root: Path, rng: random.Random, _args: argparse.Namespace) -> Outcome:
        if zk_infra.zookeeper_bin() is None:
            raise Unavailable("no ZooKeeper")
        from kazoo.client import KazooClient

        directory, port = str(root / "zk"), zk_infra.free_port()
        url = zk_infra.start(directory, port)

        def fault(orch: Any, mids: list[str], group: list[Any]) -> None:
            if not expire:
                zk_infra.stop(directory)
                zk_infra.start(directory, port)
                return
            victim = rng.choice(group)
            ghost = KazooClient(hosts=f"127.0.0.1:{port}", client_id=victim.board._client.client_id)
            ghost.start(timeout=10)
            ghost.stop()
            ghost.close()

        try:
            return _board_end(
                *run_through_restart(root / "run", f"{url}/ferry/jobs", fault, rng.uniform(5, 90))
            )
        finally:
            zk_infra.stop(directory)

    return run


def pg_run(stopped: bool) -> Callable[[Path, random.Random, argparse.Namespace], Outcome]:
    def run(root: Path, rng: random.Random, args: argparse.Namespace) -> Outcome:
        if pg_infra.pg_bin() is None or redis_infra.redis_server_bin() is None:
            raise Unavailable("no PostgreSQL or Redis binaries")
        # a directory of its own: the server's user must reach it (mkdtemp's are 0700)
        directory, port = tempfile.mkdtemp(prefix="ferry-soak-pg-"), pg_infra.free_port()
        redis_dir = str(root / "redis")
        try:
            admin = pg_infra.start(directory, port)
            redis_url = redis_infra.start(redis_dir, redis_infra.free_port())
            orch, mids, recovered = run_through_outage(
                root / "run",
                (directory, port, admin),
                redis_url,
                args.pg_down if stopped else 0.0,
                rng.uniform(5, 90),
            )
            try:
                statuses = [orch.get(m).status for m in mids]
                assert all(s in ("completed", "failed") for s in statuses), statuses
                assert_store_clean(orch, mids)
                return statuses, recovered
            finally:
                orch.close()
        finally:
            redis_infra.stop(redis_dir)
            pg_infra.stop(directory)
            shutil.rmtree(directory, ignore_errors=True)

    return run


FAULTS: dict[str, Callable[[Path, random.Random, argparse.Namespace], Outcome]] = {
    "sqlite full disk": sqlite_run("full"),
    "sqlite read-only": sqlite_run("readonly"),
    "sqlite locked": sqlite_run("locked"),
    "redis restart (no persistence)": redis_run(False),
    "redis restart (AOF)": redis_run(True),
    "zookeeper restart": zk_run(False),
    "zookeeper session expired": zk_run(True),
    "postgres restart": pg_run(False),
    "postgres stopped": pg_run(True),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("count", type=int, help="runs of each fault")
    ap.add_argument("--only", action="append", default=[], help="a fault's name (substring)")
    ap.add_argument("--pg-down", type=float, default=5.0, help="seconds PostgreSQL stays down")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the table is the output
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    rows = []
    started = time.monotonic()
    for name, run in FAULTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        consistent, outcomes, recover, skipped = 0, collections.Counter[str](), [], None
        for _ in range(args.count):
            root = Path(tempfile.mkdtemp(prefix="ferry-soak-"))
            try:
                statuses, seconds = run(root, rng, args)
                consistent += 1
                outcomes.update(statuses)
                recover.append(seconds)
            except Unavailable as exc:
                skipped = str(exc)
                break
            except Exception:
                outcomes["INCONSISTENT"] += 1
                traceback.print_exc(limit=4, file=sys.stderr)
            finally:
                sqlite_faults.lift("readonly", root / "db" / "ferry.db")
                shutil.rmtree(root, ignore_errors=True)
        if skipped:
            rows.append((name, 0, 0, f"skipped: {skipped}", "-"))
            continue
        times = f"{statistics.median(recover):.1f} / {max(recover):.1f}" if recover else "-"
        summary = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        rows.append((name, args.count, consistent, summary, times))
    print(f"seed {seed}, {time.monotonic() - started:.0f} s in all\n")
    print("| fault | runs | consistent | outcomes (migrations) | recover s (median / max) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    return 0 if all(r[1] == r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
