"""Each task's execute and revert, called directly against the simulated cluster."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from taskflow import retry
from taskflow.types.failure import Failure

from ferry import (
    InstanceInvalidState,
    MigrationCancelled,
    MigrationPreCheckError,
    NoValidHost,
    Orchestrator,
)
from ferry.drivers.base import TransferPolicy
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from ferry.model import Instance, MigrateData
from ferry.tasks.checks import CheckDestination, CheckHypervisor, CheckSource
from ferry.tasks.finish import Complete, PostAtDestination, PostAtSource, RollForward
from ferry.tasks.lifecycle import Sentinel
from ferry.tasks.prepare import PreLiveMigration
from ferry.tasks.scheduling import ClaimDestination, Reschedule, Schedule
from ferry.tasks.transfer import Transfer
from ferry.tasks.validate import Validate


def fail(exc: Exception) -> Failure:
    try:
        raise exc
    except Exception:
        return Failure()


@pytest.fixture
def run(orch: Orchestrator) -> dict[str, Any]:
    """A created (not run) migration of web-1 and the store values its phases would see."""
    mid = orch.create("web-1")
    store = orch.backend.get_connection().get_flow_details(mid).meta["ferry_store"]
    inst = orch.drivers.find_instance("web-1")
    return {
        "mid": mid,
        "ctx": orch.context,
        "request": store["request"],
        "settings": store["settings"],
        "instance": inst.to_dict(),
    }


def checked_data(run: dict[str, Any], dest: str = "compute-3") -> dict[str, Any]:
    data = CheckDestination(c.CHECK_DESTINATION).execute(
        run["ctx"], run["mid"], run["instance"], dest, run["request"]
    )
    return CheckSource(c.CHECK_SOURCE).execute(
        run["ctx"], run["mid"], run["instance"], "compute-1", dest, data
    )


def test_sentinel(orch: Orchestrator, run: dict[str, Any]) -> None:
    Sentinel(c.SENTINEL).execute(run["ctx"], run["mid"])
    assert orch.get(run["mid"]).status == "preparing"
    orch.migrations.add_leftover(run["mid"], "something stuck on compute-3")
    Sentinel(c.SENTINEL).revert(
        run["ctx"], run["mid"], result=None, flow_failures={"transfer": fail(RuntimeError("boom"))}
    )
    m = orch.get(run["mid"])
    assert m.status == "error" and "boom" in (m.error or "") and "stuck" in (m.error or "")
    assert orch.migrations.locks() == {}


def test_sentinel_revert_after_abort_is_cancelled(orch: Orchestrator, run: dict[str, Any]) -> None:
    Sentinel(c.SENTINEL).revert(
        run["ctx"],
        run["mid"],
        result=None,
        flow_failures={"schedule": fail(MigrationCancelled(run["mid"]))},
    )
    assert orch.get(run["mid"]).status == "cancelled"


def test_sentinel_execute_honours_abort(orch: Orchestrator, run: dict[str, Any]) -> None:
    orch.migrations.request_abort(run["mid"])
    with pytest.raises(MigrationCancelled):
        Sentinel(c.SENTINEL).execute(run["ctx"], run["mid"])


def test_validate(orch: Orchestrator, run: dict[str, Any], sim: SimulatedDriver) -> None:
    inst, source = Validate(c.VALIDATE).execute(run["ctx"], run["mid"], run["request"])
    assert source == "compute-1" and Instance.from_dict(inst).name == "web-1"
    # the instance was stopped after the request was accepted
    batch = sim.find_instance("batch-1")
    assert batch is not None
    orch.migrations.create("m-batch", batch, {"instance": "batch-1"})
    with pytest.raises(InstanceInvalidState):
        Validate(c.VALIDATE).execute(run["ctx"], "m-batch", {"instance": "batch-1"})


def test_schedule_excludes_rejected_hosts(orch: Orchestrator, run: dict[str, Any]) -> None:
    sched = Schedule(c.SCHEDULE)
    args = (run["ctx"], run["mid"], run["instance"], "compute-1")
    assert sched.execute(*args, [], run["request"]) == "compute-2"
    orch.migrations.record_attempt(run["mid"], "compute-2", "rejected", "down for maintenance")
    assert sched.execute(*args, ["compute-2"], run["request"]) == "compute-3"
    orch.migrations.record_attempt(run["mid"], "compute-3", "rejected", "full")
    with pytest.raises(NoValidHost) as info:
        sched.execute(*args, ["compute-2", "compute-3"], run["request"])
    assert info.value.reasons["compute-2"] == "down for maintenance"
    assert info.value.reasons["compute-3"] == "full"


def test_claim_execute_is_idempotent_and_revert_releases(
    orch: Orchestrator, run: dict[str, Any]
) -> None:
    claim = ClaimDestination(c.CLAIM)
    forced = dict(run["request"], destination="compute-3")  # no scheduler ran: claim refreshes
    claim.execute(run["ctx"], run["mid"], run["instance"], "compute-3", forced)
    claim.execute(run["ctx"], run["mid"], run["instance"], "compute-3", forced)
    assert orch.claims.claimed()["compute-3"] == (2, 4096, 20)
    claim.revert(run["ctx"], run["mid"], "compute-3", result=None)
    claim.revert(run["ctx"], run["mid"], "compute-3", result=None)
    assert orch.claims.claimed()["compute-3"] == (0, 0, 0)


def test_claim_without_room_rejects_the_host(orch: Orchestrator, run: dict[str, Any]) -> None:
    big = dict(run["instance"], memory_mb=10**7)
    with pytest.raises(MigrationPreCheckError):
        forced = dict(run["request"], destination="compute-3")
        ClaimDestination(c.CLAIM).execute(run["ctx"], run["mid"], big, "compute-3", forced)
    assert "compute-3" in orch.migrations.rejected_hosts(run["mid"])


def test_check_hypervisor(orch: Orchestrator, run: dict[str, Any]) -> None:
    CheckHypervisor(c.CHECK_HYPERVISOR).execute(run["ctx"], run["mid"], "compute-1", "compute-3")
    with pytest.raises(MigrationPreCheckError, match="older"):
        CheckHypervisor(c.CHECK_HYPERVISOR).execute(
            run["ctx"], run["mid"], "compute-1", "compute-4"
        )
    assert "older" in orch.migrations.rejected_hosts(run["mid"])["compute-4"]


def test_check_destination_and_source(
    orch: Orchestrator, run: dict[str, Any], sim: SimulatedDriver
) -> None:
    task = CheckDestination(c.CHECK_DESTINATION)
    data = task.execute(run["ctx"], run["mid"], run["instance"], "compute-3", run["request"])
    assert MigrateData.from_dict(data).block_migration is False
    assert sim.check_markers("compute-3")
    task.revert(run["ctx"], run["mid"], "compute-3", result=data)
    task.revert(run["ctx"], run["mid"], "compute-3", result=data)
    assert sim.check_markers() == []
    with pytest.raises(MigrationPreCheckError):
        task.execute(run["ctx"], run["mid"], run["instance"], "compute-2", run["request"])
    assert "compute-2" in orch.migrations.rejected_hosts(run["mid"])
    final = checked_data(run)
    assert sim.check_markers() == []  # check-source cleaned up after using the data
    assert orch.get(run["mid"]).block_migration is False and final["destination"] == "compute-3"


def test_pre_live_migration_and_rollback(run: dict[str, Any], sim: SimulatedDriver) -> None:
    data = checked_data(run)
    task = PreLiveMigration(c.PRE_LIVE_MIGRATION)
    prepared = task.execute(run["ctx"], run["mid"], run["instance"], data)
    assert task.execute(run["ctx"], run["mid"], run["instance"], data) == prepared  # twice: same
    uuid = run["instance"]["uuid"]
    assert sim.artifacts(host="compute-3", instance_uuid=uuid)
    task.revert(run["ctx"], run["mid"], run["instance"], data, result=prepared)
    task.revert(run["ctx"], run["mid"], run["instance"], data, result=fail(RuntimeError("x")))
    assert sim.artifacts(host="compute-3", instance_uuid=uuid) == []


def test_transfer_execute_twice_and_revert(
    orch: Orchestrator, run: dict[str, Any], sim: SimulatedDriver
) -> None:
    data = checked_data(run)
    prepared = PreLiveMigration(c.PRE_LIVE_MIGRATION).execute(
        run["ctx"], run["mid"], run["instance"], data
    )
    t = Transfer(c.TRANSFER)
    result = t.execute(run["ctx"], run["mid"], run["instance"], prepared, run["settings"])
    assert result["iterations"] >= 1
    assert sim.find_instance("web-1").host == "compute-3"  # type: ignore[union-attr]
    before = sim.clock.now()
    again = t.execute(run["ctx"], run["mid"], run["instance"], prepared, run["settings"])  # resumed
    assert (
        again["iterations"] == result["iterations"] and sim.clock.now() == before
    )  # no new transfer
    # a revert after the switchover never moves the VM back
    t.revert(run["ctx"], run["mid"], run["instance"], prepared, result=fail(RuntimeError("late")))
    assert sim.find_instance("web-1").host == "compute-3"  # type: ignore[union-attr]
    assert any("not moved back" in x for x in orch.get(run["mid"]).leftovers)


def test_transfer_revert_aborts_a_transfer_in_flight(
    run: dict[str, Any], sim: SimulatedDriver
) -> None:
    data = checked_data(run)
    prepared = PreLiveMigration(c.PRE_LIVE_MIGRATION).execute(
        run["ctx"], run["mid"], run["instance"], data
    )
    inst = Instance.from_dict(run["instance"])
    sim.start_transfer(inst, MigrateData.from_dict(prepared), TransferPolicy())
    assert sim.locate(inst.uuid).transfer_in_flight
    Transfer(c.TRANSFER).revert(
        run["ctx"], run["mid"], run["instance"], prepared, result=fail(RuntimeError("x"))
    )
    loc = sim.locate(inst.uuid)
    assert loc.host == "compute-1" and not loc.transfer_in_flight


def test_transfer_resume_reads_the_records_start_field(
    orch: Orchestrator, run: dict[str, Any], sim: SimulatedDriver, caplog: pytest.LogCaptureFixture
) -> None:
    data = checked_data(run)
    prepared = PreLiveMigration(c.PRE_LIVE_MIGRATION).execute(
        run["ctx"], run["mid"], run["instance"], data
    )
    assert orch.migrations.transfer_started_at(run["mid"]) is None
    # a run that died after starting the transfer: the record says so, the driver has it in flight
    orch.migrations.mark_transfer_started(run["mid"], {"phase": "transfer", "percent": 0.0})
    started_at = orch.migrations.transfer_started_at(run["mid"])
    sim.start_transfer(
        Instance.from_dict(run["instance"]), MigrateData.from_dict(prepared), TransferPolicy()
    )
    caplog.set_level(logging.INFO, logger="ferry.tasks")
    result = Transfer(c.TRANSFER).execute(
        run["ctx"], run["mid"], run["instance"], prepared, run["settings"]
    )
    assert (
        result["iterations"] >= 1 and "re-attaching to a transfer in state running" in caplog.text
    )
    m = orch.get(run["mid"])
    assert m.transfer_started_at == started_at  # re-attached: not started again
    assert "transfer_started" not in m.progress and m.progress["result"] == result


def test_transfer_start_is_recorded_outside_the_progress(
    orch: Orchestrator, run: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    data = checked_data(run)
    prepared = PreLiveMigration(c.PRE_LIVE_MIGRATION).execute(
        run["ctx"], run["mid"], run["instance"], data
    )
    caplog.set_level(logging.INFO, logger="ferry.tasks")
    Transfer(c.TRANSFER).execute(run["ctx"], run["mid"], run["instance"], prepared, run["settings"])
    m = orch.get(run["mid"])
    assert m.transfer_started_at is not None and "re-attaching" not in caplog.text
    assert "transfer_started" not in m.progress and m.progress["state"] == "completed"


def test_post_steps_are_idempotent_and_complete(
    orch: Orchestrator, run: dict[str, Any], sim: SimulatedDriver
) -> None:
    data = checked_data(run)
    prepared = PreLiveMigration(c.PRE_LIVE_MIGRATION).execute(
        run["ctx"], run["mid"], run["instance"], data
    )
    result = Transfer(c.TRANSFER).execute(
        run["ctx"], run["mid"], run["instance"], prepared, run["settings"]
    )
    for task in (PostAtSource(c.POST_AT_SOURCE), PostAtDestination(c.POST_AT_DESTINATION)):
        task.execute(run["ctx"], run["mid"], run["instance"], prepared)
        task.execute(run["ctx"], run["mid"], run["instance"], prepared)
        task.revert(run["ctx"], run["mid"])  # undoes nothing, raises nothing
    Complete(c.COMPLETE).execute(run["ctx"], run["mid"], run["instance"], prepared, result)
    m = orch.get(run["mid"])
    assert m.status == "completed" and m.destination == "compute-3"
    assert orch.migrations.locks() == {}
    assert sim.artifacts(host="compute-1", instance_uuid=run["instance"]["uuid"]) == []


def test_roll_forward_retry(orch: Orchestrator, run: dict[str, Any]) -> None:
    settings = dict(run["settings"], post_retries=2)
    rf = RollForward(name=c.ROLL_FORWARD, steps=c.POST_SWITCHOVER_ATOMS)
    failures = {
        c.POST_AT_SOURCE: fail(RuntimeError("cannot undefine")),
        c.CHECK_DESTINATION: fail(RuntimeError("stale, from before the switchover")),
    }
    history = retry.History([(1, failures)])
    assert rf.on_failure(history, run["ctx"], run["mid"], settings) == retry.RETRY
    history = retry.History([(1, failures), (2, failures)])
    assert rf.on_failure(history, run["ctx"], run["mid"], settings) == retry.REVERT
    rf.revert(history, run["ctx"], run["mid"], settings, flow_failures=failures)
    m = orch.get(run["mid"])
    assert m.status == "error" and "cannot undefine" in (m.error or "")
    assert m.leftovers == ["post-at-source: RuntimeError: cannot undefine"]


def test_reschedule_decisions(orch: Orchestrator, run: dict[str, Any]) -> None:
    rs = Reschedule(name=c.RESCHEDULE)
    host_failure = {c.CHECK_DESTINATION: fail(MigrationPreCheckError("compute-2", "no"))}
    other = {c.CLAIM: fail(RuntimeError("database on fire"))}
    args = (run["ctx"], run["mid"])
    assert (
        rs.on_failure(retry.History([([], host_failure)]), *args, run["request"], run["settings"])
        == retry.RETRY
    )
    assert (
        rs.on_failure(retry.History([([], other)]), *args, run["request"], run["settings"])
        == retry.REVERT_ALL
    )
    forced = dict(run["request"], destination="compute-2")
    assert (
        rs.on_failure(retry.History([([], host_failure)]), *args, forced, run["settings"])
        == retry.REVERT_ALL
    )
    orch.migrations.record_attempt(run["mid"], "compute-2", "rejected", "no")
    bounded = dataclasses.replace(orch.settings.migration, max_attempts=1)
    assert (
        rs.on_failure(
            retry.History([([], host_failure)]), *args, run["request"], dataclasses.asdict(bounded)
        )
        == retry.REVERT_ALL
    )
    assert rs.execute(retry.History([]), *args, run["request"], run["settings"]) == ["compute-2"]
