"""The text timeline (one row per atom, execute and revert bars) and the JSON export of a run."""

from __future__ import annotations

import json

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from ferry.viz import RunStore, export_run, format_timeline, timeline_rows
from tests.viz.helpers import run_to_end


def test_timeline_rows_of_a_rescheduled_run(orch: Orchestrator) -> None:
    m = run_to_end(orch, "web-1")
    view = RunStore.of(orch).load(m.id)
    rows = timeline_rows(view)
    assert [r.name for r in rows] == list(c.ALL_ATOMS)
    by = {r.name: r for r in rows}
    assert [s.kind for s in by["sentinel"].spans] == ["execute"]
    # check-destination failed on compute-2, was reverted, then ran again on compute-3
    assert [s.kind for s in by["check-destination"].spans] == ["revert", "execute"]
    assert by["check-destination"].earlier_failures
    assert by["schedule"].depth == 2 and by["transfer"].depth == 1
    assert by["complete"].after_switchover and not by["transfer"].after_switchover
    starts = [by[n].spans[-1].start for n in ("sentinel", "validate", "transfer", "complete")]
    assert starts == sorted(starts)


def test_timeline_text(orch: Orchestrator, sim: SimulatedDriver) -> None:
    sim.inject_fault("compute-3", "pre_live_migration", message="no room")
    m = run_to_end(orch, "web-1")
    text = format_timeline(RunStore.of(orch).load(m.id), width=40)
    lines = text.splitlines()
    assert lines[0].startswith(f"migration {m.id}") and "failed" in lines[0]
    rows = {
        line.split()[0]: line
        for line in lines[3:]
        if line.split() and line.split()[0] in c.ALL_ATOMS
    }
    assert set(rows) == set(c.ALL_ATOMS)
    assert "REVERTED" in rows["pre-live-migration"] and "no room" in rows["pre-live-migration"]
    bar = rows["pre-live-migration"].split("|")[1]
    # the failed execute ends in "x" (a quick one is only that cell), its revert follows
    assert len(bar) == 40 and "x" in bar and "░" in bar
    assert bar.index("x") < bar.rindex("░")
    assert set(bar) <= {"█", "x", "░", " "}
    assert rows["transfer"].split("|")[1].strip() == ""  # never ran
    assert any("switchover" in line for line in lines)


def test_timeline_failure_and_revert_in_one_column(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    # a failure and its revert quicker than one column: the "x" stays, the revert follows it
    sim.inject_fault("compute-3", "pre_live_migration", message="no room")
    m = run_to_end(orch, "web-1")
    view = RunStore.of(orch).load(m.id)
    stamps = view.atoms["pre-live-migration"].timestamps
    at = stamps["FAILURE"]
    stamps.update(REVERTING=at, REVERTED=at)
    lines = format_timeline(view, width=40).splitlines()
    row = next(line for line in lines if line.split() and line.split()[0] == "pre-live-migration")
    bar = row.split("|")[1]
    assert "x░" in bar, bar


def test_export_fields(orch: Orchestrator) -> None:
    m = run_to_end(orch, "web-1")
    data = json.loads(json.dumps(export_run(RunStore.of(orch).load(m.id))))
    assert data["format"] == "ferry.run/1"
    assert data["migration"]["id"] == m.id and data["migration"]["status"] == "completed"
    assert [p["name"] for p in data["migration"]["phases"]] == list(c.ALL_ATOMS)
    assert data["flow"] == {"name": "live-migration", "state": "SUCCESS"}
    assert data["runner"]["state"] == "finished"
    assert data["switchover_after"] == "transfer"
    atoms = {a["name"]: a for a in data["atoms"]}
    assert list(atoms) == list(c.ALL_ATOMS)
    for a in atoms.values():
        assert a["state"] == "SUCCESS"
        assert a["finished_at"] >= a["started_at"]
        assert a["seconds"] == round(a["finished_at"] - a["started_at"], 3)
        assert {"RUNNING", "SUCCESS"} <= set(a["timestamps"])
    assert atoms["reschedule"]["kind"] == "retry" and atoms["reschedule"]["tries"] == 2
    assert [(a["host"], a["outcome"]) for a in data["attempts"]] == [
        ("compute-2", "rejected"),
        ("compute-3", "chosen"),
    ]
    assert [r["name"] for r in data["timeline"]] == list(c.ALL_ATOMS)
    assert {"kind", "start", "end", "seconds", "outcome"} <= set(data["timeline"][0]["bars"][0])
    assert {n["id"] for n in data["graph"]["nodes"]} >= set(c.ALL_ATOMS)
    assert data["migration"]["history"][-1]["status"] == "completed"
