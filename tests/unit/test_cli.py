"""The ferry command: exit codes, one-line errors, --json shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ferry import Orchestrator
from ferry.cli import cli, migrate as migrate_mod
from ferry.cli.common import State
from ferry.model import MigrationStatus
from ferry.persistence.repository import MigrationRepository


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text("[simulated]\nspeed = 0\n[migration]\npost_retry_delay = 0\n")
    return {"FERRY_DB": f"sqlite:///{tmp_path / 'cli.db'}", "FERRY_CONFIG": str(cfg)}


def ferry(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_demo_json(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "demo", "--speed", "0", "--json")
    assert code == 0
    m = json.loads(out)
    assert m["status"] == "completed"
    assert m["instance"] == "web-1" and m["destination"] == "compute-3"
    assert m["attempts"][0]["host"] == "compute-2" and m["attempts"][0]["outcome"] == "rejected"
    assert {"name", "state", "seconds", "error"} <= set(m["phases"][0])


def test_demo_human_output(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "demo", "--speed", "0")
    assert code == 0
    assert "completed" in out and "compute-2" in out and "rejected" in out


def test_hosts_instances_migrate_list_show(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "hosts", "--json")
    assert code == 0
    hosts = {h["name"]: h for h in json.loads(out)}
    assert hosts["compute-5"]["up"] is False and "claimed_memory_mb" in hosts["compute-1"]
    code, out, _ = ferry(env, "instances", "--json")
    assert code == 0 and any(i["name"] == "web-1" for i in json.loads(out))
    code, out, _ = ferry(env, "migrate", "api-1", "--to", "compute-3", "--json")
    assert code == 0
    mid = json.loads(out)["id"]
    code, out, _ = ferry(env, "list", "--json")
    assert [m["id"] for m in json.loads(out)] == [mid]
    code, out, _ = ferry(env, "list", "--status", "failed", "--json")
    assert json.loads(out) == []
    code, out, _ = ferry(env, "show", mid, "--json")
    shown = json.loads(out)
    for key in ("id", "status", "instance", "source", "destination", "attempts", "phases", "error"):
        assert key in shown
    assert shown["status"] == "completed" and shown["source"] == "compute-1"
    code, out, _ = ferry(env, "show", mid)
    assert code == 0 and "post-at-destination" in out
    code, _, err = ferry(env, "force-complete", mid)
    assert code == 1 and f"cannot force-complete migration {mid}: it is completed" in err


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("migrate", "nope"), 1, "instance 'nope' not found"),
        (("migrate", "batch-1"), 1, "is shutdown"),
        (("migrate", "web-1", "--to", "compute-1"), 1, "cannot migrate to itself"),
        (("migrate", "web-1", "--to", "ghost"), 1, "host 'ghost' is not a configured host"),
        (("migrate", "web-1", "--set", "live_migration_downtime=1"), 2, "live_migration_downtime"),
        (("show", "no-such-id"), 1, "migration 'no-such-id' not found"),
        (("list", "--status", "weird"), 2, "unknown status"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    env: dict[str, str], args: tuple[str, ...], code: int, fragment: str
) -> None:
    rc, out, err = ferry(env, *args)
    assert rc == code
    assert err.count("\n") == 1 and err.startswith("ferry: error: ") and fragment in err
    rc, out, _ = ferry(env, "list", "--json")
    assert json.loads(out) == []


def test_bad_database_url_and_bad_toml(env: dict[str, str], tmp_path: Path) -> None:
    rc, _, err = ferry({**env, "FERRY_DB": "nonsense://"}, "hosts")
    assert rc == 2 and err.startswith("ferry: error: ") and err.count("\n") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[migration\n")
    rc, _, err = ferry({**env, "FERRY_CONFIG": str(bad)}, "hosts")
    assert rc == 2 and "not valid TOML" in err and err.count("\n") == 1


def test_a_file_that_is_no_database_is_one_line_naming_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not an SQLite database\n" * 100)
    for args in (("list", "--json"), ("hosts",), ("migrate", "web-1")):
        rc, out, err = ferry({**env, "FERRY_DB": f"sqlite:///{junk}"}, *args)
        assert rc != 0 and out == ""
        assert err.count("\n") == 1 and err.startswith("ferry: error: cannot open database ")
        assert str(junk) in err and "not a database" in err
    assert junk.read_text() == "this is not an SQLite database\n" * 100


def test_a_missing_directory_is_an_error_except_the_default_location(
    env: dict[str, str], tmp_path: Path
) -> None:
    typo = tmp_path / "typo" / "dir" / "x.db"
    for args in (("--db", f"sqlite:///{typo}", "list"), ("--db", f"sqlite:///{typo}", "demo")):
        rc, out, err = ferry(env, *args)
        assert rc != 0 and out == ""
        assert err.count("\n") == 1 and err.startswith("ferry: error: cannot open database ")
        assert f"the directory {typo.parent} does not exist" in err
    assert not (tmp_path / "typo").exists()
    # ferry's data directory is the one that is made
    data = tmp_path / "data"
    no_db_env: dict[str, str | None] = {**env, "FERRY_DB": None, "XDG_DATA_HOME": str(data)}
    rc, out, _ = ferry(no_db_env, "list", "--json")  # type: ignore[arg-type]
    assert rc == 0 and json.loads(out) == [] and (data / "ferry" / "ferry.db").is_file()


def test_database_url_from_the_config_file(tmp_path: Path) -> None:
    db_file = tmp_path / "from-config.db"
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db_file}"\n[simulated]\nspeed = 0\n')
    rc, out, _ = ferry(
        {"FERRY_CONFIG": str(cfg)}, "migrate", "web-1", "--to", "compute-3", "--json"
    )
    assert rc == 0 and json.loads(out)["status"] == "completed"
    assert db_file.exists()
    # --db wins over the file
    other = tmp_path / "flag.db"
    rc, out, _ = ferry({"FERRY_CONFIG": str(cfg)}, "--db", f"sqlite:///{other}", "list", "--json")
    assert rc == 0 and json.loads(out) == [] and other.exists()


def test_failed_migration_exits_non_zero(env: dict[str, str]) -> None:
    rc, out, err = ferry(env, "migrate", "web-1", "--to", "compute-2", "--json")
    assert rc == 1
    assert json.loads(out)["status"] == "failed"
    assert "compute-2" in err


def test_in_progress_is_refused(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrate_mod, "spawn_resume", lambda state, mid: None)  # leave it pending
    rc, out, _ = ferry(env, "migrate", "web-1", "--detach", "--json")
    assert rc == 0
    mid = json.loads(out)["id"]
    rc, _, err = ferry(env, "migrate", "web-1")
    assert rc == 1 and "already being migrated" in err and mid in err
    rc, out, _ = ferry(env, "abort", mid, "--json")
    assert rc == 0 and json.loads(out)["status"] == "cancelled"


def test_detach_runs_the_migration_in_a_resume_process(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_popen = subprocess.Popen
    spawned: list[tuple[list[str], dict[str, Any], subprocess.Popen[bytes]]] = []

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(args, **kwargs)
        spawned.append((list(args), kwargs, proc))
        return proc

    monkeypatch.setattr(migrate_mod.subprocess, "Popen", popen)
    rc, out, _ = ferry(env, "migrate", "web-1", "--detach")
    monkeypatch.undo()
    assert rc == 0
    mid = out.strip()
    [(args, kwargs, proc)] = spawned
    assert proc.wait(timeout=120) == 0  # the detached resume ran the migration to its end
    assert args == [sys.executable, "-m", "ferry", "resume", mid, "--quiet"]
    assert kwargs["start_new_session"] is True
    assert kwargs["env"]["FERRY_DB"] == env["FERRY_DB"]
    assert kwargs["env"]["FERRY_CONFIG"] == env["FERRY_CONFIG"]
    rc, out, _ = ferry(env, "show", mid, "--json")
    assert json.loads(out)["status"] == "completed"


@pytest.mark.parametrize("from_env", [True, False], ids=["FERRY_DB", "--db"])
def test_detach_keeps_the_database_password_off_the_command_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    url = "postgresql://ferry:s3cret-pw@db.example:5432/ferry"
    if from_env:
        monkeypatch.setenv("FERRY_DB", url)
    else:
        monkeypatch.delenv("FERRY_DB", raising=False)
    monkeypatch.delenv("FERRY_CONFIG", raising=False)
    spawned: list[tuple[list[str], dict[str, Any]]] = []

    class FakePopen:
        def __init__(self, args: list[str], **kwargs: Any) -> None:
            spawned.append((list(args), kwargs))

    monkeypatch.setattr(migrate_mod.subprocess, "Popen", FakePopen)
    migrate_mod.spawn_resume(State(url, env["FERRY_CONFIG"], 0), "m-1")
    [(args, kwargs)] = spawned
    assert args == [sys.executable, "-m", "ferry", "resume", "m-1", "--quiet"]
    assert not any("s3cret" in arg or "db.example" in arg for arg in args)
    assert kwargs["env"]["FERRY_DB"] == url  # the child's environment only
    assert kwargs["env"]["FERRY_CONFIG"] == env["FERRY_CONFIG"]
    assert os.environ.get("FERRY_DB") == (url if from_env else None)  # this process unchanged
    assert "FERRY_CONFIG" not in os.environ
    spawned.clear()
    monkeypatch.setenv("FERRY_DB", "sqlite:///stale.db")
    migrate_mod.spawn_resume(State(None, None, 0), "m-2")  # nothing given: nothing passed on
    [(args, kwargs)] = spawned
    assert "FERRY_DB" not in kwargs["env"] and "FERRY_CONFIG" not in kwargs["env"]


def pending(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A migration created by ``migrate --detach`` that nobody runs."""
    with monkeypatch.context() as patch:
        patch.setattr(migrate_mod, "spawn_resume", lambda state, mid: None)
        rc, out, _ = ferry(env, "migrate", "web-1", "--detach")
    assert rc == 0
    return out.strip()


