"""What the pages show, as plain data and escaped HTML: a migration's row, the run's live view and
its graph (Graphviz SVG when ``dot`` is installed, else an ordered list of atoms)."""

from __future__ import annotations

from typing import Any

import networkx as nx
from markupsafe import Markup, escape

from ferry.model import Migration
from ferry.model.drain import Drain
from ferry.viz import dom_id, dot_available, format_timeline, run_graph, svg_fragment, to_dot
from ferry.viz.graph import summary
from ferry.viz.run import RunView
from ferry.viz.shape import ordered

#: columns of the timeline's bars on the migration page
TIMELINE_WIDTH = 36


def migration_row(m: Migration) -> dict[str, Any]:
    percent = (m.progress or {}).get("percent")
    return {
        "id": m.id,
        "status": m.status,
        "instance": m.instance_name or m.instance,
        "source": m.source,
        "destination": m.destination,
        "percent": round(float(percent), 1) if isinstance(percent, int | float) else None,
        "created_at": m.created_at,
        "done": m.done,
    }


def live_view(view: RunView, *, svg: bool | None = None) -> dict[str, Any]:
    """Everything the migration page refreshes: status, progress, hosts tried, graph, timeline."""
    g = run_graph(view)
    m = view.record
    progress = dict(m.progress or {})
    progress.pop("result", None)
    return {
        **summary(view),
        "done": m.done,
        "progress": progress,
        "progress_text": progress_text(progress),
        "attempts": [
            {"host": a.host, "outcome": a.outcome, "reason": a.reason} for a in m.attempts
        ],
        "atoms": [{"name": p.name, "state": p.state} for p in m.phases],
        "graph_html": str(graph_html(g, svg=svg)),
        "timeline": format_timeline(view, width=TIMELINE_WIDTH),
    }


def progress_text(p: dict[str, Any]) -> str:
    if not p.get("memory_total_mb"):
        return ""
    text = (
        f"iteration {p.get('iteration', 0)}, {p.get('memory_remaining_mb', 0):.0f} of "
        f"{p.get('memory_total_mb', 0):.0f} MiB left, downtime {p.get('downtime_ms', 0)} ms"
    )
    if isinstance(p.get("eta_s"), int | float):
        text += f", ETA {p['eta_s']:.1f} s"
    return text


def graph_html(g: nx.DiGraph, *, svg: bool | None = None) -> Markup:
    """The graph as inline SVG (Graphviz) or, without ``dot``, as a list of coloured atoms."""
    if svg is None:
        svg = dot_available()
    if svg:
        return Markup(svg_fragment(to_dot(g, legend=True)))  # Graphviz escapes every label
    return fallback_list(g)


def fallback_list(g: nx.DiGraph) -> Markup:
    """The flow as nested ordered lists, one item per atom with its state and label lines."""
    out = ['<ol class="atoms fallback">']
    open_flows: list[str] = []
    for name in ordered(g):
        data = g.nodes[name]
        kind = data["kind"]
        if kind == "flow_end":
            if open_flows and name.startswith(open_flows[-1]):
                out.append("</ol></li>")
                open_flows.pop()
            continue
        if kind == "flow" and data.get("parent") is None:
            continue
        classes = f"atom kind-{kind} state-{data.get('status') or 'none'}"
        if data.get("failed"):
            classes += " failed"
        lines = data.get("label", name).split("\n")
        details = "".join(f'<span class="line">{escape(line)}</span>' for line in lines[1:])
        item = (
            f'<li id="{dom_id(name)}" class="{classes}"><span class="name">{escape(lines[0])}'
            f"</span>{details}"
        )
        if kind == "flow":
            out.append(item + "<ol>")
            open_flows.append(name)
        else:
            out.append(item + "</li>")
        if data.get("switchover"):
            out.append('<li class="switchover">switchover: the VM never moves back</li>')
    out += ["</ol></li>"] * len(open_flows)
    out.append("</ol>")
    return Markup("".join(out))


# ------------------------------------------------------------------------- drains
def drain_row(d: Drain) -> dict[str, Any]:
    return {
        "id": d.id,
        "host": d.host,
        "status": d.status,
        "reason": d.reason,
        "counts": d.counts(),
        "guests": len(d.guests),
        "created_at": d.created_at,
        "done": d.done,
    }


def drain_view(d: Drain, *, svg: bool | None = None) -> dict[str, Any]:
    """The drain page: its facts, its guests and its graph (each guest linking to its
    migration's page)."""
    from ferry.viz.drain import drain_dot, drain_graph

    g = drain_graph(d)
    if svg is None:
        svg = dot_available()
    html = Markup(svg_fragment(drain_dot(g))) if svg else drain_fallback(g)
    return {**drain_row(d), "guest_rows": [x.to_dict() for x in d.guests], "graph_html": str(html)}


def drain_fallback(g: nx.DiGraph) -> Markup:
    """Without Graphviz: the guests as a list, coloured by state, linking to their migrations."""
    out = ['<ol class="guests fallback">']
    for name, data in g.nodes(data=True):
        if data["kind"] != "guest":
            continue
        text = escape(data["label"].replace("\n", ": "))
        if data.get("url"):
            text = Markup(f'<a href="{escape(data["url"])}">{text}</a>')
        out.append(
            f'<li id="{escape(name)}" class="guest state-{escape(data["state"])}">{text}</li>'
        )
    out.append("</ol>")
    return Markup("".join(out))
