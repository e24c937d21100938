#!/usr/bin/env python3
"""Latency of ``ferry serve``'s JSON API under concurrent clients: p50/p99 of ``GET
/api/v1/migrations`` (a page of 50), ``GET /api/v1/migrations/{id}`` and ``POST
/api/v1/migrations``.

A real server (:class:`ferry.serve.ServiceServer`, werkzeug's threaded server on 127.0.0.1, a
fresh SQLite file) over a simulated cluster of ``--guests`` small guests on 5 hosts in stepped
time (``speed = 0``: transfers take no wall time). First ``--guests`` POSTs for distinct guests,
``--concurrency`` at a time (each persisted before its 202, while the accepted ones run in the
server's workers); then, once they have all completed, ``--requests`` GETs of each kind, the same
concurrency. Each request is one HTTP/1.1 connection of the standard library's http.client with
a bearer token; its time is from connect to the last byte of the reply. Every reply must be 200
or 202. Run from the repository root::

    python benchmarks/serve_latency.py [--guests 50] [--requests 400] [--concurrency 16] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ferry import Orchestrator  # noqa: E402
from ferry.config import MigrationSettings, Settings, SimulatedSettings  # noqa: E402
from ferry.context import Event  # noqa: E402
from ferry.model import MigrationStatus  # noqa: E402
from ferry.serve import ServiceServer, TokenStore  # noqa: E402

HOSTS = 5


def write_cluster(path: Path, guests: int) -> Path:
    lines = ['name = "serve-latency"']
    for h in range(HOSTS):
        lines += [
            "[[hosts]]",
            f'name = "h{h}"',
            'hypervisor_type = "qemu"',
            "hypervisor_version = 9001000",
            "vcpus = 512",
            "memory_mb = 1048576",
            "disk_gb = 10000",
            "bandwidth_mbps = 1200",
            'storage_group = "shared"',
        ]
    for n in range(guests):
        lines += [
            "[[instances]]",
            f'uuid = "00000000-0000-4000-8000-{n:012d}"',
            f'name = "g-{n:03d}"',
            f'host = "h{n % HOSTS}"',
            'power_state = "running"',
            "vcpus = 1",
            "memory_mb = 256",
            "disk_gb = 0",
            "dirty_rate_mbps = 8",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(
    port: int, method: str, path: str, token: str, body: Any = None
) -> tuple[float, int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    return time.perf_counter() - start, resp.status, payload


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=50, help="guests = POSTs (default 50)")
    parser.add_argument("--requests", type=int, default=400, help="GETs of each kind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    workdir = Path(tempfile.mkdtemp(prefix="ferry-serve-latency-"))
    settings = Settings(
        simulated=SimulatedSettings(
            cluster=str(write_cluster(workdir / "cluster.toml", args.guests)), speed=0.0
        ),
        migration=MigrationSettings(post_retry_delay=0.0),
    )
    orch = Orchestrator(f"sqlite:///{workdir / 'serve.db'}", settings=settings)
    tokens = TokenStore(orch.db)
    _, operator = tokens.create("bench-ops", "operator")
    _, reader = tokens.create("bench-read", "reader")
    done = threading.Semaphore(0)

    def on_event(event: Event) -> None:
        if event.kind == "status" and MigrationStatus(event.status).terminal:
            done.release()

    orch.subscribe(on_event)
    server = ServiceServer(orch, "127.0.0.1:0").start()
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    results: dict[str, list[float]] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            print(f"POST x {args.guests} ...", file=sys.stderr)
            posts = list(
                pool.map(
                    lambda n: timed(
                        port, "POST", "/api/v1/migrations", operator, {"instance": f"g-{n:03d}"}
                    ),
                    range(args.guests),
                )
            )
            assert {s for _, s, _ in posts} == {202}, {s for _, s, _ in posts}
            ids = [json.loads(p)["id"] for _, _, p in posts]
            for _ in ids:
                assert done.acquire(timeout=300), "a migration did not finish"
            results["POST /api/v1/migrations"] = [t for t, _, _ in posts]
            for label, path in (
                ("GET /api/v1/migrations", "/api/v1/migrations"),
                ("GET /api/v1/migrations/{id}", None),
            ):
                print(f"{label} x {args.requests} ...", file=sys.stderr)
                replies = list(
                    pool.map(
                        lambda n, path=path: timed(
                            port, "GET", path or f"/api/v1/migrations/{ids[n % len(ids)]}", reader
                        ),
                        range(args.requests),
                    )
                )
                assert {s for _, s, _ in replies} == {200}
                results[label] = [t for t, _, _ in replies]
    finally:
        server.shutdown()
        orch.close()
    rows = {
        label: {
            "n": len(times),
            "p50_ms": percentile(times, 0.5) * 1000,
            "p99_ms": percentile(times, 0.99) * 1000,
            "mean_ms": statistics.fmean(times) * 1000,
        }
        for label, times in results.items()
    }
    print(f"concurrency {args.concurrency}, {args.guests} migrations in the database")
    print("| request | n | p50 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for label in (
        "GET /api/v1/migrations",
        "GET /api/v1/migrations/{id}",
        "POST /api/v1/migrations",
    ):
        r = rows[label]
        print(
            f"| `{label}` | {r['n']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_ms']:.1f} |"
        )
    if args.json:
        print(json.dumps({"concurrency": args.concurrency, "guests": args.guests, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
