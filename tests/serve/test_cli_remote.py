"""The CLI through a server: ``--server URL`` / FERRY_SERVER with FERRY_TOKEN for migrate, list,
show, abort, force-complete and hosts (ferry.client.Client); the database is never opened (the
local database URL points nowhere), other commands refuse a server in one line, a refusal of the
server is one line without the token."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from ferry import Orchestrator
from ferry.cli import cli
from tests.serve.conftest import Service


def ferry(service: Service, tmp_path: Path, *args: str, token: str | None = None) -> Result:
    env = {
        "FERRY_SERVER": service.url,
        "FERRY_TOKEN": token or service.operator,
        "FERRY_DB": f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}",  # never opened
        "FERRY_CONFIG": None,
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_the_cli_through_a_server(service: Service, orch: Orchestrator, tmp_path: Path) -> None:
    done = ferry(service, tmp_path, "migrate", "web-1", "--to", "compute-3", "--json")
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert (record["status"], record["destination"]) == ("completed", "compute-3")
    assert orch.get(record["id"]).status == "completed"  # the server's database
    detached = ferry(service, tmp_path, "migrate", "web-2", "--detach")
    assert detached.exit_code == 0
    mid = detached.stdout.strip()
    service.finished.wait(mid)
    listed = ferry(service, tmp_path, "list", "--json", token=service.reader)
    assert [m["id"] for m in json.loads(listed.stdout)] == [mid, record["id"]]
    assert "web-2" in ferry(service, tmp_path, "list", token=service.reader).stdout
    shown = ferry(service, tmp_path, "show", mid, "--json", token=service.reader)
    assert json.loads(shown.stdout)["status"] == "completed"
    assert "compute-2" in ferry(service, tmp_path, "show", mid).stdout  # its source
    hosts = json.loads(ferry(service, tmp_path, "hosts", "--json").stdout)
    assert "compute-1" in {h["name"] for h in hosts}
    late = ferry(service, tmp_path, "force-complete", mid)
    assert late.exit_code == 1
    assert "409 InvalidMigrationState" in late.stderr and service.operator not in late.stderr
    waiting = orch.create("api-1")  # accepted, nobody runs it: the abort reverts it
    aborted = ferry(service, tmp_path, "abort", waiting)
    assert aborted.exit_code == 0 and f"migration {waiting}: cancelled" in aborted.stdout
    assert orch.get(waiting).status == "cancelled"


def test_refusals_are_one_line(service: Service, tmp_path: Path) -> None:
    denied = ferry(service, tmp_path, "migrate", "web-1", token=service.reader)
    assert denied.exit_code == 1 and "403" in denied.stderr
    assert service.reader not in denied.output
    missing = ferry(service, tmp_path, "show", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (
        "ferry: error: 404 MigrationNotFound: migration 'nope' not found"
    )
    local_only = ferry(service, tmp_path, "drains")
    assert local_only.exit_code == 2 and "drop --server" in local_only.stderr
    assert len(local_only.stderr.strip().splitlines()) == 1
