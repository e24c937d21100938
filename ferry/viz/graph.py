"""The flow's graph with every node annotated: the shape alone (``flow_graph``) or a run's
persisted state on it (``run_graph``).

Node attributes (all JSON-safe): ``kind`` (task | retry | flow | flow_end), ``parent``, ``depth``,
``order``, ``doc``, ``revert``, ``after_switchover``, ``switchover`` (the atom whose success is the
switchover) and, for a run: ``state`` (TaskFlow's: PENDING, RUNNING, SUCCESS, FAILURE, REVERTING,
REVERTED, RETRYING, ...), ``status`` (the state in lower case, or None), ``seconds``,
``started_at``, ``finished_at``, ``revert_seconds``, ``progress`` (0..1), ``error``,
``failed`` (its latest execution failed, even if reverted since), ``tries`` (retry controllers),
``attempts`` (the reschedule controller: every host tried, with its outcome and reason) and
``label`` (the text drawn in the node). Graph attributes: ``kind`` (flow | run), ``title`` and,
for a run, ``migration``, ``flow_state``, ``runner``, ``switchover_after``.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import networkx as nx
from taskflow import states

from ferry.flows import constants as c
from ferry.viz.run import INTERRUPTED, LIVE, NOT_STARTED, RunStore, RunView
from ferry.viz.shape import flow_shape

#: characters of an error or a reason kept in a node's label (the JSON keeps them whole)
LABEL_WIDTH = 44
LABEL_LINES = 3


def flow_graph() -> nx.DiGraph:
    """The flow's shape, no run (``state`` is None on every node); ``ferry graph --flow``."""
    g = flow_shape()
    g.graph.update(kind="flow", title=f"{c.FLOW_NAME}: the live-migration flow")
    g.graph["switchover_after"] = c.SWITCHOVER_AFTER
    for name, data in g.nodes(data=True):
        data.update(state=None, status=None)
        data["label"] = "\n".join(label_lines(name, data))
    return g


def run_graph(view: RunView) -> nx.DiGraph:
    """The flow's graph of one run, every node annotated with its persisted state."""
    g = flow_shape()
    record = view.record
    g.graph.update(
        kind="run",
        title=run_title(view),
        migration=summary(view),
        flow_state=view.flow_state,
        runner=view.runner.to_dict(),
        switchover_after=c.SWITCHOVER_AFTER,
    )
    for name, atom in view.atoms.items():
        if name not in g:  # an atom this version of the flow does not have: show it apart
            g.add_node(
                name,
                kind=atom.kind,
                parent=None,
                depth=1,
                order=len(g),
                doc="",
                revert="",
                after_switchover=False,
            )
        ex, rv = atom.execute, atom.revert
        progress = atom.done_fraction
        if name == c.TRANSFER and atom.state == states.RUNNING:
            percent = (record.progress or {}).get("percent")
            if isinstance(percent, int | float):
                progress = max(progress or 0.0, float(percent) / 100.0)
        g.nodes[name].update(
            state=atom.state,
            status=atom.state.lower(),
            intention=atom.intention,
            started_at=ex.start if ex else None,
            finished_at=ex.end if ex else None,
            seconds=ex.seconds if ex else None,
            revert_started_at=rv.start if rv else None,
            reverted_at=rv.end if rv else None,
            revert_seconds=rv.seconds if rv else None,
            progress=progress,
            error=atom.error,
            error_type=atom.error_type,
            failed=atom.failed,
            tries=atom.tries,
        )
    for data in g.nodes.values():
        if "state" in data:
            continue
        state: str | None = None
        if data["kind"] in ("task", "retry"):
            state = states.PENDING  # no runner has reached (or loaded) it yet
        elif data["kind"] == "flow":
            retry = data.get("retry")
            if data["parent"] is None:
                state = view.flow_state
            elif retry and retry in view.atoms:
                state = view.atoms[retry].state
        data.update(state=state, status=state.lower() if state else None)
    if g.has_node(c.RESCHEDULE):
        g.nodes[c.RESCHEDULE]["attempts"] = [
            {"host": a.host, "outcome": a.outcome, "reason": a.reason, "at": a.at}
            for a in record.attempts
        ]
    for name, data in g.nodes(data=True):
        data["label"] = "\n".join(label_lines(name, data))
    return g


