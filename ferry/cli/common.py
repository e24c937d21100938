"""The ``ferry`` command. Errors print one line on stderr and exit non-zero; ``--json`` prints
machine-readable output; the exit code of ``migrate``/``resume``/``demo`` is 0 only when the
migration completed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from ferry import errors
from ferry.model import Migration

console = Console()

EXIT_FAILED = 1
EXIT_USAGE = 2
#: the demo cluster's VM whose first-choice destination fails its check (see demo_cluster.toml)
DEMO_VM = "web-1"


def demo_database_url() -> str:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ferry"
    return f"sqlite:///{base / 'demo.db'}"


class State:
    def __init__(self, db: str | None, config: str | None, verbose: int) -> None:
        self.db = db
        self.config = config
        self.verbose = verbose
        self._orch: Any = None
        self._store: Any = None

    def orchestrator(self, database_url: str | None = None) -> Any:
        if self._orch is None:
            from ferry.api import Orchestrator

            self._orch = Orchestrator(database_url or self.db, config=self.config)
        return self._orch

    def store(self) -> Any:
        """Read access to runs (ferry.viz.RunStore): the database only, no driver, no hypervisor."""
        if self._store is None:
            from ferry.config import load_settings
            from ferry.persistence.db import default_database_url
            from ferry.viz.run import RunStore

            url = self.db or load_settings(self.config).database_url or default_database_url()
            self._store = RunStore.open(url)
        return self._store


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"ferry: error: {' '.join(message.split())}", err=True)  # one line, never wrapped
    sys.exit(code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ferry errors into one line on stderr and a non-zero exit."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except errors.FerryError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; the migration can be continued with `ferry resume ID`", 130)

    return wrapper


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def migration_json(m: Migration) -> dict[str, Any]:
    return {
        **m.headline(),
        "block_migration": m.block_migration,
        "attempts": [
            {"host": a.host, "outcome": a.outcome, "reason": a.reason} for a in m.attempts
        ],
        "phases": [
            {"name": p.name, "state": p.state, "seconds": p.seconds, "error": p.error}
            for p in m.phases
        ],
        "history": [{"status": h.status, "at": h.at, "detail": h.detail} for h in m.history],
        "progress": m.progress,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="FERRY_DB", metavar="URL", help="Database URL (env FERRY_DB).")
@click.option(
    "--config", envvar="FERRY_CONFIG", metavar="FILE", help="Config file (env FERRY_CONFIG)."
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="ferry")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: str | None, verbose: int) -> None:
    """Live-migrate running virtual machines between hypervisor hosts."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("taskflow", "alembic", "stevedore"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx.obj = State(db, config, verbose)


# ------------------------------------------------------------------ progress UI
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


# --------------------------------------------------------------------- output
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


# ------------------------------------------------------------------- commands
@cli.command()
@click.option("--speed", type=float, default=None, help="Simulated seconds per wall second.")
@click.option("--json", "as_json", is_flag=True, help="Print the migration as JSON.")
@click.pass_obj
@guarded
def demo(state: State, speed: float | None, as_json: bool) -> None:
    """Migrate a VM on the simulated cluster; its first-choice destination fails its check, so
    the reschedule shows."""
    from ferry.api import Orchestrator
    from ferry.config import load_settings

    settings = load_settings(state.config)
    if speed is not None:
        import dataclasses

        settings = dataclasses.replace(
            settings, simulated=dataclasses.replace(settings.simulated, speed=speed)
        )
    url = state.db or demo_database_url()
    orch = Orchestrator(url, settings=settings)
    sim = next((d for d in orch.drivers.drivers if d.name == "simulated"), None)
    if sim is None:
        fail("the demo runs on the simulated cluster; remove [[hosts]] from the config")
    sim.reset()  # type: ignore[union-attr]
    orch.refresh_host_states()  # the scheduler's cache must forget the cluster before the reset
    if not as_json:
        console.print(f"[bold]ferry demo[/bold]: simulated cluster reset in {orch.db}")
        print_hosts(orch.hosts())
        console.print(
            f"Live-migrating [bold]{DEMO_VM}[/bold]; the scheduler's first choice will fail "
            "its destination check, so watch the reschedule.\n"
        )
    run_with_progress(orch, lambda: orch.live_migrate(DEMO_VM), as_json)


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
            "yes" if h["up"] else "[red]no[/red]",
            "yes" if h["enabled"] else "no",
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


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def hosts(state: State, as_json: bool) -> None:
    """Hosts with capacity, usage, claims, migrations in flight and NUMA cells."""
    data = state.orchestrator().hosts()
    if as_json:
        emit_json(data)
    else:
        print_hosts(data)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def instances(state: State, as_json: bool) -> None:
    """Instances and where they run."""
    data = [i.to_dict() for i in state.orchestrator().instances()]
    if as_json:
        emit_json(data)
        return
    t = Table(show_edge=False)
    for col in ("name", "uuid", "host", "state", "vCPUs", "RAM MiB", "disk GiB"):
        t.add_column(col)
    for i in data:
        t.add_row(
            i["name"],
            i["uuid"],
            i["host"],
            i["power_state"],
            str(i["vcpus"]),
            str(i["memory_mb"]),
            str(i["disk_gb"]),
        )
    console.print(t)


