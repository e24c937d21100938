"""SQLite faults at a chosen phase of a real migrating process (tests/faults/runner.py): a full
disk, the database file made read-only, the database locked by another process past the busy
timeout. The process stops with one line saying the migration is resumable; the operator lifts
the fault and runs ``ferry resume ID`` (here: :meth:`Orchestrator.resume` from another
process, as the command does); the end state is consistent (tests/faults/consistency.py) and the
status history says why the first run stopped being driven."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import FerryError, Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.persistence.db import Database
from ferry.runner.runner import FINISHED_FLOW_STATES
from tests.conftest import fast_settings
from tests.faults import sqlite as faults
from tests.faults.consistency import assert_consistent

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]

#: before the switchover (the guest goes back to its source or is resumed), mid-transfer, after
POINTS = ["started:pre-live-migration", "progress:50", "started:post-at-destination"]
#: two of them per fault in the suite (every phase met by two faults); the soak picks at random
CASES = {
    "full": (POINTS[0], POINTS[2]),
    "readonly": (POINTS[1], POINTS[2]),
    "locked": (POINTS[0], POINTS[1]),
}
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


class Unavailable(Exception):
    """The fault cannot be made here (the reason)."""


@contextlib.contextmanager
def prepared(root: Path, kind: str) -> Iterator[Setup]:
    """A setup for fault ``kind`` under ``root`` (the small disk mounted for ``full``); the
    fault lifted and the disk unmounted afterwards. :raises Unavailable:"""
    reason = faults.unavailable_reason(kind)
    if reason:
        raise Unavailable(reason)
    s = Setup(root, kind)
    with contextlib.ExitStack() as stack:
        if kind == "full":
            try:
                stack.enter_context(faults.small_disk(s.db.parent))
            except subprocess.CalledProcessError as exc:
                raise Unavailable(f"cannot mount a tmpfs here: {exc.stderr.strip()}") from None
        else:
            s.db.parent.mkdir(parents=True)
            if kind == "readonly" and not faults.supports_immutable(s.db.parent):
                raise Unavailable(
                    f"the file system of {s.db.parent} has no immutable flag (chattr +i)"
                )
        stack.callback(faults.lift, kind, s.db)
        yield s


@pytest.fixture(params=faults.KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    try:
        ctx = prepared(tmp_path, request.param)
        s = ctx.__enter__()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield s
    finally:
        ctx.__exit__(None, None, None)


def fault_then_resume(s: Setup, point: str) -> tuple[str, int, str, Orchestrator, SimulatedDriver]:
    """The migrating process run with the fault at ``point``, then the fault lifted."""
    orch, sim = s.orchestrator()
    code, out, err = s.run(point)
    assert out, err
    mid = out[0]
    faults.lift(s.kind, s.db)
    return mid, code, err, orch, sim


def soak_case(s: Setup, point: str) -> tuple[str, float]:
    """One run for the soak: the fault at ``point``, lifted, the operator's resume when the
    record is not terminal; returns the end status (checked consistent) and the seconds from
    the fault's lifting to that end."""
    mid, code, err, orch, sim = fault_then_resume(s, point)
    try:
        back = time.monotonic()
        assert code in (0, 1, 2), (code, err)
        if not orch.get(mid).done or orch.runner.flow_state(mid) not in FINISHED_FLOW_STATES:
            with contextlib.suppress(FerryError):  # a failed end raises its typed error
                orch.resume(mid)
        status = assert_consistent(orch, sim, mid, "web-1")
        return status, time.monotonic() - back
    finally:
        orch.close()


@pytest.mark.parametrize("case", [0, 1])
def test_a_fault_stops_the_run_resumable_and_resume_ends_it_consistent(
    setup: Setup, case: int
) -> None:
    point = CASES[setup.kind][case]
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
