"""``ferry hosts`` and ``ferry instances``: what the drivers and the database know of the
cluster."""

from __future__ import annotations

import click
from rich.table import Table

from ferry.cli.common import State, emit_json, guarded
from ferry.cli.output import console, print_hosts


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def hosts(state: State, as_json: bool) -> None:
    """Hosts with capacity, usage, claims, migrations in flight and NUMA cells."""
    client = state.remote()
    data = client.hosts() if client is not None else state.reads().hosts()
    if as_json:
        emit_json(data)
    else:
        print_hosts(data)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def instances(state: State, as_json: bool) -> None:
    """Instances and where they run."""
    data = [i.to_dict() for i in state.reads().instances()]
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
