#!/usr/bin/env python3
"""The migration transport on the project's real libvirt test hosts: plain vs TLS vs parallel 4
vs parallel 4 + zstd vs xbzrle (the ``[libvirt]`` options of ferry.transport).

Brings up the three hosts of ``tests/infra/libvirt_hosts.py`` on their own subnet (A and B have
TLS certificates), starts one "idle" guest (RAM filled with pseudo-random data, then halted) on
lv-a and moves it back and forth between lv-a and lv-b. Every migration is **its own process**
(``transport.py --child``: a fresh LibvirtDriver, its destination and source checks, pre-live-
migration and the transfer), and the configurations **alternate**: round r runs them in an order
rotated by r, so each follows each other one and goes A->B and B->A about equally often.

Per configuration: the median and min-max of the wall time of the transfer (start_transfer to
its end, in the child), libvirt's downtime and the bytes the source sent (the completed job's
``downtime`` and ``data_processed``), and the destination QEMU's CPU seconds at the end (user +
system: the incoming side's decryption and decompression). TLS's cost is the ratio of its medians
to plain's. A configuration the destination check refuses (zstd on libvirt < 9.4) is reported
with the check's reason instead of figures.

Needs root, libvirt-daemon, qemu-system-x86, gcc (the fill kernel), openssl (the certificates)
and libvirt-python. From the repository root::

    python benchmarks/transport.py [--runs 5] [--memory 256] [--net 10.82.0] [--bandwidth 0]
                                   [--json]

Progress goes to stderr, the table (Markdown) to stdout. The machine is shared: the load average
is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.libvirt_vs_virsh import hosts_up, load, note  # noqa: E402
from ferry.transport import Transport  # noqa: E402
from tests.infra import guest as guests  # noqa: E402
from tests.infra.libvirt_hosts import LibvirtHosts  # noqa: E402

CONFIGS: dict[str, Transport] = {
    "plain": Transport(),
    "tls": Transport(tls=True),
    "parallel 4": Transport(parallel_connections=4),
    "parallel 4 + zstd": Transport(parallel_connections=4, compression="zstd"),
    "xbzrle": Transport(compression="xbzrle"),  # the compression libvirt < 9.4 has
}
GUEST = "bench-transport"


def child(directory: str, config: str, source: str, destination: str, bandwidth: int) -> int:
    """One migration of GUEST from ``source`` to ``destination`` with ``config``; prints JSON."""
    import libvirt

    from ferry.drivers.base import TransferPolicy
    from ferry.errors import MigrationPreCheckError
    from tests.libvirt.helpers import make_driver

    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    env = LibvirtHosts(directory)
    hosts = {h.name: {"config": h.ferry_config()} for h in env.hosts().values()}
    driver = make_driver(hosts)
    out: dict[str, Any] = {"config": config, "from": source, "to": destination}
    try:
        inst = driver.find_instance(GUEST)
        assert inst is not None and inst.host == source, inst
        try:
            data = driver.check_can_live_migrate_destination(
                inst, destination, None, CONFIGS[config]
            )
        except MigrationPreCheckError as exc:
            out["refused"] = exc.reason
            print(json.dumps(out))
            return 0
        data = driver.check_can_live_migrate_source(inst, data)
        driver.cleanup_live_migration_destination_check(destination, data)
        data = driver.pre_live_migration(inst, data)
        t0 = time.perf_counter()
        driver.start_transfer(inst, data, TransferPolicy(bandwidth_mbps=bandwidth))
        while driver.transfer_progress(inst, data).state in ("none", "starting", "running"):
            driver.wait_transfer_end(inst, data, 1.0)
        out["wall_s"] = time.perf_counter() - t0
        p = driver.transfer_progress(inst, data)
        assert p.state == "completed", p
        conn = libvirt.open(env.hosts()[_key(env, destination)].unix_uri)
        dom = conn.lookupByName(GUEST)
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        out["downtime_ms"] = stats.get("downtime")
        out["bytes"] = stats.get("data_processed") or stats.get("memory_processed")
        out["dest_cpu_s"] = _qemu_cpu(env, destination)
        conn.close()
    finally:
        driver.close()
    print(json.dumps(out))
    return 0


def _key(env: LibvirtHosts, name: str) -> str:
    return next(k for k, h in env.hosts().items() if h.name == name)


def _qemu_cpu(env: LibvirtHosts, host: str) -> float | None:
    """User + system CPU seconds of the host's QEMU running GUEST."""
    pidfile = env.settings.directory / _key(env, host) / "run" / "qemu" / f"{GUEST}.pid"
    try:
        fields = Path(f"/proc/{pidfile.read_text().strip()}/stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return None
    parts = fields.split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def run_child(directory: Path, config: str, src: str, dst: str, bandwidth: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", str(directory), config, src, dst, str(bandwidth)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"child {config} {src}->{dst} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for config in CONFIGS:
        mine = [r for r in runs if r["config"] == config]
        done = [r for r in mine if "refused" not in r]
        row: dict[str, Any] = {"runs": len(done)}
        if not done:
            row["refused"] = mine[0]["refused"] if mine else "not run"
        for k in ("wall_s", "downtime_ms", "bytes", "dest_cpu_s"):
            vals = [float(r[k]) for r in done if r.get(k) is not None]
            row[k] = median(vals)
            row[k + "_range"] = (min(vals), max(vals)) if vals else None
        out[config] = row
    return out


def print_table(summary: dict[str, dict[str, Any]], memory: int, bandwidth: int) -> None:
    cap = f", bandwidth cap {bandwidth} MiB/s" if bandwidth else ", no bandwidth cap"
    print(f"\n### {memory} MiB idle guest, lv-a <-> lv-b{cap} (measured with other load)\n")
    print("| transport | runs | wall s (min-max) | downtime ms | MiB sent | dest QEMU CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config, r in summary.items():
        if r.get("refused"):
            print(f"| {config} | 0 | refused by the destination check: {r['refused']} | | | |")
            continue
        lo, hi = r["wall_s_range"]
        mib = r["bytes"] / 2**20 if r["bytes"] is not None else None
        cpu = f"{r['dest_cpu_s']:.2f}" if r["dest_cpu_s"] is not None else "-"
        dt = f"{r['downtime_ms']:.0f}" if r["downtime_ms"] is not None else "-"
        sent = f"{mib:.1f}" if mib is not None else "-"
        wall = f"{r['wall_s']:.2f} ({lo:.2f}-{hi:.2f})"
        print(f"| {config} | {r['runs']} | {wall} | {dt} | {sent} | {cpu} |")
    plain, tls = summary["plain"], summary["tls"]
    if plain.get("wall_s") and tls.get("wall_s"):
        ratio = tls["wall_s"] / plain["wall_s"]
        cpu = ""
        if plain.get("dest_cpu_s") and tls.get("dest_cpu_s"):
            cpu = f", destination QEMU CPU {tls['dest_cpu_s'] / plain['dest_cpu_s']:.2f}x"
        print(f"\nTLS / plain: wall time {ratio:.2f}x{cpu}; load average {load()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="migrations per configuration (>= 1)")
    p.add_argument("--memory", type=int, default=256, help="guest RAM in MiB")
    p.add_argument("--net", default="10.82.0", help="the hosts' subnet (three octets)")
    p.add_argument("--bandwidth", type=int, default=0, help="MiB/s cap; 0 = none")
    p.add_argument("--json", action="store_true", help="also print every run as JSON")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        d, config, src, dst, bw = args.child
        return child(d, config, src, dst, int(bw))
    if os.geteuid() != 0:
        print("transport: must run as root (network namespaces, libvirtd)", file=sys.stderr)
        return 2
    directory = Path(tempfile.gettempdir()) / f"ferry-bench-transport-{args.net}"
    runs: list[dict[str, Any]] = []
    with hosts_up(directory, args.net, keep=False) as env:
        import libvirt

        conn = libvirt.open(env["A"].unix_uri)
        guests.start_guest(
            conn,
            GUEST,
            host="A",
            memory_mib=args.memory,
            kernel="idle",
            console_dir=env.settings.directory / "console",
        )
        conn.close()
        names = list(CONFIGS)
        where = "lv-a"
        for r in range(args.runs):
            order = names[r % len(names) :] + names[: r % len(names)]
            for config in order:
                dst = "lv-b" if where == "lv-a" else "lv-a"
                result = run_child(env.settings.directory, config, where, dst, args.bandwidth)
                runs.append(result)
                if "refused" not in result:
                    where = dst
                note(f"round {r + 1}/{args.runs} {config}: {result}")
    summary = summarize(runs)
    print_table(summary, args.memory, args.bandwidth)
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
