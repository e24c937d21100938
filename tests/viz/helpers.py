"""Running a migration to its end on the simulated cluster and reading its graph back."""

from __future__ import annotations

from typing import Any

import networkx as nx

from ferry import FerryError, Orchestrator
from ferry.model import Migration
from ferry.viz import RunStore, graph_data, run_graph

POST = ("roll-forward", "post-at-source", "post-at-destination", "complete")


def run_to_end(orch: Orchestrator, vm: str, **kwargs: Any) -> Migration:
    """The final record of a migration, whether it completed or not."""
    try:
        return orch.live_migrate(vm, **kwargs)  # type: ignore[no-any-return]
    except FerryError as exc:
        assert exc.migration is not None, exc
        return exc.migration  # type: ignore[no-any-return]


def graph_of(orch: Orchestrator, migration_id: str) -> nx.DiGraph:
    return run_graph(RunStore.of(orch).load(migration_id))


def states(g: nx.DiGraph) -> dict[str, str | None]:
    """Atom (task and retry) name -> persisted state."""
    return {n: d["state"] for n, d in g.nodes(data=True) if d["kind"] in ("task", "retry")}


def json_nodes(g: nx.DiGraph) -> dict[str, dict[str, Any]]:
    """The graph's JSON (what ``ferry graph -o x.json`` writes), nodes by id."""
    return {n["id"]: n for n in graph_data(g)["nodes"]}


def dot_line(dot: str, name: str) -> str:
    """The DOT statement of node ``name``, its label's line breaks read as spaces."""
    lines = [line for line in dot.splitlines() if line.strip().startswith(f'"{name}" [')]
    assert len(lines) == 1, (name, lines)
    return lines[0].replace("\\n", " ")
