"""``ferry drain`` / ``undrain`` / ``drains`` and a drain id given to ``show``, ``abort`` and
``force-complete``: exit codes, one-line errors, --json shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferry.cli import cli
from tests.drain.helpers import drain_cluster


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "ferry.toml"
    cluster = drain_cluster(tmp_path, guests=3)
    cfg.write_text(
        f'[simulated]\nspeed = 0\ncluster = "{cluster}"\n[migration]\npost_retry_delay = 0\n'
    )
    return {"FERRY_DB": f"sqlite:///{tmp_path / 'cli.db'}", "FERRY_CONFIG": str(cfg)}


def ferry(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "drain", "src", "--dry-run", "--json", "--order", "name")
    assert code == 0
    plan = json.loads(out)
    assert plan["dry_run"] is True
    guests = {g["instance"]: g for g in plan["guests"]}
    assert [g["instance"] for g in plan["guests"]] == sorted(guests)
    assert guests["idle-1"]["skipped"] == "not running (paused)"
    assert guests["huge-1"]["skipped"] == "fits nowhere"
    assert set(guests["huge-1"]["reasons"]) == {"dst-1", "dst-2", "old"}
    assert guests["g-00"]["destination"] in ("dst-1", "dst-2")
    code, out, _ = ferry(env, "drain", "src", "--dry-run")
    assert code == 0 and "fits nowhere" in out and "dst-1:" in out
    code, out, _ = ferry(env, "drains", "--json")
    assert json.loads(out) == []
    code, out, _ = ferry(env, "hosts", "--json")
    assert all(h["enabled"] for h in json.loads(out))


def test_drain_show_hosts_undrain(env: dict[str, str]) -> None:
    code, out, err = ferry(env, "drain", "src", "--max-parallel", "2", "--reason", "bios")
    assert code == 1 and "src still runs huge-1" in err  # the guest that fits nowhere
    assert "g-00" in out and "completed on dst-" in out and "total: " in out
    code, out, _ = ferry(env, "drains", "--json")
    (d,) = json.loads(out)
    assert d["host"] == "src" and d["status"] == "partial" and d["reason"] == "bios"
    code, out, _ = ferry(env, "show", d["id"], "--json")
    shown = json.loads(out)
    assert {"id", "host", "status", "guests"} <= set(shown)
    guests = {g["instance"]: g for g in shown["guests"]}
    assert {"instance", "state", "migration", "destination", "reason"} <= set(guests["g-00"])
    assert guests["g-00"]["state"] == "completed" and guests["g-00"]["migration"]
    code, out, _ = ferry(env, "show", guests["g-00"]["migration"], "--json")
    assert code == 0 and json.loads(out)["status"] == "completed"  # an ordinary migration
    code, out, _ = ferry(env, "show", d["id"])
    assert code == 0 and "partial" in out and "fits nowhere" in out
    code, out, _ = ferry({**env, "COLUMNS": "400"}, "hosts")
    assert f"no (drain {d['id']}: bios)" in out
    code, out, _ = ferry(env, "hosts", "--json")
    src = next(h for h in json.loads(out) if h["name"] == "src")
    assert src["enabled"] is False and src["drain"] == d["id"] and src["disabled_reason"] == "bios"
    code, out, _ = ferry(env, "abort", d["id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "partial"  # finished: as it was
    code, _, err = ferry(env, "force-complete", d["id"])
    assert code == 2 and "is a drain" in err and err.count("\n") == 1
    code, out, _ = ferry(env, "undrain", "src")
    assert code == 0 and d["id"] in out
    code, out, _ = ferry(env, "hosts", "--json")
    assert all(h["enabled"] for h in json.loads(out))


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["drain", "nope"], "not a configured host"),
        (["drain", "src", "--max-parallel", "0"], "--max-parallel must be >= 1"),
        (["drain", "src", "--max-parallel", "-1", "--dry-run"], "--max-parallel must be >= 1"),
        (["drain", "src", "--to", "src"], "is the host being drained"),
        (["drain", "src", "--to", "dst-1", "--to-group", "x"], "cannot be combined"),
        (["undrain", "nope"], "not a configured host"),
        (["drain", "src", "--not-together", "g-00,nope"], "nope"),
        (["drain", "src", "--not-together", "g-00"], "name 2 guests or more"),
        (["drain", "src", "--not-together", "g-00,g-01", "--to", "dst-1"], "cannot be combined"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    env: dict[str, str], args: list[str], text: str
) -> None:
    code, out, err = ferry(env, *args)
    assert code != 0 and text in err and err.count("\n") == 1, err
    code, out, _ = ferry(env, "drains", "--json")
    assert json.loads(out) == []
    code, out, _ = ferry(env, "list", "--json")
    assert json.loads(out) == []


def test_only_enabled_host_and_already_draining(env: dict[str, str], tmp_path: Path) -> None:
    from ferry import Orchestrator
    from ferry.drain.service import DrainOptions

    orch = Orchestrator(env["FERRY_DB"], config=env["FERRY_CONFIG"])
    drain_id = orch.drain_service.start(DrainOptions("dst-1"))  # recorded, nobody runs it
    code, _, err = ferry(env, "drain", "dst-1")
    assert code == 1 and f"already being drained (drain {drain_id})" in err
    code, _, err = ferry(env, "undrain", "dst-1")
    assert code == 1 and "abort it first" in err and err.count("\n") == 1
    sim = orch.drivers.drivers[0]
    sim.set_host_state("dst-2", enabled=False)  # type: ignore[attr-defined]
    sim.set_host_state("old", enabled=False)  # type: ignore[attr-defined]
    code, _, err = ferry(env, "drain", "src")
    assert code == 1 and "dst-1: host is disabled" in err and err.count("\n") == 1
    orch.close()
    code, out, _ = ferry(env, "drains", "--json")
    assert [d["id"] for d in json.loads(out)] == [drain_id]


def test_detach_prints_the_id_and_a_background_process_drains(env: dict[str, str]) -> None:
    from tests.jobs.helpers import wait_for

    code, out, _ = ferry(env, "drain", "src", "--detach", "--json", "--max-parallel", "2")
    assert code == 0
    started = json.loads(out)
    assert started["host"] == "src" and started["status"] == "running"
    drain_id = started["id"]

    def finished() -> dict[str, object] | None:
        _, shown, _ = ferry(env, "show", drain_id, "--json")
        d = json.loads(shown)
        return d if d["status"] not in ("planning", "running") else None

    d = wait_for(finished, 120, "the detached drain to finish")
    assert d["status"] == "partial"  # huge-1 fits nowhere
    states = {g["instance"]: g["state"] for g in d["guests"]}  # type: ignore[attr-defined]
    assert states["g-00"] == "completed" and states["huge-1"] == "skipped"
    code, out, _ = ferry(env, "hosts", "--json")
    assert next(h for h in json.loads(out) if h["name"] == "src")["drain"] == drain_id


def test_submit_without_a_board_is_one_line_and_changes_nothing(env: dict[str, str]) -> None:
    code, _, err = ferry(env, "drain", "src", "--submit")
    assert code != 0 and err.count("\n") == 1, err
    code, out, _ = ferry(env, "drains", "--json")
    assert json.loads(out) == []


def test_disable_without_a_drain_then_undrain(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "disable", "dst-1", "--reason", "firmware")
    assert code == 0 and "dst-1: disabled (firmware)" in out
    code, out, _ = ferry(env, "hosts", "--json")
    dst1 = next(h for h in json.loads(out) if h["name"] == "dst-1")
    assert dst1["enabled"] is False and dst1["disabled_reason"] == "firmware"
    assert dst1["drain"] is None
    code, _, err = ferry(env, "migrate", "g-00", "--to", "dst-1")
    assert code != 0 and "disabled" in err and err.count("\n") == 1
    code, out, _ = ferry(env, "drain", "src", "--dry-run", "--json")
    assert all(g["destination"] != "dst-1" for g in json.loads(out)["guests"])
    code, _, err = ferry(env, "disable", "nope")
    assert code != 0 and "not a configured host" in err
    code, out, _ = ferry(env, "undrain", "dst-1")
    assert code == 0 and out.strip() == "dst-1: enabled"
    code, out, _ = ferry(env, "hosts", "--json")
    assert all(h["enabled"] for h in json.loads(out))
