"""Runs one migration in a real subprocess and puts an SQLite fault on ferry's database at a
chosen point (tests/faults/sqlite.py); the simulated cluster (the hypervisor) lives in a
database of its own, which the fault does not touch.

    python -m tests.faults.runner DB_PATH HV_URL KIND POINT

Points as in tests/crash/runner.py (``started:ATOM``, ``done:ATOM``, ``progress:PCT``). Prints
the migration id first, then its status; the error, one line, on stderr. Exit 0 completed,
1 another end, 2 the database refused a write (resumable), 3 anything else.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from taskflow import storage

from ferry import DatabaseUnavailable, FerryError, Orchestrator
from ferry.context import Event
from ferry.drivers.simulated import SimulatedDriver
from ferry.persistence import db as db_module
from ferry.persistence.db import Database
from tests.conftest import fast_settings
from tests.crash.runner import KINDS
from tests.faults import sqlite as faults


def main() -> int:
    db_path, hv_url, kind, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    # tuning, not behaviour: "past the busy timeout" and TaskFlow's 3 tries 5 s apart take
    # a moment instead of a minute
    db_module.SQLITE_BUSY_TIMEOUT_MS = faults.BUSY_MS
    storage.Storage._save_atom_detail.retry.sleep = lambda _s: None
    storage.Storage._save_flow_detail.retry.sleep = lambda _s: None
    # the log beside the hypervisor's database (not on the faulted disk); stderr: the error
    logging.basicConfig(filename=str(Path(hv_url.split("///", 1)[1]).with_name("run.log")))
    hv = SimulatedDriver(Database(hv_url), speed=0.0)
    orch = Orchestrator(f"sqlite:///{db_path}", settings=fast_settings(), drivers=[hv])
    what, _, arg = point.partition(":")
    fired: list[bool] = []

    def trap(event: Event) -> None:
        if fired:
            return
        if what == "progress":
            hit = event.kind == "progress" and float(event.data.get("percent", 0)) >= float(arg)
        else:
            hit = event.kind == KINDS[what] and event.phase == arg
        if hit:
            fired.append(True)
            faults.apply(kind, db_path)

    orch.subscribe(trap)
    mid = orch.create("web-1")
    print(mid, flush=True)
    try:
        m = orch.resume(mid)
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FerryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        m = getattr(exc, "migration", None)
        if m is None:
            return 3
    print(m.status, flush=True)
    return 0 if m.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
