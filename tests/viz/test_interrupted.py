"""A run whose process was SIGKILLed at the start of the transfer, read back from the database:
the graph shows where it stopped, and nothing after it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from ferry.viz import RunStore, format_timeline, run_graph, timeline_rows, to_dot
from tests.viz.helpers import POST, dot_line, states

ROOT = Path(__file__).resolve().parents[2]


def crash_at(db_url: str, point: str) -> str:
    """Run web-1's migration in a real subprocess killed at ``point``; its migration id."""
    args = ["migrate", "web-1", "--kill-at", point]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crash.runner", db_url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.split()[0]


def test_interrupted_run_shows_where_it_stopped(
    orch: Orchestrator, sim: SimulatedDriver, db_url: str
) -> None:
    sim.ensure_seeded()
    mid = crash_at(db_url, "started:transfer")
    store = RunStore.open(db_url)  # as `ferry graph` reads it: the database alone
    try:
        view = store.load(mid)
    finally:
        store.close()
    assert not view.record.done  # the record still says preparing: nobody finished it
    assert view.runner.state == "interrupted"  # its lease names a process that is gone
    g = run_graph(view)
    st = states(g)
    assert st["transfer"] == "RUNNING"
    for name in c.PRE_SWITCHOVER_ATOMS[:-1]:
        assert st[name] == "SUCCESS", name
    for name in POST:
        assert st[name] == "PENDING", name
    assert g.nodes["transfer"]["finished_at"] is None
    assert g.nodes["transfer"]["started_at"] is not None
    assert g.graph["runner"]["state"] == "interrupted"
    dot = to_dot(g)
    assert "state-running" in dot_line(dot, "transfer")
    assert "INTERRUPTED" in dot  # the title says no runner is alive
    for name in POST:
        assert "state-pending" in dot_line(dot, name)
    rows = {r.name: r for r in timeline_rows(view)}
    assert rows["transfer"].spans[-1].end is None  # an open bar
    assert all(not rows[n].spans for n in POST)
    assert "(interrupted)" in format_timeline(view)

    # resumed, the same graph ends completed
    orch.resume(mid)
    assert set(states(run_graph(RunStore.of(orch).load(mid))).values()) == {"SUCCESS"}
