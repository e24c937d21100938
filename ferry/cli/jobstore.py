"""The job-store commands: ``submit`` posts a migration, ``conductor`` runs posted ones,
``jobs`` lists the board."""

from __future__ import annotations

import os
import time
from typing import Any

import click
from rich.table import Table

from ferry.cli.common import (
    State,
    emit_json,
    guarded,
    request_from_options,
    request_options,
)
from ferry.cli.output import console


@click.command()
@request_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def submit(state: State, as_json: bool, **options: Any) -> None:
    """Post a live migration of VM to the job board ([jobboard] url); a conductor runs it.
    Prints the migration id and returns at once."""
    orch = state.orchestrator()
    mid = orch.submit(request_from_options(**options))
    if as_json:
        row = orch.jobstore.jobs.get(mid) or {}
        status = orch.migrations.field(mid, "status")  # queued, unless a conductor was quicker
        emit_json(
            {"id": mid, "status": status, "job": row.get("job_uuid"), "board": row.get("board")}
        )
    else:
        click.echo(mid)


@click.command()
@click.option("--name", default=None, help="This conductor's name (default: [conductor] name).")
@click.option(
    "--max-jobs",
    type=click.IntRange(1, 16),
    default=None,
    help="Migrations run at once (default: [conductor] max_jobs).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this conductor's Prometheus metrics on this port (0: a free one; needs the "
    "'serve' extra).",
)
@click.option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    help="The address of --metrics-port.",
)
@click.pass_obj
@guarded
def conductor(
    state: State,
    name: str | None,
    max_jobs: int | None,
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Run migrations posted to the job board until SIGTERM or Ctrl-C (then the migrations in
    progress are handed over to other conductors at their next step)."""
    import signal

    from ferry.jobs.conductor import Conductor

    metrics = None
    if metrics_port is not None:
        from ferry.metrics import start_metrics_server

        metrics = start_metrics_server(metrics_port, metrics_addr)
    orch = state.orchestrator()
    runner = Conductor(orch.runner, name=name, max_jobs=max_jobs)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(128 + signum)  # a second signal: leave now (claims expire on their own)
        click.echo(f"ferry conductor: stopping ({signal.Signals(signum).name})", err=True)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(
        f"ferry conductor {runner.owner}: {runner.max_jobs} job(s) at once from "
        f"{runner.safe_url}, lease {runner.ttl:g} s",
        err=True,
    )
    if metrics is not None:
        host, port = metrics.server_address[:2]
        click.echo(
            f"ferry conductor {runner.owner}: metrics on http://{host}:{port}/metrics", err=True
        )
    try:
        runner.run()
    finally:
        if metrics is not None:
            metrics.shutdown()
        runner.close()
        orch.close()
    click.echo(f"ferry conductor {runner.owner}: stopped", err=True)


@click.command()
@click.option(
    "--done",
    "done",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="Also list this many consumed (done) jobs, newest first.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def jobs(state: State, done: int, as_json: bool) -> None:
    """The job board: posted and claimed jobs (by whom, until when, what they wait for) and the
    jobs done."""
    data = state.orchestrator().jobstore.listing(done=done)
    if as_json:
        emit_json(data)
        return
    console.print(f"[bold]job board[/bold] {data['board']}", highlight=False)
    t = Table(show_edge=False)
    for col in ("job", "migration", "instance", "state", "by", "until", "status", "note"):
        # ids whole (they are what `ferry show` and `ferry abort` take); the rest may fold
        t.add_column(col, overflow="fold", no_wrap=col in ("job", "migration"))
    for j in [*data["jobs"], *data["done"]]:
        until = ""
        if j.get("claimed_until"):
            until = time.strftime("%H:%M:%S", time.localtime(j["claimed_until"]))
            until += f" ({j['claim_expires_in']:.0f} s)"
        elif j["state"] == "done" and j.get("consumed_at"):
            until = "done " + time.strftime("%H:%M:%S", time.localtime(j["consumed_at"]))
        t.add_row(
            (j.get("job") or "")[:8],
            j.get("migration_id") or "",
            j.get("instance") or "",
            j["state"],
            j.get("owner") or "",
            until,
            j.get("status") or "",
            j.get("waiting_for") or "",
        )
    console.print(t)
    if data["slots"]:
        used = ", ".join(f"{k} {v}" for k, v in sorted(data["slots"].items()))
        console.print(f"slots in use: {used}", highlight=False)
