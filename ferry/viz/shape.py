"""The shape of the live-migration flow: TaskFlow's compiled execution graph, keyed by name.

The graph is the one TaskFlow's engine runs (``engine.compilation.execution_graph``): nodes of kind
``task``, ``retry`` (the retry controllers), ``flow`` (a flow's start) and ``flow_end`` (its
end, named ``FLOW[$]``); edges in execution order, the edge out of a retry controller marked
``retry``. It is compiled once per process with an in-memory backend: no run is needed.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import networkx as nx
from taskflow import engines

from ferry.flows import constants as c
from ferry.flows.live_migration import get_live_migration_flow

FLOW_END_SUFFIX = "[$]"


def flow_shape() -> nx.DiGraph:
    """A fresh copy of the flow's execution graph with plain, JSON-safe node attributes:
    ``kind``, ``parent`` (the enclosing flow), ``depth`` (of nesting), ``order`` (flow order),
    ``retry`` (the controller of a subflow), ``doc`` and ``revert`` (from the task's docstring)."""
    return _compiled().copy()


@functools.cache
def _compiled() -> nx.DiGraph:
    engine = engines.load(get_live_migration_flow(), engine="serial")
    engine.compile()
    compilation = engine.compilation
    execution: Any = compilation.execution_graph
    shape: nx.DiGraph = nx.DiGraph(name=c.FLOW_NAME)
    order = 0
    for tree_node in compilation.hierarchy.dfs_iter(include_self=True):
        item = tree_node.item
        kind = tree_node.metadata.get("kind", "task")
        parent = tree_node.parent.item.name if tree_node.parent is not None else None
        depth = len(list(tree_node.path_iter())) - 1
        doc, revert = _describe(item) if kind in ("task", "retry") else ("", "")
        shape.add_node(
            item.name, kind=kind, parent=parent, depth=depth, order=order, doc=doc, revert=revert
        )
        order += 1
        if kind == "flow" and getattr(item, "retry", None) is not None:
            shape.nodes[item.name]["retry"] = item.retry.name
    for node, data in execution.nodes(data=True):
        if node.name not in shape:  # a flow's end marker: it belongs to that flow
            flow = node.name.removesuffix(FLOW_END_SUFFIX)
            start = shape.nodes[flow]
            shape.add_node(
                node.name,
                kind=data.get("kind", "flow_end"),
                parent=flow,
                depth=start["depth"] + 1,
                order=order,
                doc="",
                revert="",
            )
            order += 1
    for u, v, data in execution.edges(data=True):
        shape.add_edge(u.name, v.name, kind="retry" if data.get("retry") else "next")
    # flow order: execution order (the graph is a DAG), ties broken by the flow's hierarchy
    hierarchy_order = {name: shape.nodes[name]["order"] for name in shape}
    for index, name in enumerate(
        nx.lexicographical_topological_sort(shape, key=hierarchy_order.__getitem__)
    ):
        shape.nodes[name]["order"] = index
    for name in c.POST_SWITCHOVER_ATOMS:
        shape.nodes[name]["after_switchover"] = True
    for name, data in shape.nodes(data=True):
        data.setdefault("after_switchover", _after_switchover(shape, name))
    if shape.has_node(c.SWITCHOVER_AFTER):
        shape.nodes[c.SWITCHOVER_AFTER]["switchover"] = True
        for _u, _v, data in shape.out_edges(c.SWITCHOVER_AFTER, data=True):
            data["switchover"] = True
    return shape


def _after_switchover(shape: nx.DiGraph, name: str) -> bool:
    """Nodes reachable from the switchover atom (not the atom itself) are past the switchover."""
    return shape.has_node(c.SWITCHOVER_AFTER) and name in nx.descendants(shape, c.SWITCHOVER_AFTER)


def _describe(atom: Any) -> tuple[str, str]:
    """What the atom does and what its revert does, from its class docstring."""
    text = inspect.cleandoc(type(atom).__doc__ or "").replace("``", "")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    doc = paragraphs[0] if paragraphs else ""
    revert = ""
    for line in " ".join(text.split()).split("Revert:")[1:2]:
        revert = line.strip()
    return doc, revert


def ordered(shape: nx.DiGraph) -> list[str]:
    """Node names in flow order (a flow, its atoms, its end marker)."""
    return sorted(shape.nodes, key=lambda n: shape.nodes[n]["order"])
