"""A migration (or a resume) on the XenAPI driver in a real subprocess that SIGKILLs itself at a
chosen point; the XAPI simulator lives in the parent (it must outlive this process).

    python -m tests.crash.xenapi_runner DB_URL CLOCK_URL HOSTS_JSON migrate VM [--to HOST]
        [--kill-at POINT]
    python -m tests.crash.xenapi_runner DB_URL CLOCK_URL HOSTS_JSON resume MIGRATION_ID

``HOSTS_JSON``: the ``[[hosts]]`` entries (no secrets: the password is in the environment
variable they name). ``CLOCK_URL``: a :class:`ClockServer` of the parent, through which this
process reads and advances the simulator's stepped clock (every poll of the monitor advances it,
as in the in-process tests). Kill points as in :mod:`tests.crash.runner`. The migration id is
printed first, the final status last.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import xmlrpc.client
from typing import Any
from xmlrpc.server import SimpleXMLRPCServer

from ferry import FerryError, Orchestrator
from ferry.config import HostConfig, MigrationSettings, Settings
from ferry.drivers.xenapi import XenAPIDriver
from tests.crash.runner import make_trap


class ClockServer:
    """Serves a stepped clock (``now()`` / ``advance(s)``) to child processes on 127.0.0.1."""

    def __init__(self, clock: Any) -> None:
        self._server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=False)
        self._server.register_function(lambda: float(clock.now()), "now")

        def advance(seconds: float) -> bool:
            clock.advance(float(seconds))
            return True

        self._server.register_function(advance, "advance")
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ClockServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class RemoteClock:
    """ferry's Clock on a parent's :class:`ClockServer`."""

    def __init__(self, url: str) -> None:
        self._proxy = xmlrpc.client.ServerProxy(url, allow_none=False)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return float(self._proxy.now())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._proxy.advance(float(seconds))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("clock")
    ap.add_argument("hosts")
    ap.add_argument("mode", choices=["migrate", "resume"])
    ap.add_argument("target")
    ap.add_argument("--to", default=None)
    ap.add_argument("--kill-at", default=None)
    args = ap.parse_args()

    entries = json.loads(args.hosts)
    configs = [
        HostConfig(
            e["name"], e["driver"], {k: v for k, v in e.items() if k not in ("name", "driver")}
        )
        for e in entries
    ]
    driver = XenAPIDriver.from_host_configs(configs, clock=RemoteClock(args.clock))
    settings = Settings(migration=MigrationSettings(post_retry_delay=0.0))
    orch = Orchestrator(args.db, settings=settings, drivers=[driver])
    if args.kill_at:
        orch.subscribe(make_trap(args.kill_at, signal.SIGKILL))
    mid = orch.create(args.target, destination=args.to) if args.mode == "migrate" else args.target
    print(mid, flush=True)
    try:
        m = orch.resume(mid)
    except FerryError as exc:
        m = getattr(exc, "migration", None)
        if m is None:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    print(m.status, flush=True)
    return 0 if m.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
