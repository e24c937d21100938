"""SQLite faults at a chosen phase of a real migrating process (tests/faults/runner.py): a full
disk, the database file made read-only, the database locked by another process past the busy
timeout. The process stops with one line saying the migration is resumable; the operator lifts
the fault and runs ``ferry resume ID`` (here: :meth:`Orchestrator.resume` from another
process, as the command does); the end state is consistent (tests/faults/consistency.py) and the
status history says why the first run stopped being driven."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.persistence.db import Database
from tests.conftest import fast_settings
from tests.faults import sqlite as faults
from tests.faults.consistency import assert_consistent

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]

#: before the switchover (the guest goes back to its source or is resumed), mid-transfer, after
POINTS = ["started:pre-live-migration", "progress:50", "started:post-at-destination"]
#: the database's words for each fault (what the stopped process and the record say)
WORDS = {
    "full": ("database or disk is full",),
    # through an open descriptor the write fails (EPERM), through a new one the open is read-only
    "readonly": ("disk I/O error", "attempt to write a readonly database"),
    "locked": ("database is locked",),
}


class Setup:
    def __init__(self, root: Path, kind: str) -> None:
        self.kind = kind
        self.db = root / "db" / "ferry.db"
        self.hv_url = f"sqlite:///{root / 'hv.db'}"
        self.url = f"sqlite:///{self.db}"

    def orchestrator(self) -> tuple[Orchestrator, SimulatedDriver]:
        sim = SimulatedDriver(Database(self.hv_url), speed=0.0)
        sim.ensure_seeded()
        return Orchestrator(self.url, settings=fast_settings(), drivers=[sim]), sim

    def run(self, point: str) -> tuple[int, list[str], str]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.faults.runner",
                str(self.db),
                self.hv_url,
                self.kind,
                point,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        return proc.returncode, proc.stdout.split(), proc.stderr


@pytest.fixture(params=faults.KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    kind = request.param
    reason = faults.unavailable_reason(kind)
    if reason:
        pytest.skip(reason)
    s = Setup(tmp_path, kind)
    if kind == "full":
        try:
            ctx = faults.small_disk(s.db.parent)
            ctx.__enter__()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.strip()}")
    else:
        s.db.parent.mkdir()
        ctx = None
        if kind == "readonly" and not faults.supports_immutable(s.db.parent):
            pytest.skip(f"the file system of {s.db.parent} has no immutable flag (chattr +i)")
    try:
        yield s
    finally:
        faults.lift(kind, s.db)
        if ctx is not None:
            ctx.__exit__(None, None, None)


def fault_then_resume(s: Setup, point: str) -> tuple[str, int, str, Orchestrator, SimulatedDriver]:
    orch, sim = s.orchestrator()
    code, out, err = s.run(point)
    assert out, err
    mid = out[0]
    faults.lift(s.kind, s.db)
    return mid, code, err, orch, sim


@pytest.mark.parametrize("point", POINTS)
def test_a_fault_stops_the_run_resumable_and_resume_ends_it_consistent(
    setup: Setup, point: str
) -> None:
    mid, code, err, orch, sim = fault_then_resume(setup, point)
    try:
        assert code == 2, (code, err)  # the database refused a write: stopped, resumable
        [line] = err.strip().splitlines()  # one line, no traceback
        assert f"migration {mid} stopped: the database refused a write" in line
        assert any(words in line for words in WORDS[setup.kind]), line
        assert f"ferry resume {mid}" in line
        m = orch.get(mid)
        assert not m.done  # resumable: not reported as an end it did not reach
        m = orch.resume(mid)  # the operator's `ferry resume ID`
        status = assert_consistent(orch, sim, mid, "web-1")
        assert status == "completed", (m.status, m.error)
        notes = [h.detail or "" for h in orch.get(mid).history]
        assert any("had stopped" in n for n in notes), notes
    finally:
        orch.close()
