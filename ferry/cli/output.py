"""What commands print with rich: the live progress bar of a run, a migration, the hosts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from ferry import errors
from ferry.cli.common import EXIT_FAILED, emit_json, fail, migration_json
from ferry.model import Migration

console = Console()


class ProgressView:
    """A live bar: phase, memory %, iteration, downtime, ETA."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<20}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
            disable=quiet,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        self.task = self.progress.add_task("migration", total=100, phase="starting", detail="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event: Any) -> None:
        if self.task is None:
            return
        if event.kind == "phase_started" and event.phase:
            self.progress.update(self.task, phase=event.phase)
        elif event.kind == "progress":
            d = event.data
            eta = d.get("eta_s")
            detail = (
                f"{d.get('memory_remaining_mb', 0):.0f} of {d.get('memory_total_mb', 0):.0f} MiB "
                f"left  "
                f"iter {d.get('iteration', 0)}  downtime {d.get('downtime_ms', 0)} ms"
                + (f"  ETA {eta:.1f}s" if eta is not None else "")
            )
            self.progress.update(self.task, completed=d.get("percent", 0.0), detail=detail)
        elif event.kind == "status" and event.status == "completed":
            self.progress.update(self.task, completed=100, phase="completed")
        elif event.kind == "status" and event.status in ("failed", "cancelled", "error"):
            self.progress.update(self.task, phase=event.status)


def run_with_progress(orch: Any, start: Callable[[], Any], as_json: bool) -> None:
    view = ProgressView(
        quiet=as_json or (not console.is_terminal and os.environ.get("FERRY_PROGRESS") != "1")
    )
    unsubscribe = orch.subscribe(view.on_event)
    migration: Migration | None = None
    failure: errors.FerryError | None = None
    try:
        with view:
            migration = start()
    except errors.FerryError as exc:
        migration = getattr(exc, "migration", None)
        if migration is None:
            raise
        failure = exc
    finally:
        unsubscribe()
    assert migration is not None
    migration = orch.get(migration.id)
    if as_json:
        emit_json(migration_json(migration))
    else:
        print_migration(migration)
    if failure is not None:
        fail(str(failure))
    if migration.status != "completed":
        sys.exit(EXIT_FAILED)


def print_migration(m: Migration) -> None:
    colour = {"completed": "green", "failed": "red", "error": "red", "cancelled": "yellow"}.get(
        m.status, "cyan"
    )
    console.print(f"[bold]migration[/bold] {m.id}  [{colour}]{m.status}[/{colour}]")
    console.print(f"  instance     {m.instance_name} ({m.instance})", highlight=False)
    console.print(f"  source       {m.source}", highlight=False)
    console.print(
        f"  destination  {m.destination or '-'}"
        + (f" (requested {m.requested_destination})" if m.requested_destination else ""),
        highlight=False,
    )
    if m.block_migration is not None:
        console.print(f"  block migration  {'yes' if m.block_migration else 'no'}")
    if m.phases:
        t = Table(title="phases", title_justify="left", show_edge=False)
        t.add_column("phase")
        t.add_column("state")
        t.add_column("seconds", justify="right")
        t.add_column("error", overflow="fold")
        for p in m.phases:
            st = {
                "SUCCESS": "green",
                "FAILURE": "red",
                "REVERTED": "yellow",
                "RUNNING": "cyan",
            }.get(p.state, "")
            t.add_row(
                p.name,
                f"[{st}]{p.state}[/{st}]" if st else p.state,
                f"{p.seconds:.3f}" if p.seconds is not None else "",
                p.error or "",
            )
        console.print(t)
    if m.attempts:
        t = Table(title="hosts tried", title_justify="left", show_edge=False)
        t.add_column("host")
        t.add_column("outcome")
        t.add_column("reason", overflow="fold")
        for a in m.attempts:
            t.add_row(a.host, a.outcome, a.reason or "")
        console.print(t)
    if m.history:
        t = Table(title="status history", title_justify="left", show_edge=False)
        t.add_column("at")
        t.add_column("status")
        t.add_column("detail", overflow="fold")
        for h in m.history:
            t.add_row(
                time.strftime("%H:%M:%S", time.localtime(h.at)) + f".{int(h.at * 1000) % 1000:03d}",
                h.status,
                h.detail or "",
            )
        console.print(t)
    result = (m.progress or {}).get("result")
    if result:
        console.print(
            f"  transfer: {result.get('iterations')} iteration(s), "
            f"downtime {result.get('downtime_ms')} ms, "
            f"{result.get('elapsed_s')} s of hypervisor time, lever: {result.get('lever')}",
            highlight=False,
        )
    if m.error:
        console.print(f"  [red]error[/red]: {m.error}", highlight=False)
    for left in m.leftovers:
        console.print(f"  [red]left over[/red]: {left}", highlight=False)


def up_text(host: dict[str, Any]) -> str:
    """The "up" cell: yes, or no with the driver's reason."""
    if host["up"]:
        return "yes"
    reason = host.get("down_reason")
    return f"[red]no[/red]: {escape(reason)}" if reason else "[red]no[/red]"


def print_hosts(hosts: list[dict[str, Any]]) -> None:
    grouped = any(h.get("groups") for h in hosts)
    t = Table(show_edge=False)
    for col in (
        "host",
        "driver",
        "hypervisor",
        "up",
        "enabled",
        "vCPUs used/total",
        "RAM MiB used/total",
        "disk GiB used/total",
        "claimed vCPUs/MiB/GiB",
        "in flight",
        "NUMA cell: free pCPUs, MiB",
        "storage",
        *(["groups"] if grouped else []),
    ):
        t.add_column(col)
    for h in hosts:
        t.add_row(
            h["name"],
            h["driver"],
            f"{h['hypervisor_type']} {h['hypervisor_version']}",
            up_text(h),
            "yes" if h["enabled"] else _disabled(h),
            f"{h['vcpus_used']}/{h['vcpus']}",
            f"{h['memory_mb_used']}/{h['memory_mb']}",
            f"{h['disk_gb_used']}/{h['disk_gb']}",
            f"{h['claimed_vcpus']}/{h['claimed_memory_mb']}/{h['claimed_disk_gb']}",
            str(h.get("migrations_in_flight", 0)),
            format_cells(h.get("numa_cells") or []),
            h.get("storage_group") or "local",
            *([",".join(h.get("groups") or []) or "-"] if grouped else []),
        )
    console.print(t)


def _disabled(h: dict[str, Any]) -> str:
    """``no``, ``no (drain ID: reason)`` for a host a drain disabled, ``no (reason)`` for one an
    operator disabled."""
    reason = h.get("disabled_reason")
    if not h.get("drain"):
        return f"no ({reason})" if reason else "no"
    return f"no (drain {h['drain']}" + (f": {reason})" if reason else ")")


def format_cells(cells: list[dict[str, Any]]) -> str:
    """One line per NUMA cell: ``0: 1,3 15360`` (cell, its free pCPUs, its free MiB)."""
    if not cells:
        return "-"
    return "\n".join(
        f"{c['cell']}: {format_cpuset(c['free_pcpus']) or 'none'}, {c['free_mb']}" for c in cells
    )


def format_cpuset(cpus: list[int]) -> str:
    """``0-3,8,10-11``"""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
