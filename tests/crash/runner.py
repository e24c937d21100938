"""Runs one migration (or a resume) in a real subprocess and SIGKILLs itself at a chosen point.

    python -m tests.crash.runner DB_URL migrate VM [--to HOST] --kill-at started:transfer
    python -m tests.crash.runner DB_URL resume MIGRATION_ID

Kill points: ``started:ATOM`` (the atom is persisted RUNNING), ``done:ATOM`` (persisted SUCCESS),
``reverted:ATOM`` (persisted REVERTED), ``progress:PCT`` (the transfer reported >= PCT percent).
The migration id is printed on the first line before anything runs, so the parent can resume it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from ferry import FerryError, Orchestrator
from ferry.config import Settings, SimulatedSettings
from ferry.context import Event

KINDS = {"started": "phase_started", "done": "phase_done", "reverted": "phase_reverted"}


def make_trap(spec: str, sig: int) -> Callable[[Event], None]:
    point, _, arg = spec.partition(":")
    fired = []

    def on_event(event: Event) -> None:
        if fired:
            return
        if point == "progress":
            hit = event.kind == "progress" and float(event.data.get("percent", 0)) >= float(arg)
        else:
            hit = event.kind == KINDS[point] and event.phase == arg
        if hit:
            fired.append(True)
            os.kill(os.getpid(), sig)

    return on_event


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("mode", choices=["migrate", "resume"])
    ap.add_argument("target")
    ap.add_argument("--to", default=None)
    ap.add_argument("--kill-at", default=None)
    ap.add_argument(
        "--stop-at", default=None, help="like --kill-at, but SIGSTOP (the process stays alive)"
    )
    args = ap.parse_args()

    settings = Settings(simulated=SimulatedSettings(speed=0.0))
    orch = Orchestrator(args.db, settings=settings)

    for spec, sig in ((args.kill_at, signal.SIGKILL), (args.stop_at, signal.SIGSTOP)):
        if spec:
            orch.subscribe(make_trap(spec, sig))

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
