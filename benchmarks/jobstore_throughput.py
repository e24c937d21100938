#!/usr/bin/env python3
"""Job store throughput and takeover latency: conductors over PostgreSQL + Redis.

Throughput: migrations per second with 1, 2 and 4 ``ferry conductor`` processes (each running up
to ``--max-jobs`` migrations at once) taking jobs from one Redis board, all on one PostgreSQL
database, with zero-time transfers (the simulated cluster on stepped time, ``speed = 0``) and no
concurrency limits: what is measured is the job store itself -- claims, leases and heartbeats,
TaskFlow's conductor, the 14-atom flow and its persistence on PostgreSQL. For each conductor
count, on a fresh database: the conductors are started and ready, the migrations are created
(untimed), then their jobs are posted at once; the rate is migrations / (last one terminal -
first job posted).

Takeover latency: two conductors, one migration with a long transfer (speed 1); the conductor
driving it is SIGKILLed mid-transfer and the clock runs until the other one holds its lease
(``taken over``) and until the transfer's progress is reported again by the new owner
(``resumed``), for each ``--lease`` setting (``[conductor] lease_seconds``).

Run from the repository root::

    python benchmarks/jobstore_throughput.py [--migrations N] [--conductors 1,2,4]
        [--max-jobs K] [--lease 2,5] [--takeovers R] [--json]
        [--pg-url URL] [--redis-url URL]

Without ``--pg-url`` / ``--redis-url`` it starts throwaway servers on 127.0.0.1 with the
project's own scripts (tests/infra/postgres.py, tests/infra/redis.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferry import Orchestrator  # noqa: E402
from ferry.model import MigrationStatus  # noqa: E402
from ferry.persistence.repository import M  # noqa: E402
from tests.infra import postgres, redis  # noqa: E402

DEFAULT_MAX_JOBS = 4


@dataclass
class Throughput:
    conductors: int
    migrations: int
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.migrations / self.seconds if self.seconds else 0.0


@dataclass
class Takeover:
    lease: float
    taken: list[float] = field(default_factory=list)
    resumed: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.005
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def finished(orch: Orchestrator) -> int:
    """Migrations in a terminal status (one small query)."""
    terminal = [s.value for s in MigrationStatus if s.terminal]
    query = sa.select(sa.func.count()).select_from(M).where(M.c.status.in_(terminal))
    with orch.db.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def write_cluster(path: Path, hosts: int, vms: int, memory_mb: int, bandwidth: float) -> list[str]:
    lines = ['name = "jobstore-bench"']
    for h in range(1, hosts + 1):
        lines += [
            "[[hosts]]",
            f'name = "bench-{h}"',
            'hypervisor_type = "qemu"',
            "hypervisor_version = 9001000",
            "vcpus = 4096",
            "memory_mb = 16777216",
            "disk_gb = 100000",
            f"bandwidth_mbps = {bandwidth}",
            'storage_group = "bench-shared"',
        ]
    names = []
    for i in range(vms):
        name = f"vm-{i:04d}"
        names.append(name)
        lines += [
            "[[instances]]",
            f'uuid = "{uuid.uuid5(uuid.NAMESPACE_DNS, name)}"',
            f'name = "{name}"',
            f'host = "bench-{i % hosts + 1}"',
            'power_state = "running"',
            "vcpus = 1",
            f"memory_mb = {memory_mb}",
            "disk_gb = 0",
            "dirty_rate_mbps = 8",
        ]
    path.write_text("\n".join(lines) + "\n")
    return names


def write_config(
    path: Path, db_url: str, board_url: str, cluster: Path, speed: float, lease: float
) -> Path:
    path.write_text(
        f"""
