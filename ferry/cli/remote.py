"""The commands that talk to a ``ferry serve`` (``--server URL`` or FERRY_SERVER, the token in
FERRY_TOKEN) through :class:`ferry.client.Client`: ``migrate``, ``list``, ``show``, ``abort``,
``force-complete``, ``hosts``. The same output and exit codes as on the database; a refusal of
the server is one line (``ferry: error: 404 MigrationNotFound: ...``), exit 1."""

from __future__ import annotations

import sys
from typing import Any

import click

from ferry import errors
from ferry.cli.common import EXIT_FAILED, emit_json, migration_json
from ferry.model import MigrationRequest


def migrate(client: Any, request: MigrationRequest, detach: bool, as_json: bool) -> None:
    """Post the request; with ``detach`` print the id, else follow its events to the end."""
    mid = client.live_migrate(request)
    if detach:
        if as_json:
            emit_json({"id": mid, "status": "accepted"})
        else:
            click.echo(mid)
        return
    for _event in client.events(mid):  # ends after the migration's terminal status
        pass
    finished(client.get(mid), as_json)


def finished(m: Any, as_json: bool) -> None:
    from ferry.cli.output import print_migration

    if as_json:
        emit_json(migration_json(m))
    else:
        print_migration(m)
    if m.status != "completed":
        sys.exit(EXIT_FAILED)


def show(client: Any, migration_id: str, timeline: bool, as_json: bool) -> None:
    if timeline:
        raise errors.ConfigError("--timeline reads the database; not with --server")
    from ferry.cli.output import print_migration

    m = client.get(migration_id)
    if as_json:
        emit_json(migration_json(m))
    else:
        print_migration(m)


def abort(client: Any, migration_id: str, as_json: bool) -> None:
    """A migration's abort, or a drain's when the id names no migration."""
    from ferry.client import ClientError

    try:
        m = client.abort(migration_id)
    except ClientError as exc:
        if exc.code != "MigrationNotFound":
            raise
        drain = client.abort_drain(migration_id)
        if as_json:
            emit_json(drain.to_dict())
        else:
            click.echo(f"drain {drain.id}: {drain.status}")
        return
    if as_json:
        emit_json(migration_json(m))
    else:
        msg = "cancelled" if m.status == "cancelled" else f"abort requested (now {m.status})"
        click.echo(f"migration {m.id}: {msg}")
