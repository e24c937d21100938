"""What every command module shares: the state the root group passes down, one-line errors and
exit codes, JSON output, and the options of a migration request. Imports nothing heavy (no
rich, no API): the root group imports this module for ``ferry --help`` too."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ferry import errors
from ferry.model import MigrationRequest

if TYPE_CHECKING:
    from ferry.model import Migration

EXIT_FAILED = 1
EXIT_USAGE = 2


#: the commands that talk to a ``ferry serve`` when given ``--server`` (or FERRY_SERVER)
REMOTE_COMMANDS = ("migrate", "list", "show", "abort", "force-complete", "hosts")


class State:
    def __init__(
        self, db: str | None, config: str | None, verbose: int, server: str | None = None
    ) -> None:
        self.db = db
        self.config = config
        self.verbose = verbose
        self.server = server
        self._orch: Any = None
        self._reads: Any = None
        self._store: Any = None

    def remote(self) -> Any:
        """The :class:`ferry.client.Client` of ``--server`` (FERRY_SERVER) with the token of
        FERRY_TOKEN (never an option: a command line is visible to every local user), or None
        when no server is given."""
        if not self.server:
            return None
        import os

        from ferry.client import Client

        return Client(self.server, os.environ.get("FERRY_TOKEN") or None)

    def local(self, allowed: bool = False) -> None:
        """Refuse to work on the database while a server is given (unless ``allowed``)."""
        if self.server and not allowed:
            raise errors.ConfigError(
                "this command works on the database, not through a server: drop --server "
                f"(FERRY_SERVER); with a server: {', '.join(REMOTE_COMMANDS)}"
            )

    def orchestrator(self, database_url: str | None = None, *, local: bool = False) -> Any:
        self.local(local)
        if self._orch is None:
            from ferry.api import Orchestrator

            self._orch = Orchestrator(database_url or self.db, config=self.config)
        return self._orch

    def reads(self) -> Any:
        """The queries of the read commands (ferry.readside.ReadSide): records, phases, hosts and
        instances without the runner, so no TaskFlow engine, networkx or Alembic is imported."""
        self.local()
        if self._reads is None:
            from ferry.readside import ReadSide

            self._reads = ReadSide.open(self.db, config=self.config)
        return self._reads

    def store(self, *, local: bool = False) -> Any:
        """Read access to runs (ferry.viz.RunStore): the database only, no driver, no hypervisor."""
        self.local(local)
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
    """Print ``data`` as JSON: an object indented, a list one item per line (each item by the
    json module's C encoder, which an ``indent`` would turn off: the pure-Python encoder took a
    third of a second for ``ferry list --json`` of 1,000 migrations)."""
    if isinstance(data, list) and data:
        items = ",\n  ".join(json.dumps(item, sort_keys=True, default=str) for item in data)
        click.echo(f"[\n  {items}\n]")
    else:
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
        "transfer_started_at": m.transfer_started_at,
    }


# ------------------------------------------------------------ migration request
def request_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a migration request, shared by ``migrate`` and ``submit``; the command
    takes them as ``**options`` and hands them to :func:`request_from_options`."""
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


def request_from_options(
    *,
    vm: str,
    destination: str | None,
    block_migration: bool | None,
    max_attempts: int | None,
    to_group: str | None,
    not_with: tuple[str, ...],
    overrides: tuple[str, ...],
) -> MigrationRequest:
    """The one request the options of :func:`request_options` make (ConfigError for a bad
    ``--set``); the API validates it."""
    return MigrationRequest(
        instance=vm,
        destination=destination,
        block_migration=block_migration,
        max_attempts=max_attempts,
        overrides=parse_overrides(overrides),
        to_group=to_group,
        not_with=vm_list(not_with),
    )


def vm_list(items: tuple[str, ...]) -> list[str]:
    """``--not-with a,b --not-with c`` -> ["a", "b", "c"]."""
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (VALUE as JSON where it parses, else the text); one
    ConfigError naming every malformed item."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            problems.append(f"--set expects KEY=VALUE, got {item!r}")
            continue
        if not key:
            problems.append(f"--set {item!r}: the key before '=' is missing")
            continue
        value: Any
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    if problems:
        raise errors.ConfigError("; ".join(problems))
    return out
