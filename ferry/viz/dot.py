"""Graphviz output: DOT text written here (no dependency), SVG and PNG through the ``dot`` program
(Debian's ``graphviz`` package) when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import networkx as nx

from ferry import errors
from ferry.viz.shape import ordered

#: fill and line colour of each TaskFlow state (None: the flow's shape, no run)
COLOURS: dict[str | None, tuple[str, str]] = {
    None: ("#ffffff", "#4d4d4d"),
    "PENDING": ("#f0f0f0", "#8c8c8c"),
    "RUNNING": ("#9ecae1", "#08519c"),
    "SUCCESS": ("#a1d99b", "#006d2c"),
    "FAILURE": ("#fc9272", "#a50f15"),
    "REVERTING": ("#fdd0a2", "#d94801"),
    "REVERTED": ("#fff2a8", "#b8860b"),
    "REVERT_FAILURE": ("#de2d26", "#67000d"),
    "RETRYING": ("#dadaeb", "#54278f"),
    "IGNORE": ("#ffffff", "#bdbdbd"),
}
LEGEND_STATES = ("PENDING", "RUNNING", "SUCCESS", "FAILURE", "REVERTING", "REVERTED")
SWITCHOVER_COLOUR = "#d62728"
RETRY_COLOUR = "#6a51a3"
FONT = "Helvetica"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class GraphvizMissing(errors.FerryError):
    """SVG or PNG was asked for and Graphviz's ``dot`` program is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "Graphviz's `dot` program is not installed (Debian: apt-get install graphviz); "
            "-o FILE.dot and -o FILE.json need nothing"
        )


def quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    text = _CONTROL.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "").replace("\n", "\\n") + '"'


def dom_id(name: str) -> str:
    """The node's id in SVG output (and in the web page's fallback list)."""
    return "atom-" + re.sub(r"[^A-Za-z0-9_-]", "-", name.replace("[$]", "-end"))


def _attrs(**attrs: Any) -> str:
    return "[" + ", ".join(f"{k}={quote(str(v))}" for k, v in attrs.items() if v is not None) + "]"


def _node(name: str, data: dict[str, Any]) -> str:
    kind, state = data["kind"], data.get("state")
    fill, line = COLOURS.get(state, COLOURS["PENDING"])
    status = data.get("status") or "none"
    attrs: dict[str, Any] = {
        "id": dom_id(name),
        "class": f"atom kind-{kind} state-{status}" + (" failed" if data.get("failed") else ""),
        "label": data.get("label", name),
        "fillcolor": fill,
        "color": line,
        "tooltip": tooltip(name, data),
    }
    if kind == "task":
        attrs.update(shape="box", style="rounded,filled")
    elif kind == "retry":
        attrs.update(shape="box", style="filled,diagonals", penwidth="1.5")
    elif kind == "flow":
        attrs.update(shape="invhouse", style="filled", fontsize="9")
    else:  # flow_end
        attrs.update(shape="house", style="filled", label="", width="0.3", height="0.2")
    if data.get("failed"):  # where it failed: a thick red border, whatever its state is now
        attrs.update(penwidth="2.5", color=COLOURS["FAILURE"][1])
    if data.get("switchover"):
        attrs.update(peripheries="2", color=SWITCHOVER_COLOUR)
    return f"{quote(name)} {_attrs(**attrs)};"


def tooltip(name: str, data: dict[str, Any]) -> str:
    parts = [name]
    if data.get("doc"):
        parts.append(data["doc"])
    if data.get("revert"):
        parts.append(f"Revert: {data['revert']}")
    if data.get("error"):
        parts.append(f"Failed: {data['error']}")
    return "\n".join(parts)


def _edge(u: str, v: str, data: dict[str, Any]) -> str:
    attrs: dict[str, Any] = {}
    if data.get("switchover"):
        attrs.update(
            label=" switchover: the VM never moves back ",
            color=SWITCHOVER_COLOUR,
            fontcolor=SWITCHOVER_COLOUR,
            penwidth="3",
            style="bold",
            id="switchover",
        )
    elif data.get("kind") == "retry":
        attrs.update(style="dashed", color=RETRY_COLOUR)  # out of a retry controller
    return f"{quote(u)} -> {quote(v)}" + (f" {_attrs(**attrs)}" if attrs else "") + ";"


def _cluster_of(g: nx.DiGraph, name: str) -> str | None:
    """The subflow whose box a node is drawn in (a subflow's start marker is in its own box)."""
    data = g.nodes[name]
    if data["kind"] == "flow" and data.get("parent") is not None:
        return name
    parent = data.get("parent")
    if parent is not None and g.has_node(parent) and g.nodes[parent].get("parent") is not None:
        return str(parent)
    return None


def to_dot(g: nx.DiGraph, *, rankdir: str = "TB", legend: bool | None = None) -> str:
    """The graph as Graphviz DOT: subflows as boxes, every node coloured by its state."""
    names = ordered(g)
    lines = [
        f"digraph {quote(g.graph.get('name') or 'flow')} {{",
        "  "
        + "graph "
        + _attrs(
            rankdir=rankdir,
            label=g.graph.get("title", ""),
            labelloc="t",
            labeljust="l",
            fontname=FONT,
            fontsize="12",
            nodesep="0.3",
            ranksep="0.3",
            id="flow-graph",
        )
        + ";",
        f'  node [fontname={quote(FONT)}, fontsize=10, margin="0.12,0.05"];',
        f'  edge [fontname={quote(FONT)}, fontsize=9, color="#666666", arrowsize=0.7];',
    ]
    members: dict[str | None, list[str]] = {}
    for name in names:
        members.setdefault(_cluster_of(g, name), []).append(name)
    for name in members.get(None, []):
        lines.append("  " + _node(name, g.nodes[name]))
    for flow, inside in members.items():
        if flow is None:
            continue
        data = g.nodes[flow]
        title = f"{flow}  (retry controller: {data['retry']})" if data.get("retry") else flow
        lines.append(f"  subgraph {quote('cluster_' + flow)} {{")
        lines.append(
            "    graph "
            + _attrs(label=title, style="rounded,dashed", color="#999999", fontsize="10")
            + ";"
        )
        lines += ["    " + _node(name, g.nodes[name]) for name in inside]
        lines.append("  }")
    for u, v, data in sorted(g.edges(data=True), key=lambda e: g.nodes[e[0]]["order"]):
        lines.append("  " + _edge(u, v, data))
    if legend if legend is not None else g.graph.get("kind") == "run":
        lines += _legend()
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend() -> list[str]:
    cells = "".join(
        f'<TD BGCOLOR="{COLOURS[s][0]}" BORDER="1" COLOR="{COLOURS[s][1]}">{s.lower()}</TD>'
        for s in LEGEND_STATES
    )
    table = f'<TABLE BORDER="0" CELLSPACING="4" CELLPADDING="3"><TR>{cells}</TR></TABLE>'
    return [
        "  subgraph legend {",
        "    rank=sink;",
        f'    "legend" [id="legend", shape=plaintext, fontsize=9, label=<{table}>];',
        "  }",
    ]


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(dot_text: str, fmt: str) -> bytes:
    """``dot_text`` rendered by Graphviz as ``fmt`` (svg, png, ...). Raises GraphvizMissing."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing()
    proc = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise errors.FerryError(
            f"Graphviz failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def svg_fragment(dot_text: str) -> str:
    """Inline SVG (no XML prolog or doctype) for an HTML page."""
    svg = render(dot_text, "svg").decode()
    return svg[svg.find("<svg") :]
