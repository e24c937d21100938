"""JSON for other tools: the graph (networkx node-link data) and the full export of a run."""

from __future__ import annotations

import json
import time
from typing import Any

import networkx as nx

from ferry.flows import constants as c
from ferry.viz.graph import run_graph
from ferry.viz.run import RunView
from ferry.viz.shape import ordered
from ferry.viz.timeline import timeline_rows

#: the ``format`` field of an export; bumped when a field changes meaning
EXPORT_FORMAT = "ferry.run/1"
GRAPH_FORMAT = "ferry.graph/1"


def graph_data(g: nx.DiGraph) -> dict[str, Any]:
    """The graph as networkx node-link data (``networkx.node_link_graph(data, edges="edges")``
    loads it back), nodes in flow order, plus a ``format`` field."""
    data = nx.node_link_data(g, edges="edges")
    order = {name: i for i, name in enumerate(ordered(g))}
    data["nodes"].sort(key=lambda n: order[n["id"]])
    data["format"] = GRAPH_FORMAT
    return dict(data)


def export_run(view: RunView) -> dict[str, Any]:
    """Everything known about a run: record, atom states and timings, attempts, timeline, graph."""
    record = view.record.to_dict()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": time.time(),
        "migration": record,
        "flow": {"name": c.FLOW_NAME, "state": view.flow_state},
        "runner": view.runner.to_dict(),
        "switchover_after": c.SWITCHOVER_AFTER,
        "atoms": [view.atoms[name].to_dict() for name in sorted(view.atoms, key=_flow_order(view))],
        "attempts": record["attempts"],
        "timeline": [row.to_dict() for row in timeline_rows(view)],
        "graph": graph_data(run_graph(view)),
    }


def _flow_order(view: RunView) -> Any:
    known = {name: i for i, name in enumerate(c.ALL_ATOMS)}
    return lambda name: (known.get(name, len(known)), name)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