def request_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a migration request, shared by ``migrate`` and ``submit``."""
    options = [
        click.argument("vm"),
        click.option(
            "--to", "destination", metavar="HOST", help="Force the destination (checks still run)."
        ),
        click.option(
            "--block-migrate/--no-block-migrate",
            "block_migration",
            default=None,
            help="Copy local disks too (default: decided by the destination check).",
        ),
        click.option(
            "--max-attempts", type=int, default=None, help="Hosts to try (0 = until they run out)."
        ),
        click.option(
            "--to-group",
            metavar="NAME",
            default=None,
            help="Only hosts of this host group ([scheduler.groups] or the hosts' group label).",
        ),
        click.option(
            "--not-with",
            metavar="VM[,VM..]",
            multiple=True,
            help="Never onto a host where one of these VMs runs or is being migrated to.",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a [migration] setting for this run, e.g. live_migration_downtime=800.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def vm_list(items: tuple[str, ...]) -> list[str]:
    """``--not-with a,b --not-with c`` -> ["a", "b", "c"]."""
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


@cli.command()
@request_options
@click.option(
    "--detach", is_flag=True, help="Print the migration id and return; it runs in the background."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def migrate(
    state: State,
    vm: str,
    destination: str | None,
    block_migration: bool | None,
    max_attempts: int | None,
    to_group: str | None,
    not_with: tuple[str, ...],
    overrides: tuple[str, ...],
    detach: bool,
    as_json: bool,
) -> None:
    """Live-migrate VM (name or UUID)."""
    orch = state.orchestrator()
    parsed = parse_overrides(overrides)
    placement: dict[str, Any] = {
        "to_group": to_group,
        "not_with": vm_list(not_with),
    }
    if detach:
        mid = orch.create(
            vm,
            destination,
            block_migration,
            max_attempts=max_attempts,
            overrides=parsed,
            **placement,
        )
        spawn_resume(state, mid)
        if as_json:
            emit_json({"id": mid, "status": "accepted"})
        else:
            click.echo(mid)
        return
    run_with_progress(
        orch,
        lambda: orch.live_migrate(
            vm,
            destination,
            block_migration,
            max_attempts=max_attempts,
            overrides=parsed,
            **placement,
        ),
        as_json,
    )


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise errors.ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        value: Any
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def spawn_resume(state: State, migration_id: str) -> None:
    """Run the migration in a detached process that outlives this command."""
    args = [sys.executable, "-m", "ferry"]
    if state.db:
        args += ["--db", state.db]
    if state.config:
        args += ["--config", state.config]
    args += ["resume", migration_id, "--quiet"]
    subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


@cli.command(name="list")
@click.option("--status", default=None, help="Only migrations with this status.")
@click.option("--limit", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def list_(state: State, status: str | None, limit: int | None, as_json: bool) -> None:
    """Migrations, newest first."""
    items = state.orchestrator().list(status=status, limit=limit)
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


@cli.command()
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
    """One migration: phases, hosts tried and why, status history, error."""
    if timeline:
        from ferry.viz import timeline_rows, timeline_text

        view = state.store().load(migration_id)
        if as_json:
            emit_json([row.to_dict() for row in timeline_rows(view)])
        else:
            bars = width or max(20, min(80, console.width - 62))
            console.print(timeline_text(view, bars), soft_wrap=True)
        return
    m = state.orchestrator().get(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        print_migration(m)


@cli.command()
@click.argument("migration_id", required=False)
@click.option("--flow", "flow_only", is_flag=True, help="The flow's shape, without a run.")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write FILE: .svg or .png (Graphviz), .dot or .json. Default: DOT on stdout.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "json", "svg", "png"]),
    default=None,
    help="Output format (default: from the file name).",
)
@click.pass_obj
@guarded
def graph(
    state: State, migration_id: str | None, flow_only: bool, output: str | None, fmt: str | None
) -> None:
    """The flow graph of a migration, every atom coloured by its persisted state (read from the
    database only: works for running, finished and interrupted runs)."""
    from ferry.viz import flow_graph, run_graph
    from ferry.viz.output import format_for, graph_bytes, write_graph

    if flow_only == (migration_id is not None):
        raise errors.ConfigError("give a migration ID or --flow")
    g = flow_graph() if flow_only else run_graph(state.store().load(str(migration_id)))
    if output and output != "-":
        written = write_graph(g, output, fmt)
        click.echo(f"wrote {output} ({written})", err=True)
    else:
        click.echo(graph_bytes(g, format_for(None, fmt)), nl=False)  # bytes: binary stdout


@cli.command()
@click.argument("migration_id")
@click.option("-o", "--output", metavar="FILE", help="Write FILE instead of stdout.")
@click.pass_obj
@guarded
def export(state: State, migration_id: str, output: str | None) -> None:
    """A run as JSON for other tools: record, atom states and timings, attempts, timeline, graph."""
    from ferry.viz import export_run
    from ferry.viz.export import dumps

    text = dumps(export_run(state.store().load(migration_id)))
    if output and output != "-":
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free."
)
@click.option(
    "--refresh",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between page updates.",
)
@click.pass_obj
@guarded
def web(state: State, port: int, refresh: float) -> None:
    """A read-only web page on 127.0.0.1: migrations, and each one's live graph and progress."""
    from ferry.web import WebServer

    try:
        server = WebServer(state.store(), port, refresh_seconds=refresh)
    except OSError as exc:
        raise errors.ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    click.echo(f"ferry web: {server.url} (read-only; Ctrl-C stops it)", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@cli.command()
@click.argument("migration_id")
@click.option("--quiet", is_flag=True, help="No progress bar (for detached runs).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def resume(state: State, migration_id: str, quiet: bool, as_json: bool) -> None:
    """Continue a migration whose runner died."""
    orch = state.orchestrator()
    if quiet:
        try:
            m = orch.resume(migration_id)
        except errors.FerryError as exc:
            m = getattr(exc, "migration", None)
            if m is None:
                raise
        sys.exit(0 if m.status == "completed" else EXIT_FAILED)
    run_with_progress(orch, lambda: orch.resume(migration_id), as_json)


@cli.command()
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def abort(state: State, migration_id: str, as_json: bool) -> None:
    """Abort a migration before its switchover (the VM stays on the source)."""
    m = state.orchestrator().abort(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        msg = "cancelled" if m.status == "cancelled" else f"abort requested (now {m.status})"
        click.echo(f"migration {m.id}: {msg}")


@cli.command(name="force-complete")
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def force_complete(state: State, migration_id: str, as_json: bool) -> None:
    """Make a running transfer finish now: post-copy when the migration's policy permits it
    (live_migration_permit_post_copy), else the guest is paused for the rest of the copy."""
    m = state.orchestrator().force_complete(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        click.echo(f"migration {m.id}: force-complete requested (now {m.status})")


# ------------------------------------------------------------------ job store
@cli.command()
@request_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def submit(
    state: State,
    vm: str,
    destination: str | None,
    block_migration: bool | None,
    max_attempts: int | None,
    overrides: tuple[str, ...],
    to_group: str | None,
    not_with: tuple[str, ...],
    as_json: bool,
) -> None:
    """Post a live migration of VM to the job board ([jobboard] url); a conductor runs it.
    Prints the migration id and returns at once."""
    orch = state.orchestrator()
    mid = orch.submit(
        vm,
        destination,
        block_migration,
        max_attempts=max_attempts,
        overrides=parse_overrides(overrides),
        to_group=to_group,
        not_with=vm_list(not_with),
    )
    if as_json:
        row = orch.jobstore.jobs.get(mid) or {}
        status = orch.migrations.field(mid, "status")  # queued, unless a conductor was quicker
        emit_json(
            {"id": mid, "status": status, "job": row.get("job_uuid"), "board": row.get("board")}
        )
    else:
        click.echo(mid)


@cli.command()
@click.option("--name", default=None, help="This conductor's name (default: [conductor] name).")
@click.option(
    "--max-jobs",
    type=click.IntRange(1, 16),
    default=None,
    help="Migrations run at once (default: [conductor] max_jobs).",
)
@click.pass_obj
@guarded
def conductor(state: State, name: str | None, max_jobs: int | None) -> None:
    """Run migrations posted to the job board until SIGTERM or Ctrl-C (then the migrations in
    progress are handed over to other conductors at their next step)."""
    import signal

    from ferry.jobs.conductor import Conductor

    orch = state.orchestrator()
    runner = Conductor(orch, name=name, max_jobs=max_jobs)
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
    try:
        runner.run()
    finally:
        runner.close()
        orch.close()
    click.echo(f"ferry conductor {runner.owner}: stopped", err=True)


@cli.command()
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


def main() -> None:
    cli(prog_name="ferry")


if __name__ == "__main__":  # pragma: no cover
    main()
