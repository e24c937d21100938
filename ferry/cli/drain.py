"""Host maintenance: ``drain``, ``disable``, ``undrain`` and ``drains``; ``show``, ``resume``
and ``abort`` hand a drain's id to the functions here."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.table import Table

from ferry.cli.common import EXIT_FAILED, State, emit_json, guarded
from ferry.cli.output import console
from ferry.model.drain import ORDERS, Drain


@click.command()
@click.argument("host")
@click.option(
    "--max-parallel",
    type=int,
    default=None,
    help="Migrations in flight out of HOST at once (default: [limits] per_source).",
)
@click.option("--to", "to", metavar="HOST", default=None, help="Move every guest to this host.")
@click.option("--to-group", metavar="NAME", default=None, help="Only hosts of this host group.")
@click.option(
    "--order", type=click.Choice(ORDERS), default="smallest", help="Which guests go first (RAM)."
)
@click.option("--reason", metavar="TEXT", default=None, help="Why (shown by `ferry hosts`).")
@click.option(
    "--not-together",
    metavar="VM,VM[,...]",
    multiple=True,
    help="An anti-affinity group: these guests end on different hosts (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--detach", is_flag=True, help="Print the drain id and return; it runs in the background."
)
@click.option(
    "--submit", is_flag=True, help="Post its migrations to the job store; conductors run them."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def drain(
    state: State,
    host: str,
    max_parallel: int | None,
    to: str | None,
    to_group: str | None,
    order: str,
    reason: str | None,
    not_together: tuple[str, ...],
    dry_run: bool,
    detach: bool,
    submit: bool,
    as_json: bool,
) -> None:
    """Empty HOST for maintenance: disable it for scheduling and live-migrate every running
    guest away, at most --max-parallel at once. Exits 0 only when HOST holds no running guest."""
    orch = state.orchestrator()
    groups = [[n.strip() for n in g.split(",") if n.strip()] for g in not_together]
    if dry_run:
        plan = orch.plan_drain(
            host,
            max_parallel=max_parallel,
            to=to,
            to_group=to_group,
            order=order,
            not_together=groups,
        )
        if as_json:
            emit_json({"host": host, "dry_run": True, "guests": [e.to_dict() for e in plan]})
            return
        t = Table(show_edge=False)
        for col in ("instance", "RAM MiB", "destination", "skipped"):
            t.add_column(col)
        for e in plan:
            why = e.skipped or ""
            if e.reasons:
                why += "".join(f"\n  {h}: {r}" for h, r in sorted(e.reasons.items()))
            t.add_row(e.instance, str(e.memory_mb), e.destination or "-", why)
        console.print(t)
        return
    options: dict[str, Any] = {
        "max_parallel": max_parallel,
        "to": to,
        "to_group": to_group,
        "order": order,
        "reason": reason,
        "submit": submit,
        "not_together": groups,
    }
    if detach:
        from ferry.cli.migrate import spawn_resume

        drain_id = orch.create_drain(host, **options)
        spawn_resume(state, drain_id)  # `ferry resume ID` in a process of its own
        if as_json:
            emit_json({"id": drain_id, "host": host, "status": "running"})
        else:
            click.echo(drain_id)
        return
    _drive(state, lambda: orch.drain(host, **options), as_json)


@click.command()
@click.argument("host")
@click.option("--reason", metavar="TEXT", default=None, help="Why (shown by `ferry hosts`).")
@click.pass_obj
@guarded
def disable(state: State, host: str, reason: str | None) -> None:
    """Disable HOST for scheduling without draining it (its guests stay); `ferry undrain HOST`
    enables it again."""
    state.orchestrator().disable_host(host, reason)
    click.echo(f"{host}: disabled" + (f" ({reason})" if reason else ""))


@click.command()
@click.argument("host")
@click.pass_obj
@guarded
def undrain(state: State, host: str) -> None:
    """Enable HOST for scheduling again, whether a drain or `ferry disable` disabled it (refused
    while a drain of HOST is running)."""
    drain_id = state.orchestrator().undrain(host)
    click.echo(f"{host}: enabled" + (f" (was disabled by drain {drain_id})" if drain_id else ""))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def drains(state: State, as_json: bool) -> None:
    """Drains (host maintenance), newest first."""
    items = state.reads().drains()
    if as_json:
        emit_json([d.to_dict() for d in items])
        return
    t = Table(show_edge=False)
    for col in ("id", "host", "status", "moved", "failed", "skipped", "reason", "created"):
        t.add_column(col)
    for d in items:
        c = d.counts()
        t.add_row(
            d.id,
            d.host,
            d.status,
            str(c["completed"]),
            str(c["failed"]),
            str(c["skipped"]),
            d.reason or "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at)),
        )
    console.print(t)


# ------------------------------------------------------- shared with records
def show_drain(state: State, drain_id: str, as_json: bool) -> None:
    d = state.reads().get_drain(drain_id)
    if as_json:
        emit_json(d.to_dict())
    else:
        print_drain(d)


def resume_drain(state: State, drain_id: str, as_json: bool) -> None:
    orch = state.orchestrator()
    _drive(state, lambda: orch.resume(drain_id), as_json)


def abort_drain(state: State, drain_id: str, as_json: bool) -> None:
    d = state.orchestrator().abort_drain(drain_id)
    if as_json:
        emit_json(d.to_dict())
    else:
        msg = d.status if d.done else f"abort requested (now {d.status})"
        click.echo(f"drain {d.id}: {msg}")


def _drive(state: State, start: Any, as_json: bool) -> None:
    """Run a drain with one line per guest change and a total; then the report and the exit
    code (0 only when the host holds no running guest)."""
    orch = state.orchestrator()

    def on_event(event: Any) -> None:
        data = event.data
        if event.kind != "drain" or "instance" not in data or as_json:
            return
        line = f"  {data['instance']:<24} {data['state']}"
        if data["state"] == "completed":
            line += f" on {data['destination']}"
        elif data["state"] == "running":
            line += f" (migration {data['migration']})"
        elif data.get("reason"):
            line += f": {data['reason']}"
        click.echo(line)
        if data["state"] in ("completed", "failed", "skipped"):
            d = orch.get_drain(data["drain"])
            c = d.counts()
            click.echo(
                f"  total: {c['completed']} moved, {c['failed']} failed, {c['skipped']} "
                f"skipped, {c['running']} running, {c['queued']} queued of {len(d.guests)}"
            )

    unsubscribe = orch.subscribe(on_event)
    try:
        d: Drain = start()
    finally:
        unsubscribe()
    if as_json:
        emit_json(d.to_dict())
    else:
        print_drain(d)
    left = [i.name for i in orch.instances() if i.host == d.host and i.power_state == "running"]
    if left:
        click.echo(f"{d.host} still runs {', '.join(sorted(left))}", err=True)
        sys.exit(EXIT_FAILED)


def print_drain(d: Drain) -> None:
    colour = {"completed": "green", "failed": "red", "partial": "yellow"}.get(d.status, "cyan")
    console.print(f"[bold]drain[/bold] {d.id}  [{colour}]{d.status}[/{colour}]")
    console.print(f"  host     {d.host}" + (f" ({d.reason})" if d.reason else ""), highlight=False)
    c = d.counts()
    console.print(
        f"  guests   {len(d.guests)}: {c['completed']} moved, {c['failed']} failed, "
        f"{c['skipped']} skipped, {c['running']} running, {c['queued']} queued",
        highlight=False,
    )
    t = Table(show_edge=False)
    for col in ("instance", "state", "destination", "migration", "reason"):
        t.add_column(col)
    for g in d.guests:
        t.add_row(g.instance, g.state, g.destination or "-", g.migration or "-", g.reason or "")
    console.print(t)
