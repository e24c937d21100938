"""A Gantt-like text timeline of a run: one row per atom, its execute and revert bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from taskflow import states

from ferry.viz.run import RunView, Span
from ferry.viz.shape import flow_shape, ordered

EXECUTE, REVERT, OPEN, FAILED = "█", "░", ">", "x"
STYLES = {
    ("execute", states.SUCCESS): "green",
    ("execute", states.FAILURE): "red",
    ("execute", states.RUNNING): "cyan",
    ("revert", states.REVERTED): "yellow",
    ("revert", states.REVERTING): "dark_orange",
    ("revert", states.REVERT_FAILURE): "red",
}
STATE_STYLES = {
    states.SUCCESS: "green",
    states.FAILURE: "red",
    states.RUNNING: "cyan",
    states.REVERTED: "yellow",
    states.REVERTING: "dark_orange",
    states.REVERT_FAILURE: "bold red",
    states.PENDING: "dim",
}
NAME_WIDTH = 24


@dataclass
class TimelineRow:
    name: str
    kind: str  # task | retry
    depth: int  # 1 in the main flow, 2 in a subflow
    state: str
    spans: list[Span]
    error: str | None = None
    after_switchover: bool = False
    #: failures of earlier tries (a reschedule re-ran the atom since): their times
    earlier_failures: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "depth": self.depth,
            "state": self.state,
            "after_switchover": self.after_switchover,
            "error": self.error,
            "bars": [
                {
                    "kind": s.kind,
                    "start": s.start,
                    "end": s.end,
                    "seconds": s.seconds,
                    "outcome": s.outcome,
                }
                for s in self.spans
            ],
            "earlier_failures": list(self.earlier_failures),
        }


def timeline_rows(view: RunView) -> list[TimelineRow]:
    """One row per atom of the run, in flow order."""
    shape = flow_shape()
    names = [n for n in ordered(shape) if shape.nodes[n]["kind"] in ("task", "retry")]
    names += sorted(set(view.atoms) - set(names))
    rows = []
    for name in names:
        node = shape.nodes[name] if name in shape else {"depth": 1, "after_switchover": False}
        atom = view.atoms.get(name)
        if atom is None:  # not loaded by any runner yet
            rows.append(
                TimelineRow(
                    name,
                    shape.nodes[name]["kind"],
                    int(node["depth"]),
                    states.PENDING,
                    [],
                    after_switchover=bool(node["after_switchover"]),
                )
            )
            continue
        ex = atom.execute
        failed_at = atom.timestamps.get(states.FAILURE)
        earlier = (
            [failed_at] if failed_at is not None and (ex is None or ex.end != failed_at) else []
        )
        rows.append(
            TimelineRow(
                name=name,
                kind=atom.kind,
                depth=int(node["depth"]),
                state=atom.state,
                spans=atom.spans,
                error=atom.error,
                after_switchover=bool(node["after_switchover"]),
                earlier_failures=earlier,
            )
        )
    return rows


def timeline_text(view: RunView, width: int = 50) -> Text:
    """The timeline as rich text (``.plain`` for plain text)."""
    rows = timeline_rows(view)
    t0, t1 = view.first_time(), view.last_time()
    total = max(t1 - t0, 1e-6)
    width = max(10, width)

    def col(t: float) -> int:
        return max(0, min(width - 1, int((t - t0) / total * (width - 1) + 0.5)))

    m = view.record
    out = Text()
    out.append(f"migration {m.id}", style="bold")
    out.append(f"  {m.instance_name or m.instance}  {m.source or '?'} -> {m.destination or '?'}  ")
    out.append(m.status, style=_status_style(m.status))
    if view.runner.state not in ("finished", "live"):
        out.append(f"  ({view.runner.state})", style="bold red")
    out.append(f"\n{total:.3f} s from first to last step; one column = {total / width:.3f} s\n")
    header = f"{'atom':<{NAME_WIDTH}} {'state':<10} {'run s':>8} {'undo s':>8}  "
    out.append(header, style="bold")
    axis = f"0 s{'':<{max(0, width - 3 - len(f'{total:.2f} s'))}}{total:.2f} s"
    out.append(f"|{axis[:width]}|\n", style="bold")
    switchover_drawn = False
    for row in rows:
        if row.after_switchover and not switchover_drawn:
            out.append(
                f"{'══ switchover: from here the VM never moves back ══':^{len(header)}}\n",
                style="bold red",
            )
            switchover_drawn = True
        name = ("  " * (row.depth - 1) + row.name)[:NAME_WIDTH]
        ex = next((s for s in row.spans if s.kind == "execute"), None)
        rv = next((s for s in row.spans if s.kind == "revert"), None)
        out.append(f"{name:<{NAME_WIDTH}} ")
        out.append(f"{row.state:<10}", style=STATE_STYLES.get(row.state, ""))
        out.append(f" {_secs(ex):>8} {_secs(rv):>8}  |")
        cells: list[tuple[str, str]] = [(" ", "")] * width
        failed_at = -1  # the column of the last failed execute's "x"
        for span in row.spans:
            start, end = col(span.start), col(span.end if span.end is not None else t1)
            if span.kind == "revert" and start <= failed_at < width - 1:
                # a quick failure and its revert in one column: the "x" keeps it, the revert
                # is drawn from the next one
                start, end = failed_at + 1, max(end, failed_at + 1)
            style = STYLES.get((span.kind, span.outcome), "")
            char = EXECUTE if span.kind == "execute" else REVERT
            for i in range(start, max(start, end) + 1):
                cells[i] = (char, style)
            if span.end is None:
                cells[end] = (OPEN, style)
            elif span.kind == "execute" and span.outcome == states.FAILURE:
                cells[end] = (FAILED, "bold red")
                failed_at = end
        for t in row.earlier_failures:
            cells[col(t)] = (FAILED, "bold red")
        for char, style in cells:
            out.append(char, style=style)
        out.append("|")
        if row.error:
            out.append(f" {' '.join(row.error.split())[:60]}", style="red")
        out.append("\n")
    out.append(
        f"{EXECUTE} execute  {REVERT} revert  {OPEN} not finished (running, or its runner died)  "
        f"{FAILED} failed\n",
        style="dim",
    )
    return out


def format_timeline(view: RunView, width: int = 50) -> str:
    """The timeline as plain text."""
    return timeline_text(view, width).plain


def _secs(span: Span | None) -> str:
    if span is None:
        return ""
    return "..." if span.seconds is None else f"{span.seconds:.3f}"


def _status_style(status: str) -> str:
    return {"completed": "green", "failed": "red", "error": "red", "cancelled": "yellow"}.get(
        status, "cyan"
    )


__all__ = ["TimelineRow", "format_timeline", "timeline_rows", "timeline_text"]
