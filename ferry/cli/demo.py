"""``ferry demo``: a migration on the simulated cluster, with its reschedule."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ferry.cli.common import State, fail, guarded
from ferry.cli.output import console, print_hosts, run_with_progress

#: the demo cluster's VM whose first-choice destination fails its check (see demo_cluster.toml)
DEMO_VM = "web-1"


def demo_database_url() -> str:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ferry"
    return f"sqlite:///{base / 'demo.db'}"


@click.command()
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