def test_abort_of_a_migration_that_completed_meanwhile_fails(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = pending(env, monkeypatch)
    request_abort = MigrationRepository.request_abort

    def completed_first(self: MigrationRepository, migration_id: str) -> None:
        # another process's runner completes the migration between abort's look and its request
        with Orchestrator(env["FERRY_DB"], config=env["FERRY_CONFIG"]) as other:
            assert other.resume(migration_id).status == "completed"
        request_abort(self, migration_id)

    monkeypatch.setattr(MigrationRepository, "request_abort", completed_first)
    rc, out, err = ferry(env, "abort", mid)
    assert rc == 1 and out == ""
    assert err == f"ferry: error: migration {mid} cannot be aborted: it is already completed\n"
    monkeypatch.undo()
    rc, _, err = ferry(env, "abort", mid, "--json")  # completed before: the same answer
    assert rc == 1 and err.count("\n") == 1 and "already completed" in err
    rc, out, _ = ferry(env, "show", mid, "--json")
    assert json.loads(out)["status"] == "completed"


def test_abort_twice_and_past_the_switchover(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = pending(env, monkeypatch)
    for _ in range(2):  # aborting a cancelled migration is a success
        rc, out, err = ferry(env, "abort", mid)
        assert rc == 0 and out == f"migration {mid}: cancelled\n", err
    late = pending(env, monkeypatch)
    with Orchestrator(env["FERRY_DB"], config=env["FERRY_CONFIG"]) as orch:
        orch.migrations.set_status(late, MigrationStatus.POST_MIGRATING)
    rc, _, err = ferry(env, "abort", late)
    assert rc == 1 and err.count("\n") == 1 and "past the switchover" in err


def test_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferry", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "migrate" in done.stdout
