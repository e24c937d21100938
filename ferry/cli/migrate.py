"""``ferry migrate``: one live migration, watched to its end or (``--detach``) run by a resume
process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import click

from ferry.cli.common import (
    State,
    emit_json,
    guarded,
    request_from_options,
    request_options,
)
from ferry.cli.output import run_with_progress


@click.command()
@request_options
@click.option(
    "--detach", is_flag=True, help="Print the migration id and return; it runs in the background."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@guarded
def migrate(state: State, detach: bool, as_json: bool, **options: Any) -> None:
    """Live-migrate VM (name or UUID)."""
    request = request_from_options(**options)
    client = state.remote()
    if client is not None:
        from ferry.cli import remote

        return remote.migrate(client, request, detach, as_json)
    orch = state.orchestrator()
    if detach:
        mid = orch.create(request)
        spawn_resume(state, mid)
        if as_json:
            emit_json({"id": mid, "status": "accepted"})
        else:
            click.echo(mid)
        return
    run_with_progress(orch, lambda: orch.live_migrate(request), as_json)


def spawn_resume(state: State, migration_id: str) -> None:
    """Run the migration in a detached process that outlives this command.

    The database URL and the config path reach the child through its environment (FERRY_DB,
    FERRY_CONFIG), never its command line: any local user can read a command line (``ps``), and
    the URL may carry a password."""
    env = dict(os.environ)
    for name, value in (("FERRY_DB", state.db), ("FERRY_CONFIG", state.config)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)  # the child resolves its settings as this process did
    subprocess.Popen(
        [sys.executable, "-m", "ferry", "resume", migration_id, "--quiet"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
