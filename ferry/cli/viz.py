"""The commands that draw runs from the database only: ``graph``, ``export`` and ``web``."""

from __future__ import annotations

from pathlib import Path

import click

from ferry import errors
from ferry.cli.common import State, guarded


@click.command()
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
    database only: works for running, finished and interrupted runs). A drain's ID: one node per
    guest coloured by its state, each linking to its migration's graph (MIGRATION_ID.svg; with
    -o FILE.svg those are written next to FILE)."""
    from ferry.viz import flow_graph, run_graph
    from ferry.viz.output import format_for, graph_bytes, write_graph

    if flow_only == (migration_id is not None):
        raise errors.ConfigError("give a migration ID or --flow")
    drain = None
    if migration_id is not None and state.reads().is_drain(migration_id):
        from ferry.viz.drain import drain_graph, file_link

        drain = state.reads().get_drain(migration_id)
        g = drain_graph(drain, file_link)
    else:
        g = flow_graph() if flow_only else run_graph(state.store().load(str(migration_id)))
    if output and output != "-":
        written = write_graph(g, output, fmt)
        click.echo(f"wrote {output} ({written})", err=True)
        if drain is not None and written == "svg":
            for guest in drain.guests:
                if guest.migration:
                    linked = Path(output).with_name(f"{guest.migration}.svg")
                    write_graph(run_graph(state.store().load(guest.migration)), linked, "svg")
    else:
        click.echo(graph_bytes(g, format_for(None, fmt)), nl=False)  # bytes: binary stdout


@click.command()
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


@click.command()
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
    server.serve_until_signalled(
        ready=lambda: click.echo(f"ferry web: {server.url} (read-only; Ctrl-C stops it)", err=True)
    )