[database]
url = "{db_url}"
[migration]
poll_interval = 0.5
post_retry_delay = 0
[simulated]
cluster = "{cluster}"
speed = {speed}
[jobboard]
url = "{board_url}"
namespace = "bench{uuid.uuid4().hex[:8]}"
[conductor]
lease_seconds = {lease}
poll_interval = 0.05
[limits]
per_source = 0
per_destination = 0
total = 0
"""
    )
    return path


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"ferry_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


class Conductors:
    """``ferry conductor`` processes; each is ready once it has printed its banner."""

    def __init__(self, config: Path, workdir: Path, max_jobs: int) -> None:
        self.config, self.workdir, self.max_jobs = config, workdir, max_jobs
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str) -> None:
        log = self.workdir / f"{name}.log"
        cmd = [sys.executable, "-m", "ferry", "--config", str(self.config), "conductor"]
        cmd += ["--name", name, "--max-jobs", str(self.max_jobs)]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = (proc, log)

    def wait_ready(self) -> None:
        for name, (proc, log) in self.procs.items():
            wait_for(
                lambda p=proc, lg=log: (
                    " job(s) at once from " in lg.read_text(errors="replace")
                    or p.poll() is not None
                ),
                60,
                f"conductor {name} to start",
            )
            if proc.poll() is not None:
                raise RuntimeError(f"conductor {name} exited: {log.read_text()[-2000:]}")

    def pid_of(self, name: str) -> int:
        return self.procs[name][0].pid

    def kill(self, name: str) -> None:
        self.procs[name][0].send_signal(signal.SIGKILL)
        self.procs[name][0].wait(10)

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------ measurements
def measure_throughput(
    admin_url: str, board_url: str, workdir: Path, conductors: int, count: int, max_jobs: int
) -> Throughput:
    result = Throughput(conductors, count)
    run_dir = workdir / f"throughput-{conductors}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cluster = run_dir / "cluster.toml"
    names = write_cluster(cluster, hosts=8, vms=count, memory_mb=256, bandwidth=1200)
    with fresh_database(admin_url) as db_url:
        cfg = write_config(run_dir / "ferry.toml", db_url, board_url, cluster, 0.0, 10.0)
        orch = Orchestrator(config=cfg)
        group = Conductors(cfg, run_dir, max_jobs)
        try:
            for i in range(conductors):
                group.start(f"bench-{conductors}-{i + 1}")
            group.wait_ready()
            mids = [orch.create(n, status=MigrationStatus.QUEUED) for n in names]
            store = orch.jobstore
            started = time.time()
            for mid in mids:
                store.post(mid)
            wait_for(  # polled gently: the machine's CPUs are the conductors'
                lambda: finished(orch) >= count,
                600,
                f"{count} migrations with {conductors} conductor(s)",
                interval=0.25,
            )
            ends = [max(h.at for h in orch.get(m).history) for m in mids]
            result.seconds = max(ends) - started
            statuses: dict[str, int] = {}
            for m in orch.list():
                statuses[m.status] = statuses.get(m.status, 0) + 1
            result.statuses = statuses
        finally:
            group.stop()
            orch.close()
    return result


def measure_takeover(
    admin_url: str, board_url: str, workdir: Path, lease: float, rounds: int
) -> Takeover:
    result = Takeover(lease)
    run_dir = workdir / f"takeover-{lease:g}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cluster = run_dir / "cluster.toml"
    # a transfer of 64 GiB at 1200 MiB/s: ~55 s at speed 1, far longer than any takeover here
    names = write_cluster(cluster, hosts=2, vms=rounds, memory_mb=65536, bandwidth=1200)
    with fresh_database(admin_url) as db_url:
        cfg = write_config(run_dir / "ferry.toml", db_url, board_url, cluster, 1.0, lease)
        orch = Orchestrator(config=cfg)
        group = Conductors(cfg, run_dir, 1)
        try:
            for r, name in enumerate(names):
                group.start(f"a{r}")
                group.start(f"b{r}")
                group.wait_ready()
                mid = orch.submit(name)
                wait_for(
                    lambda m=mid: (orch.get(m).progress or {}).get("percent", 0) > 0.5,
                    120,
                    "the transfer to start",
                )
                owner = orch.leases.get(mid)["owner"]  # type: ignore[index]
                victim, survivor = (
                    (f"a{r}", f"b{r}")
                    if owner.endswith(f":a{r}")
                    else (
                        f"b{r}",
                        f"a{r}",
                    )
                )
                killed = time.time()
                group.kill(victim)
                wait_for(
                    lambda m=mid, s=survivor: (
                        (orch.leases.get(m) or {}).get("owner", "").endswith(f":{s}")
                    ),
                    lease * 4 + 30,
                    "the takeover",
                )
                taken = time.time()
                wait_for(
                    lambda m=mid, t=taken: orch.migrations.field(m, "updated_at") > t,
                    60,
                    "the new owner's first progress report",
                )
                resumed = float(orch.migrations.field(mid, "updated_at"))
                result.taken.append(taken - killed)
                result.resumed.append(resumed - killed)
                orch.abort(mid)
                wait_for(lambda m=mid: orch.get(m).done, 60, "the abort")
                group.stop()
                group.procs.clear()
        finally:
            group.stop()
            orch.close()
    return result


# ------------------------------------------------------------------------------ output
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("taskflow", "SQLAlchemy", "redis", "psycopg"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[dist] = "?"
    return out


def server_versions(admin_url: str, board_url: str) -> dict[str, str]:
    import redis as redis_py

    engine = sa.create_engine(admin_url)
    with engine.connect() as conn:
        pg = str(conn.execute(sa.text("SHOW server_version")).scalar())
    engine.dispose()
    client = redis_py.Redis.from_url(board_url)
    rv = str(client.info("server").get("redis_version"))
    client.close()
    return {"postgresql-server": pg, "redis-server": rv}


def print_tables(throughput: list[Throughput], takeovers: list[Takeover], max_jobs: int) -> None:
    header = f"{'conductors':>10} {'jobs each':>9} {'migrations':>10} {'seconds':>8} {'per s':>7}"
    header += f" {'vs 1':>6}"
    print(header)
    print("-" * len(header))
    base = throughput[0].per_s if throughput else 0.0
    for t in throughput:
        ratio = t.per_s / base if base else 0.0
        print(
            f"{t.conductors:>10} {max_jobs:>9} {t.migrations:>10} {t.seconds:>8.1f} "
            f"{t.per_s:>7.1f} {ratio:>5.2f}x"
        )
    if not takeovers:
        return
    print()
    header = (
        f"{'lease s':>7} {'kills':>5} {'taken over s (median, min-max)':>31} "
        f"{'resumed s (median, min-max)':>28}"
    )
    print(header)
    print("-" * len(header))
    for k in takeovers:
        taken = f"{statistics.median(k.taken):.2f} ({min(k.taken):.2f}-{max(k.taken):.2f})"
        resumed = f"{statistics.median(k.resumed):.2f} ({min(k.resumed):.2f}-{max(k.resumed):.2f})"
        print(f"{k.lease:>7g} {len(k.taken):>5} {taken:>31} {resumed:>28}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--migrations", type=int, default=200, metavar="N")
    parser.add_argument("--conductors", default="1,2,4", metavar="LIST")
    parser.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS, metavar="K")
    parser.add_argument("--lease", default="2,5", metavar="LIST", help="lease seconds to test")
    parser.add_argument("--takeovers", type=int, default=3, metavar="R")
    parser.add_argument("--pg-url", default=os.environ.get("FERRY_TEST_POSTGRES_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("FERRY_TEST_REDIS_URL"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.conductor_counts = [int(x) for x in args.conductors.split(",") if x]
    args.leases = [float(x) for x in args.lease.split(",") if x]
    if args.migrations < 1 or args.max_jobs < 1 or args.takeovers < 0:
        parser.error("--migrations and --max-jobs must be >= 1, --takeovers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ferry-jsbench-")))
        admin_url = args.pg_url
        if not admin_url:
            # its own top-level directory: the server may run as another user (root -> postgres)
            pg_dir = tempfile.mkdtemp(prefix="ferry-jsbench-pg-")
            stack.callback(shutil.rmtree, pg_dir, ignore_errors=True)
            admin_url = postgres.start(pg_dir)
            stack.callback(postgres.stop, pg_dir)
        board_url = args.redis_url
        if not board_url:
            redis_dir = workdir / "redis"
            board_url = redis.start(str(redis_dir))
            stack.callback(redis.stop, str(redis_dir))
        started = time.perf_counter()
        throughput = []
        for k in args.conductor_counts:
            t = measure_throughput(admin_url, board_url, workdir, k, args.migrations, args.max_jobs)
            print(
                f"  {k} conductor(s): {t.migrations} migrations in {t.seconds:.1f} s "
                f"= {t.per_s:.1f}/s {t.statuses}",
                file=sys.stderr,
                flush=True,
            )
            throughput.append(t)
        takeovers = []
        if args.takeovers:
            for lease in args.leases:
                k = measure_takeover(admin_url, board_url, workdir, lease, args.takeovers)
                print(
                    f"  lease {lease:g} s: taken over after {k.taken}, resumed after {k.resumed}",
                    file=sys.stderr,
                    flush=True,
                )
                takeovers.append(k)
        servers = server_versions(admin_url, board_url)
        elapsed = time.perf_counter() - started
    print()
    print(
        "ferry job store: `ferry conductor` processes over one PostgreSQL database and one "
        "Redis board; zero-time transfers (stepped simulated time), no concurrency limits; "
        f"{os.cpu_count()} CPU(s) shared by the conductors, PostgreSQL, Redis and this script"
    )
    print()
    print_tables(throughput, takeovers, args.max_jobs)
    print()
    print(
        "taken over: SIGKILL of the conductor driving a migration -> the other conductor holds "
        "its lease; resumed: -> the new owner's first progress report of the re-attached "
        "transfer"
    )
    print(
        f"total benchmark time {elapsed:.1f} s; "
        + ", ".join(f"{k} {v}" for k, v in {**versions(), **servers}.items())
    )
    if args.json:
        print()
        print(
            json.dumps(
                {
                    "throughput": [
                        {
                            "conductors": t.conductors,
                            "max_jobs": args.max_jobs,
                            "migrations": t.migrations,
                            "seconds": round(t.seconds, 3),
                            "per_s": round(t.per_s, 3),
                            "statuses": t.statuses,
                        }
                        for t in throughput
                    ],
                    "takeover": [
                        {"lease_s": k.lease, "taken_s": k.taken, "resumed_s": k.resumed}
                        for k in takeovers
                    ],
                    "elapsed_s": round(elapsed, 2),
                    "versions": {**versions(), **servers},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
