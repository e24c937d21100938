"""The commands on migration records: ``list``, ``show``, ``resume``, ``abort`` and
``force-complete``."""

from __future__ import annotations

import sys
import time

import click
from rich.table import Table

from ferry import errors
from ferry.cli.common import EXIT_FAILED, State, emit_json, guarded, migration_json
from ferry.cli.output import console, print_migration, run_with_progress


@click.command(name="list")
@click.option("--status", default=None, help="Only migrations with this status.")
@click.option("--limit", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def list_(state: State, status: str | None, limit: int | None, as_json: bool) -> None:
    """Migrations, newest first."""
    client = state.remote()
    if client is not None:
        items = client.list(status, limit=limit)
    else:
        items = state.reads().list(status=status, limit=limit)
    if as_json:
        emit_json([migration_json(m) for m in items])
        return
    t = Table(show_edge=False)
    for col in ("id", "status", "instance", "source", "destination", "progress", "created"):
        t.add_column(col)
    for m in items:
        pct = (m.progress or {}).get("percent")
        t.add_row(
            m.id,
            m.status,
            m.instance_name or m.instance,
            m.source or "",
            m.destination or "",
            f"{pct:.0f}%" if pct is not None else "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_at)),
        )
    console.print(t)


@click.command()
@click.argument("migration_id")
@click.option(
    "--timeline", is_flag=True, help="A text timeline: one row per atom, execute and revert bars."
)
@click.option(
    "--width", type=click.IntRange(10, 400), default=None, help="Timeline columns (default: fit)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def show(state: State, migration_id: str, timeline: bool, width: int | None, as_json: bool) -> None:
    """One migration: phases, hosts tried and why, status history, error; or one drain."""
    client = state.remote()
    if client is not None:
        from ferry.cli import remote

        return remote.show(client, migration_id, timeline, as_json)
    if not timeline and state.reads().is_drain(migration_id):
        from ferry.cli.drain import show_drain

        return show_drain(state, migration_id, as_json)
    if timeline:
        from ferry.viz import timeline_rows, timeline_text

        view = state.store().load(migration_id)
        if as_json:
            emit_json([row.to_dict() for row in timeline_rows(view)])
        else:
            bars = width or max(20, min(80, console.width - 62))
            console.print(timeline_text(view, bars), soft_wrap=True)
        return
    m = state.reads().get(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        print_migration(m)


@click.command()
@click.argument("migration_id")
@click.option("--quiet", is_flag=True, help="No progress bar (for detached runs).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def resume(state: State, migration_id: str, quiet: bool, as_json: bool) -> None:
    """Continue a migration (or a drain) whose runner died."""
    orch = state.orchestrator()
    if orch.is_drain(migration_id):
        from ferry.cli.drain import resume_drain

        return resume_drain(state, migration_id, as_json)
    if quiet:
        try:
            m = orch.resume(migration_id)
        except errors.FerryError as exc:
            m = getattr(exc, "migration", None)
            if m is None:
                raise
        sys.exit(0 if m.status == "completed" else EXIT_FAILED)
    run_with_progress(orch, lambda: orch.resume(migration_id), as_json)


@click.command()
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def abort(state: State, migration_id: str, as_json: bool) -> None:
    """Abort a migration before its switchover (the VM stays on the source), or a drain."""
    client = state.remote()
    if client is not None:
        from ferry.cli import remote

        return remote.abort(client, migration_id, as_json)
    if state.orchestrator().is_drain(migration_id):
        from ferry.cli.drain import abort_drain

        return abort_drain(state, migration_id, as_json)
    m = state.orchestrator().abort(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        msg = "cancelled" if m.status == "cancelled" else f"abort requested (now {m.status})"
        click.echo(f"migration {m.id}: {msg}")


@click.command(name="force-complete")
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def force_complete(state: State, migration_id: str, as_json: bool) -> None:
    """Make a running transfer finish now: post-copy when the migration's policy permits it
    (live_migration_permit_post_copy), else the guest is paused for the rest of the copy."""
    client = state.remote()
    m = (client or state.orchestrator()).force_complete(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        click.echo(f"migration {m.id}: force-complete requested (now {m.status})")
