"""The ``ferry`` command. Errors print one line on stderr and exit non-zero; ``--json`` prints
machine-readable output; the exit code of ``migrate``/``resume``/``demo`` is 0 only when the
migration completed.

The root group knows each command by name, import path and one-line help; a command's module
(and what it needs: the API, TaskFlow, the viz or web packages) is imported only when that
command runs, so ``ferry --help`` and ``ferry --version`` import click and little else.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from ferry.cli.common import State

#: command name -> ("module:attribute", the first paragraph of the command's help). The help is
#: here so that ``ferry --help`` imports no command module; a test keeps it equal to the
#: command's own docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "abort": (
        "ferry.cli.records:abort",
        "Abort a migration before its switchover (the VM stays on the source), or a drain.",
    ),
    "conductor": (
        "ferry.cli.jobstore:conductor",
        "Run migrations posted to the job board until SIGTERM or Ctrl-C (then the migrations in "
        "progress are handed over to other conductors at their next step).",
    ),
    "demo": (
        "ferry.cli.demo:demo",
        "Migrate a VM on the simulated cluster; its first-choice destination fails its check, so "
        "the reschedule shows.",
    ),
    "drain": (
        "ferry.cli.drain:drain",
        "Empty HOST for maintenance: disable it for scheduling and live-migrate every running "
        "guest away, at most --max-parallel at once. Exits 0 only when HOST holds no running "
        "guest.",
    ),
    "disable": (
        "ferry.cli.drain:disable",
        "Disable HOST for scheduling without draining it (its guests stay); `ferry undrain HOST` "
        "enables it again.",
    ),
    "drains": ("ferry.cli.drain:drains", "Drains (host maintenance), newest first."),
    "export": (
        "ferry.cli.viz:export",
        "A run as JSON for other tools: record, atom states and timings, attempts, timeline, "
        "graph.",
    ),
    "force-complete": (
        "ferry.cli.records:force_complete",
        "Make a running transfer finish now: post-copy when the migration's policy permits it "
        "(live_migration_permit_post_copy), else the guest is paused for the rest of the copy.",
    ),
    "graph": (
        "ferry.cli.viz:graph",
        "The flow graph of a migration, every atom coloured by its persisted state (read from "
        "the database only: works for running, finished and interrupted runs). A drain's ID: "
        "one node per guest coloured by its state, each linking to its migration's graph "
        "(MIGRATION_ID.svg; with -o FILE.svg those are written next to FILE).",
    ),
    "hosts": (
        "ferry.cli.inventory:hosts",
        "Hosts with capacity, usage, claims, migrations in flight and NUMA cells.",
    ),
    "instances": ("ferry.cli.inventory:instances", "Instances and where they run."),
    "jobs": (
        "ferry.cli.jobstore:jobs",
        "The job board: posted and claimed jobs (by whom, until when, what they wait for) and "
        "the jobs done.",
    ),
    "list": ("ferry.cli.records:list_", "Migrations, newest first."),
    "migrate": ("ferry.cli.migrate:migrate", "Live-migrate VM (name or UUID)."),
    "resume": (
        "ferry.cli.records:resume",
        "Continue a migration (or a drain) whose runner died.",
    ),
    "serve": (
        "ferry.cli.serve:serve",
        "Serve the web pages, the JSON API (/api/v1, bearer tokens), live events and /metrics; "
        "unfinished migrations are resumed at start.",
    ),
    "show": (
        "ferry.cli.records:show",
        "One migration: phases, hosts tried and why, status history, error; or one drain.",
    ),
    "submit": (
        "ferry.cli.jobstore:submit",
        "Post a live migration of VM to the job board ([jobboard] url); a conductor runs it. "
        "Prints the migration id and returns at once.",
    ),
    "token": (
        "ferry.cli.serve:token",
        "Bearer tokens of `ferry serve`: create (printed once), list, revoke.",
    ),
    "undrain": (
        "ferry.cli.drain:undrain",
        "Enable HOST for scheduling again, whether a drain or `ferry disable` disabled it "
        "(refused while a drain of HOST is running).",
    ),
    "web": (
        "ferry.cli.viz:web",
        "A read-only web page on 127.0.0.1: migrations, and each one's live graph and progress.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (Click: lazily loading subcommands)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, tuple[str, str]] = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = self.lazy_commands[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a wrong map entry
            raise TypeError(f"{self.lazy_commands[cmd_name][0]} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the map, as Click would write it, without importing them."""
        names = self.list_commands(ctx)
        if not names:  # pragma: no cover
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:  # not loaded: a stand-in with the map's help, shortened alike
                command = click.Command(name, help=self.lazy_commands[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="FERRY_DB", metavar="URL", help="Database URL (env FERRY_DB).")
@click.option(
    "--config", envvar="FERRY_CONFIG", metavar="FILE", help="Config file (env FERRY_CONFIG)."
)
@click.option(
    "--server",
    envvar="FERRY_SERVER",
    metavar="URL",
    help="Talk to this `ferry serve` (env FERRY_SERVER; its token: env FERRY_TOKEN) for migrate, "
    "list, show, abort, force-complete and hosts.",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="ferry")
@click.pass_context
def cli(
    ctx: click.Context, db: str | None, config: str | None, server: str | None, verbose: int
) -> None:
    """Live-migrate running virtual machines between hypervisor hosts."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("taskflow", "alembic", "stevedore"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx.obj = State(db, config, verbose, server)


def main() -> None:
    cli(prog_name="ferry")


if __name__ == "__main__":  # pragma: no cover
    main()
