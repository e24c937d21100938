"""Runs a drain (or its resume) in a real subprocess and SIGKILLs itself at a chosen moment.

    python -m tests.drain.crash_runner CONFIG DB_URL drain HOST --max-parallel 2 --kill-at SPEC \
        [--order largest] [--not-together VM,VM,...]
    python -m tests.drain.crash_runner CONFIG DB_URL resume DRAIN_ID [--kill-at SPEC]

``SPEC`` is ``KIND:ARG:N``, the N-th event of: ``drain:STATE`` (a guest's state recorded),
``status:STATUS`` (a migration's status change), ``started:ATOM`` / ``done:ATOM`` (an atom
persisted RUNNING / SUCCESS), ``progress:PCT`` (a transfer reported >= PCT percent). The drain
id is printed on the first line before anything runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from ferry import Orchestrator
from ferry.context import Event
from ferry.drain.service import DrainOptions

KINDS = {"started": "phase_started", "done": "phase_done"}


def make_trap(spec: str) -> Callable[[Event], None]:
    kind, arg, count = spec.split(":")
    seen = [0]
    lock = threading.Lock()

    def hit(event: Event) -> bool:
        if kind == "drain":
            return event.kind == "drain" and "instance" in event.data and event.status == arg
        if kind == "status":
            return event.kind == "status" and event.status == arg
        if kind == "progress":
            return event.kind == "progress" and float(event.data.get("percent", 0)) >= float(arg)
        return event.kind == KINDS[kind] and event.phase == arg

    def on_event(event: Event) -> None:
        if hit(event):
            with lock:
                seen[0] += 1
                if seen[0] == int(count):
                    os.kill(os.getpid(), signal.SIGKILL)

    return on_event


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("db")
    ap.add_argument("mode", choices=["drain", "resume"])
    ap.add_argument("target")
    ap.add_argument("--max-parallel", type=int, default=2)
    ap.add_argument("--order", default="smallest")
    ap.add_argument("--not-together", action="append", default=[])
    ap.add_argument("--kill-at", default=None)
    args = ap.parse_args()
    orch = Orchestrator(args.db, config=args.config)
    if args.kill_at:
        orch.subscribe(make_trap(args.kill_at))
    if args.mode == "drain":
        groups = tuple(tuple(g.split(",")) for g in args.not_together)
        options = DrainOptions(
            args.target, args.max_parallel, order=args.order, not_together=groups
        )
        drain_id = orch.drain_service.start(options)
    else:
        drain_id = args.target
    print(drain_id, flush=True)
    d = orch.resume(drain_id)
    print(d.status, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
