#!/usr/bin/env python3
"""The scheduler at scale: destination selection with NUMA fit among 1,000 / 10,000 / 50,000
cached hosts, and claims per second under contention on PostgreSQL.

Selection goes through the wired path the ``schedule`` task uses: the host state cache in the
database, filled by ``ClaimRepository.refresh_hosts`` from synthetic driver reports (2 or 4 NUMA
cells of 8-32 pCPUs, pinned guests already placed so that many hosts have their free pCPUs split
across cells, 1 % down or disabled, 2 % of another hypervisor, host groups), with in-flight
claims taken by ``ClaimRepository.claim_resources`` on 5 % of the hosts; then
``HostScheduler.select(instance, source)``, i.e. the SQL pre-filter, the weighers and the Python
filters on the best candidates. Guests rotate between pinned and unpinned requests of several
sizes. Columns:

  p50 / p99 / mean   wall time per selection
  +claim p50         selection plus the claim on the chosen host (pCPUs of one cell for pinned
                     guests) and its release
  no-host ms         one selection that fails (a pinned guest no cell can hold): every cached
                     host goes through the Python filters for NoValidHost's reasons
  survivors          hosts left by the SQL pre-filter for the last pinned guest
  select MiB         peak Python memory of one selection (tracemalloc)
  build s            writing the synthetic reports and claims into the cache (not timed above)

Claims per second: ``--workers`` processes take and release claims of 2-vCPU guests as fast as
they can for ``--seconds`` s, each trying the hosts in a random order until one claim holds;
``hot`` puts all of them on 1 host with room for 4 guests (2 NUMA cells of 4 pCPUs), ``spread``
on 200 such hosts; ``pinned`` guests claim pCPUs of one cell (row lock, fit, pCPU rows),
``floating`` ones only vCPUs/RAM/disk (one conditional UPDATE). The run checks afterwards that
every counter is back to zero and no pCPU row is left.

PostgreSQL: ``--pg URL`` (an admin URL; a database is created and dropped), else a throwaway
server from ``tests/infra/postgres.py`` when the server binaries are installed, else skipped.

Run from the repository root::

    python benchmarks/scheduler_scale.py [--hosts 1000,10000,50000] [--selections 200]
        [--workers 8] [--seconds 5] [--pg URL] [--no-pg] [--seed 7]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferry.errors import NoValidHost  # noqa: E402
from ferry.model import Host, Instance  # noqa: E402
from ferry.model.numa import GuestRequest, HostNumaState, NumaTopology, Pinning  # noqa: E402
from ferry.persistence.db import Database  # noqa: E402
from ferry.scheduler.repository import ClaimRepository  # noqa: E402
from ferry.scheduler.scheduler import HostScheduler  # noqa: E402

TARGET_HOSTS = 10_000
TARGET_P50_MS = 50.0
SOURCE = "source"
BATCH = 2_000

GUESTS: tuple[Instance, ...] = tuple(
    Instance(
        f"u{k}",
        f"vm{k}",
        SOURCE,
        vcpus=v,
        memory_mb=m,
        disk_gb=20,
        extra={"cpu_policy": "dedicated"} if pin else {},
    )
    for k, (v, m, pin) in enumerate(
        ((4, 8192, True), (8, 16384, True), (16, 32768, True), (2, 4096, False), (12, 65536, True))
    )
)
#: a pinned guest no synthetic cell can hold (64 pCPUs): the NoValidHost path
TOO_BIG = Instance("big", "big", SOURCE, vcpus=64, memory_mb=1024, extra={"pinned": True})


# --------------------------------------------------------------------------- synthetic cache
def synthetic_host(name: str, rng: random.Random) -> Host:
    cells = rng.choice((2, 2, 4))
    per_cell = rng.choice((8, 16, 32))
    mem_per_cell = rng.choice((65_536, 131_072))
    state = HostNumaState(NumaTopology.uniform(cells, per_cell, mem_per_cell))
    for _ in range(rng.randint(0, cells * 3)):  # pinned guests, fragmenting the cells
        guest = GuestRequest(rng.choice((1, 2, 4, 8)), rng.choice((2048, 4096, 8192, 16384)))
        placed = state.fit(guest)
        if isinstance(placed, Pinning):
            state = state.with_pinning(placed)
    vcpus, memory_mb = cells * per_cell, cells * mem_per_cell
    pinned = sum(len(p) for p in state.pinned_by_cell.values())
    used_mb = sum(state.used_mb_by_cell.values())
    labels = {"rack": f"r{rng.randint(1, 40)}"}
    if rng.random() < 0.1:
        labels["group"] = rng.choice(("gpu", "ssd", "edge"))
    return Host(
        name=name,
        driver="sim",
        hypervisor_type="qemu" if rng.random() > 0.02 else "xen",
        hypervisor_version=rng.choice((9_000_000, 9_001_000, 9_002_000)),
        vcpus=vcpus,
        memory_mb=memory_mb,
        disk_gb=2_000,
        vcpus_used=min(vcpus, pinned + rng.randint(0, 4)),
        memory_mb_used=min(memory_mb, used_mb + rng.randint(0, 8192)),
        disk_gb_used=rng.randint(0, 1_500),
        up=rng.random() > 0.01,
        enabled=rng.random() > 0.01,
        labels=labels,
    )


def build_cache(db: Database, n: int, rng: random.Random) -> float:
    """``n`` hosts plus the source in the cache (the refresh path), claims on 5 % of them."""
    t0 = time.perf_counter()
    repo = ClaimRepository(db)
    source = Host(SOURCE, "sim", "qemu", 9_001_000, 64, 262_144, 2_000)
    names = [f"host-{i:05d}" for i in range(n)]
    for start in range(0, n, BATCH):
        reports = [synthetic_host(h, rng) for h in names[start : start + BATCH]]
        if start == 0:
            reports.append(source)
        repo.refresh_hosts(reports)
    for k, h in enumerate(rng.sample(names, n // 20)):
        inst = Instance(
            f"c{k}",
            f"c{k}",
            SOURCE,
            vcpus=rng.randint(1, 4),
            memory_mb=rng.choice((2048, 8192)),
            disk_gb=rng.randint(1, 40),
            extra={"pinned": rng.random() < 0.5},
        )
        repo.claim_resources(f"inflight-{k}", h, inst, source=SOURCE)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------- selection
@dataclass
class SelectRow:
    backend: str
    hosts: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    claim_p50_ms: float
    no_host_ms: float
    survivors: int
    select_peak_mib: float
    build_s: float
    no_valid_host: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_selection(db: Database, backend: str, n: int, selections: int, seed: int) -> SelectRow:
    rng = random.Random(seed)
    build_s = build_cache(db, n, rng)
    sched = HostScheduler(db)
    repo = ClaimRepository(db)
    sched.select(GUESTS[0], SOURCE)  # warm-up: statement compilation, caches
    times: list[float] = []
    with_claim: list[float] = []
    no_host = 0
    for k in range(selections):
        inst = GUESTS[k % len(GUESTS)]
        t0 = time.perf_counter()
        try:
            chosen = sched.select(inst, SOURCE)
        except NoValidHost:
            no_host += 1
            times.append(time.perf_counter() - t0)
            continue
        t1 = time.perf_counter()
        held = repo.claim_resources(f"bench-{k}", chosen, inst, source=SOURCE)
        t2 = time.perf_counter()
        times.append(t1 - t0)
        with_claim.append(t2 - t0)
        if not held.ok:
            raise SystemExit(f"the chosen host {chosen} refused the claim: {held.reason}")
        if GuestRequest.from_instance(inst).pinned:
            assert held.pinning is not None and len(held.pinning.vcpu_to_pcpu) == inst.vcpus
        repo.release(f"bench-{k}")
    t0 = time.perf_counter()
    try:
        sched.select(TOO_BIG, SOURCE)
        raise SystemExit("a 64-vCPU pinned guest found a cell")
    except NoValidHost as exc:
        no_host_ms = (time.perf_counter() - t0) * 1000
        assert len(exc.reasons) >= n
    src = sched.states([SOURCE])[0].host
    with db.connect() as conn:
        survivors = len(conn.execute(sched.candidates_query(GUESTS[1], src)).all())
    tracemalloc.start()
    tracemalloc.reset_peak()
    sched.select(GUESTS[1], SOURCE)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ms = [t * 1000 for t in times]
    return SelectRow(
        backend=backend,
        hosts=n,
        p50_ms=statistics.median(ms),
        p99_ms=percentile(ms, 0.99),
        mean_ms=statistics.fmean(ms),
        claim_p50_ms=statistics.median(t * 1000 for t in with_claim) if with_claim else 0.0,
        no_host_ms=no_host_ms,
        survivors=survivors,
        select_peak_mib=peak / 2**20,
        build_s=build_s,
        no_valid_host=no_host,
    )


def print_selection(rows: list[SelectRow], selections: int) -> None:
    print(f"Destination selection with NUMA fit ({selections} selections per size)")
    header = (
        f"{'backend':<10} | {'hosts':>6} | {'p50 ms':>7} | {'p99 ms':>7} | {'mean ms':>7} | "
        f"{'+claim p50':>10} | {'no-host ms':>10} | {'survivors':>9} | {'select MiB':>10} | "
        f"{'build s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.backend:<10} | {r.hosts:>6} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | "
            f"{r.mean_ms:>7.2f} | {r.claim_p50_ms:>10.2f} | {r.no_host_ms:>10.1f} | "
            f"{r.survivors:>9} | {r.select_peak_mib:>10.2f} | {r.build_s:>7.1f}"
            + (f"  ({r.no_valid_host} NoValidHost)" if r.no_valid_host else "")
        )
    print()


# ------------------------------------------------------------------------ claims per second
TWO = Instance("w", "w", SOURCE, vcpus=2, memory_mb=1024, disk_gb=1, extra={"pinned": True})
#: the same guest unpinned: its claim is the conditional UPDATE alone (room for 4 by vCPUs)
TWO_FLOATING = Instance("w", "w", SOURCE, vcpus=2, memory_mb=1024, disk_gb=1)


def claim_host(name: str) -> Host:
    """8 pCPUs in 2 cells of 4 (room for 2 pinned 2-vCPU guests per cell)."""
    topo = NumaTopology.uniform(cells=2, cpus_per_cell=4, memory_mb_per_cell=65_536)
    return Host(
        name,
        "sim",
        "qemu",
        9_001_000,
        8,
        131_072,
        1_000,
        numa=HostNumaState(topo),
    )


def _claim_worker(
    url: str, hosts: list[str], guest: Instance, seconds: float, worker: int, barrier: Any, out: Any
) -> None:  # runs in a forked process
    db = Database(url)
    repo = ClaimRepository(db)
    rng = random.Random(worker)
    held = refused = 0
    barrier.wait()
    deadline = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < deadline:
        k += 1
        mid = f"w{worker}-{k}"
        for h in rng.sample(hosts, len(hosts)):
            result = repo.claim_resources(mid, h, guest)
            if result.ok:
                held += 1
                repo.release(mid)
                break
            refused += 1
    db.close()
    out.put((held, refused))


@dataclass
class ClaimRow:
    mode: str
    guest: str
    hosts: int
    workers: int
    seconds: float
    held: int
    refused: int

    @property
    def per_second(self) -> float:
        return self.held / self.seconds


def bench_claims(
    url: str, mode: str, n_hosts: int, pinned: bool, workers: int, seconds: float
) -> ClaimRow:
    db = Database(url)
    db.upgrade()
    hosts = [f"{mode}-{i:03d}" for i in range(n_hosts)]
    ClaimRepository(db).refresh_hosts([claim_host(h) for h in hosts])
    db.close()
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(
            target=_claim_worker,
            args=(url, hosts, TWO if pinned else TWO_FLOATING, seconds, w, barrier, out),
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    counts = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    db = Database(url)
    repo = ClaimRepository(db)
    left = [s for s in repo.host_states(hosts) if s.claimed != (0, 0, 0) or s.in_flight]
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM ferry_pcpu_claims")).scalar()
    db.close()
    if left or rows:
        raise SystemExit(f"claims left behind after the run: {left} / {rows} pCPU rows")
    return ClaimRow(
        mode,
        "pinned" if pinned else "floating",
        n_hosts,
        workers,
        seconds,
        sum(c[0] for c in counts),
        sum(c[1] for c in counts),
    )


def print_claims(rows: list[ClaimRow]) -> None:
    print("Claims per second under contention on PostgreSQL (each: claim, then release)")
    header = (
        f"{'mode':<7} | {'guest':<8} | {'hosts':>5} | {'workers':>7} | {'claims/s':>8} | "
        f"{'refused/s':>9} | {'refused %':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        total = r.held + r.refused
        print(
            f"{r.mode:<7} | {r.guest:<8} | {r.hosts:>5} | {r.workers:>7} | {r.per_second:>8.0f} | "
            f"{r.refused / r.seconds:>9.0f} | {100 * r.refused / max(total, 1):>8.1f}%"
        )
    print()


# ----------------------------------------------------------------------------------- driver
@contextlib.contextmanager
def postgres(url: str | None, disabled: bool) -> Iterator[str | None]:
    """An admin URL of a PostgreSQL server (given, or a throwaway one), or None."""
    if disabled:
        yield None
        return
    if url:
        yield url
        return
    try:
        import psycopg  # noqa: F401

        from tests.infra import postgres as pg
    except ImportError:
        yield None
        return
    if pg.pg_bin() is None:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="ferry-bench-pg-")
    try:
        yield pg.start(directory)
    finally:
        pg.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
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


def main(argv: Sequence[str] | None = None) -> int:
    summary = " ".join(__doc__.split("\n\n")[0].split()) if __doc__ else None
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument(
        "--hosts", default="1000,10000,50000", help="comma-separated cache sizes (%(default)s)"
    )
    parser.add_argument(
        "--selections", type=int, default=200, help="timed selections per size (%(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="claiming processes on PostgreSQL (%(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each claims run (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic hosts' seed (%(default)s)")
    parser.add_argument("--pg", default=None, metavar="URL", help="PostgreSQL admin URL")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.hosts.split(",") if s]

    rows: list[SelectRow] = []
    claims: list[ClaimRow] = []
    with postgres(args.pg, args.no_pg) as admin_url:
        for n in sizes:
            workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-sched-"))
            try:
                db = Database(f"sqlite:///{workdir / 'cache.db'}")
                db.upgrade()
                rows.append(bench_selection(db, "sqlite", n, args.selections, args.seed))
                db.close()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            print(f"  sqlite {n} hosts done", file=sys.stderr)
            if admin_url is not None:
                with pg_database(admin_url) as url:
                    db = Database(url)
                    db.upgrade()
                    rows.append(bench_selection(db, "postgresql", n, args.selections, args.seed))
                    db.close()
                print(f"  postgresql {n} hosts done", file=sys.stderr)
        if admin_url is not None:
            for mode, n_hosts, pinned in (
                ("hot", 1, True),
                ("spread", 200, True),
                ("hot", 1, False),
                ("spread", 200, False),
            ):
                with pg_database(admin_url) as url:
                    claims.append(
                        bench_claims(url, mode, n_hosts, pinned, args.workers, args.seconds)
                    )
    if rows:
        print_selection(rows, args.selections)
    if claims:
        print_claims(claims)
    else:
        print("Claims per second on PostgreSQL: skipped (--no-pg, or no PostgreSQL server here)\n")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process: {peak_rss:.0f} MiB")
    status = 0
    for r in rows:
        if r.hosts == TARGET_HOSTS:
            ok = r.p50_ms <= TARGET_P50_MS
            status |= 0 if ok else 1
            print(
                f"target ({r.backend}): p50 <= {TARGET_P50_MS:.0f} ms at {TARGET_HOSTS} hosts: "
                f"{'PASS' if ok else 'FAIL'} (p50 {r.p50_ms:.2f} ms)"
            )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
