"""The run graph for each kind of run: node states, durations, failures, attempts, switchover;
checked in the graph's JSON and DOT (never in pixels)."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from ferry import Orchestrator
from ferry.context import Event
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from ferry.viz import RunStore, flow_graph, graph_data, migration_graph, run_graph, to_dot
from tests.viz.helpers import POST, dot_line, graph_of, json_nodes, run_to_end, states

PRE = c.PRE_SWITCHOVER_ATOMS


def test_completed_run_with_one_reschedule(orch: Orchestrator) -> None:
    m = run_to_end(orch, "web-1")
    assert m.status == "completed"
    g = graph_of(orch, m.id)
    assert set(states(g).values()) == {"SUCCESS"}
    assert len(states(g)) == len(c.ALL_ATOMS)
    nodes = json_nodes(g)
    for name in c.ALL_ATOMS:
        assert nodes[name]["seconds"] is not None and nodes[name]["seconds"] >= 0, name
        assert nodes[name]["status"] == "success"
    assert nodes["transfer"]["progress"] == 1.0
    assert nodes["live-migration"]["state"] == "SUCCESS"  # the flow's own state
    attempts = nodes["reschedule"]["attempts"]
    assert [(a["host"], a["outcome"]) for a in attempts] == [
        ("compute-2", "rejected"),
        ("compute-3", "chosen"),
    ]
    assert "Connection refused" in attempts[0]["reason"]
    # the atoms of the rejected try were reverted before the second try succeeded
    assert nodes["check-destination"]["revert_seconds"] is not None
    assert nodes["check-destination"]["error"] is None
    assert g.graph["migration"]["status"] == "completed"
    assert g.graph["runner"]["state"] == "finished"
    dot = to_dot(g)
    assert "state-success" in dot_line(dot, "transfer")
    line = dot_line(dot, "reschedule")
    assert "1. compute-2 rejected" in line and "2. compute-3 chosen" in line
    assert "Connection refused" in line or "unable to connect" in line


def test_switchover_is_marked(orch: Orchestrator) -> None:
    g = graph_of(orch, run_to_end(orch, "web-1").id)
    assert g.graph["switchover_after"] == "transfer"
    assert g.nodes["transfer"]["switchover"] is True
    assert [v for _, v, d in g.edges(data=True) if d.get("switchover")] == ["finish"]
    assert all(g.nodes[n]["after_switchover"] for n in POST)
    assert not any(g.nodes[n]["after_switchover"] for n in PRE)
    dot = to_dot(g)
    assert '"transfer" -> "finish" [label=" switchover' in dot


def test_no_valid_host(orch: Orchestrator, sim: SimulatedDriver) -> None:
    sim.inject_fault("compute-3", "check_destination", message="disk full")
    m = run_to_end(orch, "web-1")
    assert m.status == "failed"
    g = graph_of(orch, m.id)
    nodes = json_nodes(g)
    assert nodes["sentinel"]["state"] == "REVERTED"
    assert nodes["live-migration"]["state"] == "REVERTED"
    # the scheduler ran out of hosts: that is where the run failed
    assert nodes["schedule"]["failed"] is True
    assert "no valid host" in nodes["schedule"]["error"].lower()
    assert nodes["schedule"]["error_type"] == "ferry.errors.NoValidHost"
    assert "disk full" in nodes["check-destination"]["error"]
    attempts = {a["host"]: a for a in nodes["reschedule"]["attempts"]}
    assert attempts["compute-2"]["outcome"] == attempts["compute-3"]["outcome"] == "rejected"
    assert "disk full" in attempts["compute-3"]["reason"]
    for name in ("pre-live-migration", "transfer", *POST):
        assert nodes[name]["state"] == "PENDING", name
    dot = to_dot(g)
    assert "compute-3 rejected: check_destination: disk full" in dot_line(dot, "reschedule")
    assert "failed" in dot_line(dot, "schedule")  # the class marks where it failed


def test_failure_in_pre_live_migration_reverts_everything(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    sim.inject_fault("compute-3", "pre_live_migration", message="no room for the instance dir")
    m = run_to_end(orch, "web-1")
    assert m.status == "failed"
    g = graph_of(orch, m.id)
    st = states(g)
    for name in PRE[: PRE.index("pre-live-migration") + 1]:
        assert st[name] == "REVERTED", name
    for name in ("transfer", *POST):
        assert st[name] == "PENDING", name
    node = g.nodes["pre-live-migration"]
    assert node["failed"] and "no room for the instance dir" in node["error"]
    assert node["seconds"] is not None and node["revert_seconds"] is not None
    assert node["status"] == "reverted"
    line = dot_line(to_dot(g), "pre-live-migration")
    assert "state-reverted" in line and "error: pre_live_migration" in line
    assert "#fff2a8" in line  # the reverted colour


def test_cancelled_during_transfer(orch: Orchestrator) -> None:
    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data["percent"] > 30:
            orch.migrations.request_abort(e.migration_id)

    orch.subscribe(on_event)
    m = run_to_end(orch, "web-1")
    assert m.status == "cancelled"
    g = graph_of(orch, m.id)
    nodes = json_nodes(g)
    assert nodes["transfer"]["state"] == "REVERTED"
    assert "aborted" in nodes["transfer"]["error"]
    assert all(nodes[n]["state"] == "REVERTED" for n in PRE)
    assert all(nodes[n]["state"] == "PENDING" for n in POST)
    assert g.graph["migration"]["status"] == "cancelled"


def test_cancelled_before_it_ran(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    assert orch.abort(mid).status == "cancelled"
    g = graph_of(orch, mid)
    assert g.graph["migration"]["status"] == "cancelled"
    assert states(g)["sentinel"] in ("REVERTED", "PENDING")
    assert all(states(g)[n] == "PENDING" for n in ("transfer", *POST))


def test_error_after_the_switchover(db_url: str) -> None:
    from tests.conftest import fast_settings

    orch = Orchestrator(db_url, settings=fast_settings(post_retries=2))
    orch.drivers.drivers[0].inject_fault("compute-1", "post_at_source", message="cannot undefine")  # type: ignore[attr-defined]
    m = run_to_end(orch, "web-1")
    assert m.status == "error"
    g = graph_of(orch, m.id)
    st = states(g)
    assert all(st[n] == "SUCCESS" for n in PRE)  # nothing before the switchover undone
    assert st["post-at-source"] == "REVERTED" and st["roll-forward"] == "REVERTED"
    assert st["post-at-destination"] == st["complete"] == "PENDING"
    assert "cannot undefine" in g.nodes["post-at-source"]["error"]
    assert g.graph["migration"]["leftovers"]
    orch.close()


def test_two_reschedules(orch: Orchestrator, sim: SimulatedDriver) -> None:
    # app-2 (compute-4) may go to compute-2 (fails its check: demo fault), compute-3, compute-1
    sim.inject_fault("compute-3", "check_destination", message="disk full")
    m = run_to_end(orch, "app-2")
    assert m.status == "completed" and m.destination == "compute-1"
    g = graph_of(orch, m.id)
    node = g.nodes["reschedule"]
    assert [(a["host"], a["outcome"]) for a in node["attempts"]] == [
        ("compute-2", "rejected"),
        ("compute-3", "rejected"),
        ("compute-1", "chosen"),
    ]
    assert node["tries"] == 3  # TaskFlow's retry history: the subflow ran three times
    assert set(states(g).values()) == {"SUCCESS"}
    line = dot_line(to_dot(g), "reschedule")
    assert "hosts tried (3)" in line
    assert "1. compute-2 rejected" in line
    assert "2. compute-3 rejected: check_destination: disk full" in line
    assert "3. compute-1 chosen" in line
    assert "subflow run 3 times" in line


def test_flow_shape_without_a_run() -> None:
    g = flow_graph()
    kinds = {n: d["kind"] for n, d in g.nodes(data=True)}
    assert {n for n, k in kinds.items() if k == "retry"} == {"reschedule", "roll-forward"}
    assert {n for n, k in kinds.items() if k == "flow"} == {
        "live-migration",
        "select-destination",
        "finish",
    }
    assert {n for n, k in kinds.items() if k == "flow_end"} == {
        "live-migration[$]",
        "select-destination[$]",
        "finish[$]",
    }
    assert {n for n, k in kinds.items() if k in ("task", "retry")} == set(c.ALL_ATOMS)
    assert nx.is_directed_acyclic_graph(g)
    assert next(iter(nx.topological_sort(g))) == "live-migration"
    assert g.nodes["schedule"]["parent"] == "select-destination"
    assert g.nodes["select-destination"]["retry"] == "reschedule"
    assert g.edges["reschedule", "schedule"]["kind"] == "retry"
    assert all(d["state"] is None for _, d in g.nodes(data=True))
    dot = to_dot(g)
    assert 'subgraph "cluster_select-destination"' in dot
    assert "retry controller: reschedule" in dot and "retry controller: roll-forward" in dot
    assert "switchover" in dot


def test_graph_json_round_trips_through_networkx(orch: Orchestrator) -> None:
    g = graph_of(orch, run_to_end(orch, "web-1").id)
    data = json.loads(json.dumps(graph_data(g)))
    assert data["format"] == "ferry.graph/1"
    assert [n["id"] for n in data["nodes"]][:3] == ["live-migration", "sentinel", "validate"]
    back = nx.node_link_graph(data, edges="edges")
    assert set(back.nodes) == set(g.nodes)
    assert back.nodes["transfer"]["state"] == "SUCCESS"


def test_unknown_migration_is_a_one_line_error(orch: Orchestrator) -> None:
    from ferry import errors

    with pytest.raises(errors.MigrationNotFound):
        RunStore.of(orch).load("no-such-id")


def test_graph_of_a_run_read_by_a_store_of_its_own(orch: Orchestrator, db_url: str) -> None:
    m = run_to_end(orch, "web-1")
    store = RunStore.open(db_url)  # the database alone: no driver, no hypervisor
    try:
        g = run_graph(store.load(m.id))
    finally:
        store.close()
    assert set(states(g).values()) == {"SUCCESS"}


def test_running_run_read_while_it_runs(orch: Orchestrator) -> None:
    seen: list[nx.DiGraph] = []

    def on_event(e: Event) -> None:  # as another process would read it, mid-transfer
        if e.kind == "progress" and e.data["percent"] > 30 and not seen:
            seen.append(migration_graph(orch, e.migration_id))

    orch.subscribe(on_event)
    assert run_to_end(orch, "web-1").status == "completed"
    g = seen[0]
    st = states(g)
    assert st["transfer"] == "RUNNING"
    assert all(st[n] == "SUCCESS" for n in PRE[:-1])
    assert all(st[n] == "PENDING" for n in POST)
    assert 0.3 < g.nodes["transfer"]["progress"] < 1.0
    assert g.nodes["transfer"]["seconds"] is None and g.nodes["transfer"]["started_at"]
    assert g.graph["runner"]["state"] == "live"
    assert g.graph["migration"]["status"] == "running"
    assert "RUNNING" in g.nodes["transfer"]["label"] and "%" in g.nodes["transfer"]["label"]


def test_created_but_never_run(orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    g = migration_graph(orch, mid)
    assert set(states(g).values()) == {"PENDING"}
    assert g.graph["runner"]["state"] == "not started"
    assert g.graph["migration"]["status"] == "accepted"
