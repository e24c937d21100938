"""The ``ferry`` command loads its command modules lazily: ``import ferry.cli``, ``ferry --help``
and ``ferry --version`` import no command module and nothing heavy (structural, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from ferry.cli import COMMANDS, LazyGroup, cli

#: what a start-up must not load: the API (TaskFlow engines, the database layers), the viz and web
#: packages' libraries, Alembic, SQLAlchemy's ORM (ferry's tables are Core tables) and, on a SQLite
#: database, SQLAlchemy's PostgreSQL dialect
HEAVY = (
    "flask",
    "networkx",
    "taskflow.engines",
    "alembic",
    "ferry.api",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
)

#: run in a fresh interpreter; prints the modules loaded at exit as JSON on stderr's last line
PRELUDE = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
)


def modules_after(code: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def command_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith("ferry.cli.") and m != "ferry.cli.common")


def test_import_loads_no_command_and_nothing_heavy() -> None:
    _, modules = modules_after("import ferry.cli")
    assert "ferry.cli" in modules
    assert heavy(modules) == [] and command_modules(modules) == []
    assert "rich" not in modules


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_load_no_command_and_nothing_heavy(option: str) -> None:
    out, modules = modules_after(
        f"from ferry.cli import main\nsys.argv = ['ferry', {option!r}]\nmain()"
    )
    assert heavy(modules) == [] and command_modules(modules) == []
    if option == "--help":
        for name in COMMANDS:
            assert f"  {name} " in out  # every command listed with its help
    else:
        assert out.startswith("ferry, version ")


def test_command_modules_import_nothing_heavy() -> None:
    """Loading every command (what ``ferry CMD --help`` does) leaves the heavy imports to the
    commands' bodies."""
    _, modules = modules_after(
        "import click\nfrom ferry.cli import COMMANDS, cli\n"
        "ctx = click.Context(cli)\n"
        "for name in COMMANDS: assert cli.get_command(ctx, name) is not None\n"
    )
    assert len(command_modules(modules)) >= 6
    assert heavy(modules) == []


def test_the_map_holds_each_command_and_its_own_help() -> None:
    ctx = click.Context(cli)
    for name, (path, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, path
        first_paragraph = (command.help or "").split("\n\n")[0]
        assert " ".join(first_paragraph.split()) == " ".join(short.split()), name


def test_help_lists_the_same_as_click_does_for_the_loaded_commands() -> None:
    from click.testing import CliRunner

    lazy = LazyGroup(name="ferry", lazy=COMMANDS)  # nothing loaded: the list comes from the map
    plain = click.Group(name="ferry")  # Click's own rendering, from the commands themselves
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        plain.add_command(command, name)
    for width in (60, 80, 200):
        lazy_help = CliRunner().invoke(lazy, ["--help"], terminal_width=width).stdout
        assert lazy.commands == {}
        plain_help = CliRunner().invoke(plain, ["--help"], terminal_width=width).stdout
        assert lazy_help.split("Commands:")[1] == plain_help.split("Commands:")[1]
        assert "migrate" in lazy_help and "Live-migrate VM (name or UUID)." in lazy_help


# ------------------------------------------------------------------------ read commands
#: the read commands, each with and without --json ("ID": the migration made by the fixture)
READ_COMMANDS = [
    (*cmd, *flag)
    for cmd in (("list",), ("show", "ID"), ("hosts",), ("instances",))
    for flag in ((), ("--json",))
]


@pytest.fixture(scope="module")
def read_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """A small database (one completed migration on the simulated cluster) and its env."""
    import os

    from ferry import Orchestrator

    tmp = tmp_path_factory.mktemp("reads")
    cfg = tmp / "ferry.toml"
    cfg.write_text("[simulated]\nspeed = 0\n[migration]\npost_retry_delay = 0\n")
    env = {
        **os.environ,
        "FERRY_DB": f"sqlite:///{tmp / 'reads.db'}",
        "FERRY_CONFIG": str(cfg),
        "COLUMNS": "250",  # the tables' ids unwrapped
    }
    with Orchestrator(env["FERRY_DB"], config=cfg) as orch:
        migration = orch.live_migrate("api-1", "compute-3")
    return env, migration.id


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_load_nothing_heavy(
    read_env: tuple[dict[str, str], str], args: tuple[str, ...]
) -> None:
    """``ferry list/show/hosts/instances`` open the database and the drivers only: no Alembic
    (the schema is checked with one query), no TaskFlow engine, networkx, Flask or API."""
    env, migration_id = read_env
    argv = [migration_id if a == "ID" else a for a in args]
    code = f"from ferry.cli import cli\ncli({argv!r}, prog_name='ferry', standalone_mode=False)\n"
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert "ferry.readside" in modules and "sqlalchemy" in modules  # it did open the database
    assert heavy(modules) == []
    assert not any(m.startswith("taskflow.persistence.backends") for m in modules)
    if args[0] in ("list", "show"):
        assert migration_id in done.stdout
    if args[0] == "show" and "--json" in args:
        assert [p["name"] for p in json.loads(done.stdout)["phases"]][-1] == "complete"