def migration_graph(source: Any, migration_id: str) -> nx.DiGraph:
    """The run graph of ``migration_id`` read through ``source``: an Orchestrator, a
    :class:`~ferry.viz.run.RunStore`, or anything with ``backend`` and ``migrations``."""
    return run_graph(RunStore.of(source).load(migration_id))


def summary(view: RunView) -> dict[str, Any]:
    """The record's fields a picture or another tool needs first."""
    m = view.record
    return {
        **m.headline(),
        "percent": (m.progress or {}).get("percent"),
        "runner": view.runner.state,
    }


def run_title(view: RunView) -> str:
    m = view.record
    line = (
        f"migration {m.id}: {m.instance_name or m.instance} "
        f"{m.source or '?'} -> {m.destination or '?'}   {m.status}"
    )
    percent = (m.progress or {}).get("percent")
    if isinstance(percent, int | float) and not m.done:
        line += f" {percent:.0f}%"
    elapsed = view.last_time() - view.first_time()
    line += f"   {elapsed:.1f} s"
    if view.runner.state == INTERRUPTED:
        line += (
            "\nINTERRUPTED: no live runner (its process is gone); `ferry resume ID` continues it"
        )
    elif view.runner.state == NOT_STARTED:
        line += "\nnot started yet (no runner has picked it up)"
    elif view.runner.state == LIVE:
        line += f"\nlive, read at {time.strftime('%H:%M:%S', time.localtime(view.read_at))}"
    return line


def label_lines(name: str, data: dict[str, Any]) -> list[str]:
    """The lines drawn in a node: name, state, duration and progress, what failed, hosts tried."""
    kind = data["kind"]
    if kind == "flow_end":
        return []
    if kind == "flow":
        lines = [name if data.get("parent") is None else f"{name} (subflow)"]
        if data.get("state"):
            lines.append(data["state"])
        return lines
    lines = [f"{name} (retry controller)" if kind == "retry" else name]
    state = data.get("state")
    if state == states.PENDING and data.get("started_at"):
        lines.append("PENDING (reset by its retry controller)")
        tried = f"last try: {data['seconds']:.3f} s" if data.get("seconds") is not None else ""
        if data.get("revert_seconds") is not None:
            tried += f", undone in {data['revert_seconds']:.3f} s"
        lines.append(tried.strip(", "))
    elif state:
        parts = [state]
        if data.get("seconds") is not None:
            parts.append(f"{data['seconds']:.3f} s")
        progress = data.get("progress")
        if progress is not None and (state == states.RUNNING or 0.0 < progress < 1.0):
            parts.append(f"{progress * 100:.0f}%")
        earlier = (data.get("revert_started_at") or 0) < (data.get("started_at") or 0)
        if data.get("revert_seconds") is not None and not earlier:
            parts.append(f"undo {data['revert_seconds']:.3f} s")
        lines.append("  ".join(parts))
        if data.get("revert_seconds") is not None and earlier:
            lines.append(f"an earlier try was undone in {data['revert_seconds']:.3f} s")
    if data.get("error"):
        lines += clip(f"error: {data['error']}")
    if data.get("tries") and data["tries"] > 1:
        lines.append(f"subflow run {data['tries']} times")
    attempts = data.get("attempts") or []
    if attempts:
        lines.append(f"hosts tried ({len(attempts)}):")
        for i, a in enumerate(attempts, 1):
            text = f"{i}. {a['host']} {a['outcome']}"
            if a.get("reason"):
                text += f": {a['reason']}"
            lines += clip(text, lines=2)
    if data.get("switchover"):
        lines.append("its success is the switchover")
    return lines


def clip(text: str, width: int = LABEL_WIDTH, lines: int = LABEL_LINES) -> list[str]:
    """``text`` wrapped to ``width`` on at most ``lines`` lines (the last one ellipsised)."""
    text = " ".join(text.split())
    wrapped = textwrap.wrap(text, width, break_on_hyphens=False) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 3].rstrip() + "..."
    return wrapped
