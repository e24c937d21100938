"""Full engine runs on the simulated cluster: end state and recorded event order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ferry import (
    AbortTooLate,
    ComputeHostUnavailable,
    ConfigError,
    HostNotFound,
    InstanceInvalidState,
    InstanceNotFound,
    InvalidMigrationState,
    MigrationCancelled,
    MigrationFailed,
    MigrationInProgress,
    MigrationPreCheckError,
    NoValidHost,
    Orchestrator,
    UnableToMigrateToSelf,
)
from ferry.context import Event
from ferry.drivers.simulated import SimulatedDriver
from ferry.flows import constants as c
from ferry.flows.live_migration import get_live_migration_flow
from tests.conftest import fast_settings
from tests.flows.helpers import assert_nothing_held, assert_on

PRE = [
    "sentinel",
    "validate",
    "reschedule",
    "schedule",
    "claim-destination",
    "check-hypervisor",
    "check-destination",
    "check-source",
    "pre-live-migration",
    "transfer",
]
POST = ["roll-forward", "post-at-source", "post-at-destination", "complete"]


def states(m: object) -> dict[str, str]:
    return {p.name: p.state for p in m.phases}  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- shape
def test_flow_shape_names_requires_provides() -> None:
    flow = get_live_migration_flow()
    names = [a.name for a, _ in flow.iter_nodes()]
    assert names[:2] == [c.SENTINEL, c.VALIDATE]
    atoms = {}

    def walk(f: object) -> None:
        for node, _meta in f.iter_nodes():  # type: ignore[attr-defined]
            if hasattr(node, "iter_nodes"):
                atoms[node.retry.name] = node.retry
                walk(node)
            else:
                atoms[node.name] = node

    walk(flow)
    assert list(atoms) == list(c.ALL_ATOMS)
    assert set(flow.requires) == {c.CONTEXT, c.MIGRATION_ID, c.REQUEST, c.SETTINGS}
    assert atoms[c.VALIDATE].provides == {c.INSTANCE, c.SOURCE}
    assert atoms[c.RESCHEDULE].provides == {c.EXCLUDED}
    assert atoms[c.SCHEDULE].requires >= {c.EXCLUDED, c.INSTANCE, c.SOURCE}
    assert atoms[c.SCHEDULE].provides == {c.DESTINATION}
    assert atoms[c.CHECK_DESTINATION].provides == {c.DEST_CHECK}
    assert atoms[c.CHECK_SOURCE].requires >= {c.DEST_CHECK}
    assert atoms[c.CHECK_SOURCE].provides == {c.MIGRATE_DATA}
    assert atoms[c.PRE_LIVE_MIGRATION].requires >= {c.MIGRATE_DATA}
    assert atoms[c.PRE_LIVE_MIGRATION].provides == {c.PREPARED}
    assert atoms[c.TRANSFER].requires >= {c.PREPARED, c.SETTINGS}
    assert atoms[c.COMPLETE].requires >= {c.TRANSFER_RESULT}
    # every task documents its revert strategy
    for atom in atoms.values():
        assert "Revert:" in (type(atom).__doc__ or ""), type(atom).__name__


# --------------------------------------------------------------------------- success
def test_success_with_reschedule_and_event_order(orch: Orchestrator, sim: SimulatedDriver) -> None:
    events: list[Event] = []
    orch.subscribe(events.append)
    m = orch.live_migrate("web-1")
    assert m.status == "completed"
    assert (m.source, m.destination) == ("compute-1", "compute-3")
    assert m.block_migration is False  # shared storage group
    assert [(a.host, a.outcome) for a in m.attempts] == [
        ("compute-2", "rejected"),
        ("compute-3", "chosen"),
    ]
    assert "Connection refused" in (m.attempts[0].reason or "")
    assert [h.status for h in m.history] == [
        "accepted",
        "preparing",
        "running",
        "post-migrating",
        "completed",
    ]
    assert set(states(m).values()) == {"SUCCESS"} and len(m.phases) == len(c.ALL_ATOMS)
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)
    started = [e.phase for e in events if e.kind == "phase_started"]
    # the select-destination subflow ran twice (compute-2 failed its check)
    assert started[:9] == [
        "sentinel",
        "validate",
        "reschedule",
        "schedule",
        "claim-destination",
        "check-hypervisor",
        "check-destination",
        "reschedule",
        "schedule",
    ]
    assert started[-5:] == [
        "transfer",
        "roll-forward",
        "post-at-source",
        "post-at-destination",
        "complete",
    ]
    assert [e.phase for e in events if e.kind == "phase_failed"] == ["check-destination"]
    reverted = [e.phase for e in events if e.kind == "phase_reverted"]
    assert reverted == ["check-destination", "check-hypervisor", "claim-destination", "schedule"]
    progress = [e.data["percent"] for e in events if e.kind == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100.0 and len(progress) >= 3
    statuses = [e.status for e in events if e.kind == "status"]
    assert statuses == ["accepted", "preparing", "running", "post-migrating", "completed"]
    assert m.progress["result"]["iterations"] >= 2


def test_migrating_back_and_forth(orch: Orchestrator, sim: SimulatedDriver) -> None:
    orch.live_migrate("web-1", "compute-3")
    orch.live_migrate("web-1", "compute-1")
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)
    assert [m.status for m in orch.list()] == ["completed", "completed"]


def test_runs_of_one_thread_share_one_compiled_flow(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    # the flow is compiled once per thread (a frozen graph); each run gets its own runtime
    engines = []
    load = orch.runner.load_engine

    def spy(*args: Any, **kwargs: Any) -> Any:
        engine = load(*args, **kwargs)
        engines.append(engine)
        return engine

    orch.runner.load_engine = spy  # type: ignore[method-assign]
    orch.live_migrate("web-1", "compute-3")
    orch.live_migrate("web-1", "compute-1")
    assert_on(sim, "web-1", "compute-1")
    first, second = engines
    assert first.compilation is second.compilation
    assert first.compilation.execution_graph.frozen
    assert first._runtime is not second._runtime


def test_background_handle(orch: Orchestrator, sim: SimulatedDriver) -> None:
    handle = orch.live_migrate("api-1", wait=False)
    m = handle.wait(timeout=60)
    assert m.status == "completed" and handle.done()
    assert_on(sim, "api-1", m.destination)


def test_block_migration_decided_when_storage_not_shared(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    m = orch.live_migrate("app-2")
    assert m.block_migration is True
    assert_on(sim, "app-2", m.destination)


def test_refusing_block_migration_on_local_disk_is_no_valid_host(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("app-2", block_migration=False)
    m = info.value.migration  # type: ignore[attr-defined]
    assert m.status == "failed"
    assert (
        all("shared storage" in r for r in info.value.reasons.values() if r) or info.value.reasons
    )
    assert_on(sim, "app-2", "compute-4")
    assert_nothing_held(orch, sim)


# -------------------------------------------------------------------------- failures
def test_every_destination_fails_no_valid_host(orch: Orchestrator, sim: SimulatedDriver) -> None:
    sim.inject_fault("compute-3", "check_destination", message="disk full")
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("web-1")
    reasons = info.value.reasons
    assert "disk full" in reasons["compute-3"]
    assert "Connection refused" in reasons["compute-2"]
    assert "older" in reasons["compute-4"]
    assert reasons["compute-5"] in ("host is down",) or "older" in reasons["compute-5"]
    m = orch.get(info.value.migration.id)  # type: ignore[attr-defined]
    assert m.status == "failed"
    assert "compute-3" in (m.error or "") and "disk full" in (m.error or "")
    assert {a.host: a.outcome for a in m.attempts} == {
        "compute-2": "rejected",
        "compute-3": "rejected",
    }
    assert states(m)["sentinel"] == "REVERTED"
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)


def test_max_attempts_bounds_the_reschedule(db_url: str) -> None:
    orch = Orchestrator(db_url, settings=fast_settings(max_attempts=1))
    sim = orch.drivers.drivers[0]
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("web-1")
    assert list(info.value.reasons) == ["compute-2"]
    assert_on(sim, "web-1", "compute-1")  # type: ignore[arg-type]
    # per-run override wins over the config
    assert orch.live_migrate("web-1", max_attempts=2).destination == "compute-3"
    orch.close()


def test_forced_destination_is_checked_not_rescheduled(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    with pytest.raises(MigrationPreCheckError) as info:
        orch.live_migrate("web-1", "compute-2")
    m = info.value.migration  # type: ignore[attr-defined]
    assert m.status == "failed" and [a.host for a in m.attempts] == ["compute-2"]
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)
    # a forced host with an older hypervisor fails the hypervisor check
    with pytest.raises(MigrationPreCheckError, match="older"):
        orch.live_migrate("web-1", "compute-4")


@pytest.mark.parametrize(
    ("phase", "host", "reverted", "message"),
    [
        ("pre_live_migration", "compute-3", "pre-live-migration", "pre_live_migration"),
        ("transfer", "compute-3", "transfer", "transfer"),
    ],
)
def test_failure_in_phase_reverts_everything(
    orch: Orchestrator, sim: SimulatedDriver, phase: str, host: str, reverted: str, message: str
) -> None:
    sim.inject_fault(host, phase, message=f"injected {phase} failure")
    with pytest.raises(MigrationFailed) as info:
        orch.live_migrate("web-1")
    m = orch.get(info.value.migration_id)
    assert m.status == "failed"
    assert f"injected {phase} failure" in (m.error or "")
    st = states(m)
    assert st[reverted] in ("REVERTED",)
    for name in PRE[: PRE.index(reverted)]:
        assert st[name] == "REVERTED", name
    for name in POST:
        assert st[name] == "PENDING", name
    assert_on(sim, "web-1", "compute-1")
    assert sim.artifacts(host="compute-3", instance_uuid=m.instance) == []
    assert_nothing_held(orch, sim)


def test_source_check_failure_excludes_each_destination(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    sim.inject_fault("compute-1", "check_source", message="source says no")
    with pytest.raises(NoValidHost) as info:
        orch.live_migrate("web-1")
    assert "source says no" in info.value.reasons["compute-3"]
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)


POLICY_CLUSTER = str(Path(__file__).with_name("policy_cluster.toml"))


def policy_orch(db_url: str, **migration: object) -> tuple[Orchestrator, SimulatedDriver]:
    """The policy cluster; pre-copy only (no automatic post-copy) unless a test says so."""
    migration.setdefault("live_migration_permit_post_copy", False)
    settings = fast_settings(**migration)
    settings = dataclasses.replace(
        settings, simulated=dataclasses.replace(settings.simulated, cluster=POLICY_CLUSTER)
    )
    orch = Orchestrator(db_url, settings=settings)
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    return orch, sim


def test_downtime_steps_make_a_dirty_guest_converge(db_url: str) -> None:
    orch, sim = policy_orch(db_url, live_migration_downtime_delay=3)
    m = orch.live_migrate("steady")
    assert m.status == "completed", m.error
    result = m.progress["result"]
    assert result["lever"] == "downtime steps"
    assert result["downtime_steps_applied"] == 9  # 455 ms is the first step >= 427 ms
    assert 427 <= result["downtime_ms"] <= 455
    assert_on(sim, "steady", "b")
    orch.close()


def test_completion_timeout_aborts_by_default(db_url: str) -> None:
    orch, sim = policy_orch(db_url, live_migration_completion_timeout=10)
    with pytest.raises(MigrationFailed, match="completion timeout"):
        orch.live_migrate("hot")
    m = orch.list()[0]
    assert m.status == "failed"
    assert_on(sim, "hot", "a")
    assert_nothing_held(orch, sim)
    orch.close()


def test_completion_timeout_force_complete(db_url: str) -> None:
    orch, sim = policy_orch(
        db_url, live_migration_completion_timeout=10, live_migration_timeout_action="force_complete"
    )
    m = orch.live_migrate("hot")
    assert m.status == "completed"
    assert m.progress["result"]["lever"] == "pause"
    assert_on(sim, "hot", "b")
    # per-run override: post-copy permitted
    m = orch.live_migrate("hot", overrides={"live_migration_permit_post_copy": True})
    assert m.progress["result"]["lever"] == "post-copy"
    assert_on(sim, "hot", "a")
    orch.close()


def test_never_converging_host_fault(orch: Orchestrator, sim: SimulatedDriver) -> None:
    sim.inject_fault("compute-3", "never_converge")
    with pytest.raises(MigrationFailed, match="completion timeout"):
        orch.live_migrate(
            "web-1",
            "compute-3",
            overrides={
                "live_migration_completion_timeout": 10,
                "live_migration_permit_post_copy": False,
            },
        )
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)


def test_force_complete_on_request(orch: Orchestrator, sim: SimulatedDriver) -> None:
    """`ferry force-complete` from another process: the monitor pauses the guest (post-copy is
    not permitted by default) and the transfer that would never converge completes."""
    sim.inject_fault("compute-3", "never_converge")
    asked: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data["elapsed_s"] > 20 and not asked:
            asked.append(orch.force_complete(e.migration_id).status)

    orch.subscribe(on_event)
    m = orch.live_migrate(
        "web-1", "compute-3", overrides={"live_migration_permit_post_copy": False}
    )
    assert asked == ["running"]
    assert m.status == "completed"
    assert m.progress["result"]["lever"] == "pause"
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)


def test_default_policy_switches_a_stuck_transfer_to_post_copy(
    orch: Orchestrator, sim: SimulatedDriver
) -> None:
    """ferry permits post-copy by default: once a pass no longer shrinks what is left by 10 %,
    the monitor switches to post-copy instead of waiting for the completion timeout."""
    sim.inject_fault("compute-3", "never_converge")
    samples: list[tuple[int, float]] = []
    orch.subscribe(
        lambda e: (
            samples.append((e.data["iteration"], e.data["elapsed_s"]))
            if e.kind == "progress" and e.data["state"] == "running"
            else None
        )
    )
    m = orch.live_migrate("web-1", "compute-3")
    assert m.status == "completed"
    assert m.progress["result"]["lever"] == "post-copy"
    assert max(i for i, _ in samples) == 3  # switched as pass 3 began
    assert m.progress["result"]["elapsed_s"] < 100  # the completion timeout is 6400 s
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)


def test_force_complete_of_a_finished_migration_is_refused(orch: Orchestrator) -> None:
    m = orch.live_migrate("web-1")
    with pytest.raises(InvalidMigrationState, match="it is completed"):
        orch.force_complete(m.id)


# --------------------------------------------------------------- after the switchover
def test_failing_post_step_leaves_error_and_vm_on_destination(db_url: str) -> None:
    orch = Orchestrator(db_url, settings=fast_settings(post_retries=3))
    sim = orch.drivers.drivers[0]
    sim.inject_fault("compute-1", "post_at_source", message="cannot undefine")  # type: ignore[attr-defined]
    with pytest.raises(MigrationFailed) as info:
        orch.live_migrate("web-1")
    m = orch.get(info.value.migration_id)
    assert m.status == "error"
    assert "cannot undefine" in (m.error or "") and "compute-3" in (m.error or "")
    assert any("post-at-source" in x for x in m.leftovers)
    st = states(m)
    for name in PRE:  # nothing before the switchover was undone
        assert st[name] == "SUCCESS", name
    assert st["post-at-source"] == "REVERTED" and st["roll-forward"] == "REVERTED"
    fired = {f["phase"]: f["fired"] for f in sim.faults()}  # type: ignore[attr-defined]
    assert fired["post_at_source"] == 3  # post_retries attempts, then give up
    assert len(m.leftovers) == 1 and "compute-2" not in (m.error or "")
    inst = sim.find_instance("web-1")  # type: ignore[attr-defined]
    assert inst.host == "compute-3"
    assert orch.claims.list() == [] and orch.migrations.locks() == {}
    orch.close()


def test_post_step_failing_once_is_retried(orch: Orchestrator, sim: SimulatedDriver) -> None:
    sim.inject_fault("compute-3", "post_at_destination", times=1)
    m = orch.live_migrate("web-1")
    assert m.status == "completed"
    assert {f["phase"]: f["fired"] for f in sim.faults()}["post_at_destination"] == 1
    assert_on(sim, "web-1", "compute-3")
    assert_nothing_held(orch, sim)


# ----------------------------------------------------------------------------- abort
def test_abort_before_it_runs(orch: Orchestrator, sim: SimulatedDriver) -> None:
    mid = orch.create("web-1")
    m = orch.abort(mid)
    assert m.status == "cancelled"
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)


def test_abort_during_transfer(orch: Orchestrator, sim: SimulatedDriver) -> None:
    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data["percent"] > 30:
            orch.migrations.request_abort(e.migration_id)  # as `ferry abort` from another process

    orch.subscribe(on_event)
    with pytest.raises(MigrationCancelled):
        orch.live_migrate("web-1")
    m = orch.list()[0]
    assert m.status == "cancelled"
    assert_on(sim, "web-1", "compute-1")
    assert sim.artifacts(host="compute-3", instance_uuid=m.instance) == []
    assert_nothing_held(orch, sim)


def test_abort_from_an_event_callback(orch: Orchestrator, sim: SimulatedDriver) -> None:
    seen: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress" and e.data["percent"] > 30 and not seen:
            seen.append(orch.abort(e.migration_id).status)  # must not deadlock or nest a run

    orch.subscribe(on_event)
    with pytest.raises(MigrationCancelled):
        orch.live_migrate("web-1")
    assert seen == ["running"]
    assert_on(sim, "web-1", "compute-1")
    assert_nothing_held(orch, sim)


def test_background_abort(orch: Orchestrator, sim: SimulatedDriver) -> None:
    mid = orch.create("web-1")
    orch.migrations.request_abort(mid)
    handle = orch.resume(mid, wait=False)
    with pytest.raises(MigrationCancelled):
        handle.wait(timeout=60)
    assert orch.get(mid).status == "cancelled"
    assert_nothing_held(orch, sim)


def test_abort_after_completion_is_refused(orch: Orchestrator) -> None:
    m = orch.live_migrate("web-1")
    with pytest.raises(AbortTooLate):
        orch.abort(m.id)


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("vm", "dest", "error"),
    [
        ("nope", None, InstanceNotFound),
        ("batch-1", None, InstanceInvalidState),
        ("legacy-1", None, ComputeHostUnavailable),
        ("web-1", "compute-1", UnableToMigrateToSelf),
        ("web-1", "compute-99", HostNotFound),
    ],
)
def test_bad_requests_raise_and_change_nothing(
    orch: Orchestrator, vm: str, dest: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        orch.live_migrate(vm, dest)
    assert orch.list() == []
    assert orch.migrations.locks() == {}


def test_second_migration_of_same_vm_refused(orch: Orchestrator) -> None:
    first = orch.create("web-1")
    with pytest.raises(MigrationInProgress, match=first):
        orch.live_migrate("web-1")
    assert [m.id for m in orch.list()] == [first]


def test_bad_override_is_config_error(orch: Orchestrator) -> None:
    with pytest.raises(ConfigError):
        orch.live_migrate("web-1", overrides={"live_migration_downtime": 1})
    assert orch.list() == []


def test_paused_instance_migrates(orch: Orchestrator, sim: SimulatedDriver) -> None:
    m = orch.live_migrate("cache-1")
    assert m.status == "completed"
    assert sim.find_instance("cache-1").power_state == "paused"  # type: ignore[union-attr]


def test_settings_snapshot_is_persisted_with_the_run(orch: Orchestrator) -> None:
    mid = orch.create("web-1", overrides={"live_migration_downtime": 900})
    fd = orch.backend.get_connection().get_flow_details(mid)
    store = fd.meta["ferry_store"]
    assert store["settings"]["live_migration_downtime"] == 900
    assert store["request"]["instance"] == "web-1"
    assert dataclasses.asdict(orch.settings.migration)["live_migration_downtime"] == 500
