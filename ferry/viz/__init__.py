"""Seeing a migration: its flow graph coloured by persisted state, a text timeline, a JSON export.

Everything is read from the database (:class:`RunStore`): no hypervisor is contacted.

>>> from ferry.viz import RunStore, run_graph, to_dot
>>> store = RunStore.of(orchestrator)            # or RunStore.open("sqlite:///ferry.db")
>>> g = run_graph(store.load(migration_id))      # networkx DiGraph, node attrs: state, seconds...
>>> open("run.dot", "w").write(to_dot(g))
"""

from ferry.viz.dot import GraphvizMissing, dom_id, dot_available, render, svg_fragment, to_dot
from ferry.viz.export import export_run, graph_data
from ferry.viz.graph import flow_graph, migration_graph, run_graph
from ferry.viz.output import FORMATS, write_graph
from ferry.viz.run import AtomView, RunStore, RunView, Span
from ferry.viz.timeline import format_timeline, timeline_rows, timeline_text

__all__ = [
    "FORMATS",
    "AtomView",
    "GraphvizMissing",
    "RunStore",
    "RunView",
    "Span",
    "dom_id",
    "dot_available",
    "export_run",
    "flow_graph",
    "format_timeline",
    "graph_data",
    "migration_graph",
    "render",
    "run_graph",
    "svg_fragment",
    "timeline_rows",
    "timeline_text",
    "to_dot",
    "write_graph",
]
