"""A drain as one picture: the drained host, one node per guest coloured by its state (the
palette of the migration graph, :data:`ferry.viz.dot.COLOURS`), each guest linking to its
migration's graph, and the hosts the guests moved (or are planned) to.

>>> g = drain_graph(orchestrator.get_drain(drain_id))   # networkx DiGraph, kind "drain"
>>> open("drain.dot", "w").write(drain_dot(g))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import networkx as nx

from ferry.model.drain import Drain, GuestState
from ferry.viz.dot import COLOURS, FONT, _attrs, quote

#: a guest's state -> the TaskFlow state whose colours it is drawn in
STATE_COLOURS = {
    GuestState.QUEUED.value: "PENDING",
    GuestState.RUNNING.value: "RUNNING",
    GuestState.COMPLETED.value: "SUCCESS",
    GuestState.FAILED.value: "FAILURE",
    GuestState.SKIPPED.value: "REVERTED",
}
DRAIN_GRAPH_FORMAT = "ferry.drain-graph/1"


def web_link(migration_id: str) -> str:
    """A guest's link on the web view: its migration's page."""
    return f"/migrations/{migration_id}"


def file_link(migration_id: str) -> str:
    """A guest's link in a file: the migration's graph next to it (``MIGRATION_ID.svg``)."""
    return f"{migration_id}.svg"


def node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def drain_graph(d: Drain, link: Callable[[str], str] = web_link) -> nx.DiGraph:
    """The drain's graph: ``host:NAME`` nodes (kind ``host``, role ``source`` or
    ``destination``) and ``guest:UUID`` nodes (kind ``guest``: ``instance``, ``state``,
    ``migration``, ``destination``, ``reason``, ``url`` = ``link(migration id)``); edges from
    the drained host to each guest and from a guest to its destination (``moved``: done)."""
    g = nx.DiGraph(
        name=f"drain-{d.id}",
        kind="drain",
        drain=d.id,
        host=d.host,
        status=d.status,
        title=f"drain {d.id} of {d.host}: {d.status}",
    )
    source = f"host:{d.host}"
    g.add_node(source, kind="host", role="source", label=f"{d.host}\n(drained)")
    for guest in d.guests:
        name = f"guest:{guest.instance_uuid}"
        label = f"{guest.instance}\n{guest.state}"
        if guest.destination and guest.state in ("completed", "running"):
            label += f" -> {guest.destination}"
        g.add_node(
            name,
            kind="guest",
            instance=guest.instance,
            state=guest.state,
            migration=guest.migration,
            destination=guest.destination,
            reason=guest.reason,
            url=link(guest.migration) if guest.migration else None,
            label=label,
        )
        g.add_edge(source, name)
        if guest.destination:
            dest = f"host:{guest.destination}"
            if dest not in g:
                g.add_node(dest, kind="host", role="destination", label=guest.destination)
            g.add_edge(name, dest, moved=guest.state == GuestState.COMPLETED.value)
    return g


def drain_data(g: nx.DiGraph) -> dict[str, Any]:
    """The drain's graph as networkx node-link data plus a ``format`` field."""
    data = dict(nx.node_link_data(g, edges="edges"))
    data["format"] = DRAIN_GRAPH_FORMAT
    return data


def drain_dot(g: nx.DiGraph, *, legend: bool = True) -> str:
    """The drain's graph as Graphviz DOT, left to right: source host, guests, destinations."""
    lines = [
        f"digraph {quote(g.graph.get('name') or 'drain')} {{",
        "  graph "
        + _attrs(
            rankdir="LR",
            label=g.graph.get("title", ""),
            labelloc="t",
            labeljust="l",
            fontname=FONT,
            fontsize="12",
            nodesep="0.15",
            ranksep="0.6",
            id="drain-graph",
        )
        + ";",
        f'  node [fontname={quote(FONT)}, fontsize=10, margin="0.12,0.05"];',
        f'  edge [fontname={quote(FONT)}, fontsize=9, color="#666666", arrowsize=0.7];',
    ]
    for name, data in g.nodes(data=True):
        if data["kind"] == "host":
            attrs: dict[str, Any] = {
                "id": node_id(name),
                "class": f"host role-{data['role']}",
                "shape": "box3d",
                "style": "filled",
                "fillcolor": "#e0e0e0" if data["role"] == "source" else "#ffffff",
                "label": data["label"],
            }
        else:
            fill, line = COLOURS[STATE_COLOURS.get(data["state"], "PENDING")]
            attrs = {
                "id": node_id(name),
                "class": f"guest state-{data['state']}",
                "shape": "box",
                "style": "rounded,filled",
                "fillcolor": fill,
                "color": line,
                "label": data["label"],
                "tooltip": data["reason"] or data["migration"] or data["instance"],
                "URL": data.get("url"),
                "target": "_top" if data.get("url") else None,
            }
        lines.append(f"  {quote(name)} {_attrs(**attrs)};")
    for u, v, data in g.edges(data=True):
        style = None if data.get("moved", True) else "dashed"
        lines.append(
            f"  {quote(u)} -> {quote(v)}" + (f" {_attrs(style=style)}" if style else "") + ";"
        )
    if legend:
        cells = "".join(
            f'<TD BGCOLOR="{COLOURS[s][0]}" BORDER="1" COLOR="{COLOURS[s][1]}">{state}</TD>'
            for state, s in STATE_COLOURS.items()
        )
        table = f'<TABLE BORDER="0" CELLSPACING="4" CELLPADDING="3"><TR>{cells}</TR></TABLE>'
        lines += [f'  "legend" [id="legend", shape=plaintext, fontsize=9, label=<{table}>];']
    lines.append("}")
    return "\n".join(lines) + "\n"
