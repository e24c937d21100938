"""The XenAPI driver on the XAPI simulator: which XAPI calls each path makes and with what, the
orchestrator's runs (reschedule, abort, failure half way), sessions and secrets, the config."""

from __future__ import annotations

import copy
import logging
import os
import re
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry import MigrationCancelled, MigrationFailed, Orchestrator
from ferry.config import HostConfig, parse_settings
from ferry.context import Event
from ferry.drivers.base import TransferPolicy
from ferry.drivers.xenapi import XenAPIDriver, interim_network_name, parse_hosts
from ferry.drivers.xenapi.session import PoolSession, load_sdk, make_transport
from ferry.errors import (
    ConfigError,
    DriverError,
    InstanceNotFound,
    MigrationPreCheckError,
    TransferFailed,
)
from ferry.model import Instance, MigrateData
from tests.conftest import fast_settings
from tests.drivers.contract import DriverEnv, prepare, run_to_end
from tests.drivers.xenapi_support import (
    PASSWORD_ENV,
    database_bytes,
    host_configs,
    leftovers_on,
    make_driver,
    start_simulator,
)
from tests.xapisim import DEFAULT_SCENARIO, XapiSimulator

Call = tuple[str, str, tuple[Any, ...]]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[XapiSimulator]:
    simulator = start_simulator()
    monkeypatch.setenv(PASSWORD_ENV, simulator.password)
    yield simulator
    simulator.stop()


@pytest.fixture
def driver(sim: XapiSimulator) -> Iterator[XenAPIDriver]:
    d = make_driver(sim)
    yield d
    d.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every call the driver sends: (pool url, method, args) -- the simulator records no
    parameters, so the maps are checked here, on the way out."""
    calls: list[Call] = []
    real = PoolSession.call

    def spy(self: PoolSession, method: str, *args: Any) -> Any:
        calls.append((self.url, method, args))
        return real(self, method, *args)

    monkeypatch.setattr(PoolSession, "call", spy)
    return calls


@pytest.fixture
def orch(db_url: str, driver: XenAPIDriver) -> Iterator[Orchestrator]:
    o = Orchestrator(db_url, settings=fast_settings(), drivers=[driver])
    yield o
    o.close()


def admin(sim: XapiSimulator, pool: str) -> Any:
    """A XenAPI session of an administrator acting behind ferry's back."""
    session = load_sdk().Session(sim.url(pool))
    session.xenapi.login_with_password(sim.username, sim.password, "1.1", "test")
    return session


def env(driver: XenAPIDriver, vm: str, source: str, destination: str) -> DriverEnv:
    inst = driver.find_instance(vm)
    assert inst is not None
    return DriverEnv(driver, inst.uuid, source, destination, "", driver.clock.sleep)


def methods(sim: XapiSimulator, pool: str | None = None) -> list[str]:
    return [m for p, m in sim.calls if pool is None or p == pool]


def named(calls: list[Call], method: str) -> list[tuple[Any, ...]]:
    return [args for _, m, args in calls if m == method]


def migrate_calls(sim: XapiSimulator) -> list[str]:
    return [m for m in methods(sim) if "migrate" in m or "assert_can" in m]


def record(sim: XapiSimulator, pool: str, cls: str, ref: str) -> dict[str, Any]:
    with sim.model.lock:
        return sim.model.render(pool, cls, ref)


def vm_ref(sim: XapiSimulator, pool: str, name: str) -> str:
    with sim.model.lock:
        return sim.model.one(pool, "VM", name_label=name)


def ref_named(sim: XapiSimulator, pool: str, cls: str, name: str) -> str:
    with sim.model.lock:
        return sim.model.one(pool, cls, name_label=name)


def vol_1_sr_introduced_on(sim: XapiSimulator, host: str, shared: bool) -> tuple[Any, str, str]:
    """An administrator of pool-b introduces vol-1's volume SR (as on pool-a) and plugs a PBD
    of it on ``host``, behind ferry's back: (pool-b's API, the SR ref, the PBD ref)."""
    xapi = admin(sim, "pool-b").xenapi
    src = record(sim, "pool-a", "SR", ref_named(sim, "pool-a", "SR", "vol-1-data"))
    src_pbd = record(sim, "pool-a", "PBD", src["PBDs"][0])
    sr = xapi.SR.introduce(
        src["uuid"], src["name_label"], "", src["type"], src["content_type"], shared, {}
    )
    (host_ref,) = xapi.host.get_by_name_label(host)
    pbd = xapi.PBD.create(
        {"host": host_ref, "SR": sr, "device_config": src_pbd["device_config"], "other_config": {}}
    )
    xapi.PBD.plug(pbd)
    return xapi, sr, pbd


# ============================================================================ same pool
def test_same_pool_uses_pool_migrate(sim: XapiSimulator, driver: XenAPIDriver, sent: list[Call]):
    ref_before = vm_ref(sim, "pool-a", "web-1")
    e = env(driver, "web-1", "xs-a1", "xs-a2")
    instance, data = prepare(e)
    assert (data.block_migration, data.shared_storage) == (False, True)
    assert data.driver_data["same_pool"] is True
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(e, instance, data).state == "completed"
    driver.post_live_migration_at_source(instance, data)
    driver.post_live_migration_at_destination(instance, data)

    assert migrate_calls(sim) == ["VM.assert_can_boot_here", "Async.VM.pool_migrate"]
    (args,) = named(sent, "Async.VM.pool_migrate")
    assert args == (ref_before, ref_named(sim, "pool-a", "host", "xs-a2"), {"live": "true"})
    assert sim.vm_location("web-1") == ("pool-a", "xs-a2")
    assert vm_ref(sim, "pool-a", "web-1") == ref_before  # intra-pool keeps the VM ref
    assert "host.migrate_receive" not in methods(sim)
    assert sim.leftovers("pool-a") == [] and sim.leftovers("pool-b") == []


def test_same_pool_local_disk_is_storage_motion(
    sim: XapiSimulator, driver: XenAPIDriver, sent: list[Call]
):
    """db-1's disk is on xs-a1's local SR: block migration inside the pool, VIFs unmapped."""
    disk = ref_named(sim, "pool-a", "VDI", "db-1 disk 0")
    e = env(driver, "db-1", "xs-a1", "xs-a2")
    instance, data = prepare(e)
    assert (data.block_migration, data.shared_storage) == (True, False)
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(e, instance, data).state == "completed"
    (args,) = named(sent, "Async.VM.migrate_send")
    _, dest, live, vdi_map, vif_map, options = args
    assert vdi_map == {disk: ref_named(sim, "pool-a", "SR", "nfs-a")}  # the CD is not mapped
    assert (live, vif_map, options) == (True, {}, {})
    assert dest["host"] == ref_named(sim, "pool-a", "host", "xs-a2")
    assert sim.vm_location("db-1") == ("pool-a", "xs-a2")


# =========================================================================== cross pool
def test_cross_pool_receive_assert_and_migrate_send_with_maps(
    sim: XapiSimulator, driver: XenAPIDriver, sent: list[Call]
):
    src_vm = vm_ref(sim, "pool-a", "web-1")
    disk = ref_named(sim, "pool-a", "VDI", "web-1 disk 0")
    (vif,) = record(sim, "pool-a", "VM", src_vm)["VIFs"]
    e = env(driver, "web-1", "xs-a1", "xs-b1")
    instance, data = prepare(e)
    assert (data.block_migration, data.shared_storage) == (True, False)
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(e, instance, data).state == "completed"
    driver.post_live_migration_at_source(instance, data)
    driver.post_live_migration_at_destination(instance, data)

    assert migrate_calls(sim) == [
        "host.migrate_receive",  # destination check
        "VM.assert_can_migrate",  # source check
        "host.migrate_receive",  # fresh migrate-send data for the transfer
        "Async.VM.migrate_send",
    ]
    assert [p for p, m in sim.calls if m == "host.migrate_receive"] == ["pool-b", "pool-b"]
    b1 = ref_named(sim, "pool-b", "host", "xs-b1")
    mgmt_b = ref_named(sim, "pool-b", "network", "mgmt-b")
    assert named(sent, "host.migrate_receive") == [(b1, mgmt_b, {})] * 2
    local_b1 = ref_named(sim, "pool-b", "SR", "local-b1")
    (check,) = named(sent, "VM.assert_can_migrate")
    assert check[0] == src_vm and check[2] is True
    assert check[3] == {disk: local_b1} and check[4] == {vif: mgmt_b} and check[5] == {}
    (send,) = named(sent, "Async.VM.migrate_send")
    interim = ref_named(sim, "pool-b", "network", interim_network_name(instance.uuid, "0"))
    assert send[0] == src_vm and send[1]["host"] == b1 and send[2] is True
    assert send[3] == {disk: local_b1} and send[4] == {vif: interim} and send[5] == {}

    # one VM, on pool-b (new ref, same uuid), its VIF on the interim network, mirror key gone
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]
    new_vm = vm_ref(sim, "pool-b", "web-1")
    assert record(sim, "pool-b", "VM", new_vm)["uuid"] == instance.uuid
    (new_vif,) = record(sim, "pool-b", "VM", new_vm)["VIFs"]
    assert record(sim, "pool-b", "VIF", new_vif)["network"] == interim
    (vbd,) = record(sim, "pool-b", "VM", new_vm)["VBDs"]
    new_vdi = record(sim, "pool-b", "VBD", vbd)["VDI"]
    assert "base_mirror" not in record(sim, "pool-b", "VDI", new_vdi)["sm_config"]
    assert named(sent, "VDI.remove_from_sm_config") == [(new_vdi, "base_mirror")]
    assert sim.leftovers("pool-a") == []
    assert sim.tasks() == []  # the finished task was destroyed by post-at-destination


def test_cross_pool_with_a_volume_moves_its_sr(sim: XapiSimulator, driver: XenAPIDriver):
    e = env(driver, "vol-1", "xs-a2", "xs-b1")
    instance, data = prepare(e)
    (sr_uuid,) = data.driver_data["volume_srs"]
    assert data.driver_data["connected_srs"] == [sr_uuid]
    # introduced on pool-b with a PBD plugged on xs-b1 and scanned: the volume's VDI is there
    assert sim.leftovers("pool-b") == [
        "PBD:vol-1-data@xs-b1",
        "SR:vol-1-data",
        f"network:{interim_network_name(instance.uuid, '0')}",
    ]
    changes = ("SR.introduce", "PBD.create", "PBD.plug", "SR.scan")
    assert [m for m in methods(sim, "pool-b") if m in changes] == list(changes)
    pbd = sim.model.find("pool-b", "PBD", SR=ref_named(sim, "pool-b", "SR", "vol-1-data"))[0]
    assert record(sim, "pool-b", "PBD", pbd)["device_config"]["targetIQN"].endswith("vol-1-data")
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(e, instance, data).state == "completed"
    driver.post_live_migration_at_source(instance, data)
    driver.post_live_migration_at_destination(instance, data)
    assert sim.vm_location("vol-1") == ("pool-b", "xs-b1")
    with sim.model.lock:
        assert sim.model.find("pool-a", "SR", name_label="vol-1-data") == []  # forgotten there
    assert "SR.forget" in methods(sim, "pool-a")


def test_a_volume_sr_the_destination_pool_already_had_is_left_alone(
    sim: XapiSimulator, driver: XenAPIDriver
):
    """pool-b already knows vol-1's volume SR (an administrator introduced it and plugged a PBD
    on xs-b1): pre_live_migration uses it as it is, and the rollback neither unplugs that PBD
    nor forgets the SR -- only what ferry made (the interim network) goes."""
    xapi, _sr, pbd = vol_1_sr_introduced_on(sim, "xs-b1", shared=False)
    before = sim.leftovers("pool-b")
    assert before == ["PBD:vol-1-data@xs-b1", "SR:vol-1-data"]

    instance, data = prepare(env(driver, "vol-1", "xs-a2", "xs-b1"))
    assert [m for m in methods(sim, "pool-b") if m in ("SR.introduce", "PBD.create")] == [
        "SR.introduce",
        "PBD.create",
    ]  # the administrator's two calls, none of ferry's
    driver.rollback_live_migration_at_destination(instance, data)
    assert sim.leftovers("pool-b") == before  # the interim network gone, SR and PBD kept
    assert xapi.PBD.get_currently_attached(pbd) is True
    assert not {"PBD.unplug", "SR.forget", "PBD.destroy"} & set(methods(sim, "pool-b"))


def test_a_volume_sr_pool_b_had_on_another_host_keeps_it_and_loses_ferrys_pbd(
    monkeypatch: pytest.MonkeyPatch,
):
    """pool-b (here with a second host, xs-b2) already knows vol-1's volume SR, attached on
    xs-b2 only. pre_live_migration does not introduce it again but gives xs-b1 a PBD of its own
    (tagged as ferry's), plugged and scanned; the rollback unplugs and destroys only that PBD:
    the SR is not forgotten and the administrator's PBD on xs-b2 stays plugged."""
    scenario = copy.deepcopy(DEFAULT_SCENARIO)
    scenario["pools"]["pool-b"]["hosts"]["xs-b2"] = {"address": "10.0.2.12", "memory_gib": 64}
    sim = start_simulator(scenario)
    monkeypatch.setenv(PASSWORD_ENV, sim.password)
    driver = make_driver(sim)
    try:
        xapi, sr, theirs = vol_1_sr_introduced_on(sim, "xs-b2", shared=True)
        before = sim.leftovers("pool-b")
        assert before == ["PBD:vol-1-data@xs-b2", "SR:vol-1-data"]

        instance, data = prepare(env(driver, "vol-1", "xs-a2", "xs-b1"))
        ferrys = [p for p in xapi.SR.get_PBDs(sr) if p != theirs]
        assert len(ferrys) == 1
        mine = xapi.PBD.get_record(ferrys[0])
        assert (mine["host"], mine["currently_attached"]) == (
            xapi.host.get_by_name_label("xs-b1")[0],
            True,
        )
        assert mine["other_config"] == {"ferry_instance": instance.uuid}
        assert sim.leftovers("pool-b") == [
            "PBD:vol-1-data@xs-b1",
            "PBD:vol-1-data@xs-b2",
            "SR:vol-1-data",
            f"network:{interim_network_name(instance.uuid, '0')}",
        ]
        # the administrator's SR.introduce only; ferry created a PBD, plugged it and scanned
        changes = ("SR.introduce", "PBD.create", "PBD.plug", "SR.scan")
        assert [m for m in methods(sim, "pool-b") if m in changes] == [
            "SR.introduce",
            "PBD.create",
            "PBD.plug",
            "PBD.create",
            "PBD.plug",
            "SR.scan",
        ]

        driver.rollback_live_migration_at_destination(instance, data)
        assert sim.leftovers("pool-b") == before  # ferry's PBD and interim network gone
        assert xapi.SR.get_PBDs(sr) == [theirs]
        assert xapi.PBD.get_currently_attached(theirs) is True
        # the SR itself is still known
        assert (
            xapi.SR.get_uuid(sr)
            == record(sim, "pool-a", "SR", ref_named(sim, "pool-a", "SR", "vol-1-data"))["uuid"]
        )
        undo = [
            m for m in methods(sim, "pool-b") if m in ("PBD.unplug", "PBD.destroy", "SR.forget")
        ]
        assert undo == ["PBD.unplug", "PBD.destroy"]
        # a second rollback (a resumed revert) finds nothing of ferry's left and changes nothing
        driver.rollback_live_migration_at_destination(instance, data)
        assert sim.leftovers("pool-b") == before
        assert xapi.PBD.get_currently_attached(theirs) is True
    finally:
        driver.close()
        sim.stop()


# ============================================================================ checks
def test_host_short_of_memory_fails_the_destination_check(sim: XapiSimulator, driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    for host in ("xs-a2", "xs-b1"):
        sim.inject("host_short_of_memory", host=host)
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_destination(web, host, None)
        assert err.value.host == host
        assert re.fullmatch(
            r"not enough free memory on the destination: \d+ MiB needed, 256 MiB available "
            r"\(HOST_NOT_ENOUGH_FREE_MEMORY\)",
            err.value.reason,
        )


def test_vdi_not_in_map_fails_the_source_check(sim: XapiSimulator, driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    data = driver.check_can_live_migrate_destination(web, "xs-b1", None)
    sim.inject("vdi_not_in_map", vm="web-1")
    with pytest.raises(
        MigrationPreCheckError, match=r"is not mapped to a destination SR \(VDI_NOT"
    ):
        driver.check_can_live_migrate_source(web, data)


def test_nova_rules_on_shared_storage_and_block_migration(driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    db = driver.find_instance("db-1")
    assert web is not None and db is not None
    shared = driver.check_can_live_migrate_destination(web, "xs-a2", True)
    with pytest.raises(MigrationPreCheckError, match="shared storage"):
        driver.check_can_live_migrate_source(web, shared)
    local = driver.check_can_live_migrate_destination(db, "xs-a2", False)
    with pytest.raises(MigrationPreCheckError, match="without shared storage"):
        driver.check_can_live_migrate_source(db, local)


def test_destination_check_refusals(driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    with pytest.raises(MigrationPreCheckError, match="already runs on this host"):
        driver.check_can_live_migrate_destination(web, "xs-a1", None)
    with pytest.raises(MigrationPreCheckError, match="not a host of the xenapi driver"):
        driver.check_can_live_migrate_destination(web, "compute-9", None)
    old = driver.find_instance("old-1")
    assert old is not None and old.power_state == "shutdown"
    with pytest.raises(MigrationPreCheckError, match="it must be running or paused"):
        driver.check_can_live_migrate_destination(old, "xs-b1", None)


# ======================================================================= orchestrator
def test_orchestrator_cross_pool(orch: Orchestrator, sim: XapiSimulator):
    m = orch.live_migrate("web-1", destination="xs-b1")
    assert (m.status, m.source, m.destination, m.block_migration) == (
        "completed",
        "xs-a1",
        "xs-b1",
        True,
    )
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]
    assert sim.leftovers("pool-a") == []
    assert orch.claims.list() == [] and orch.migrations.locks() == {}


def short_of_memory_as(orch: Orchestrator, sim: XapiSimulator, phase: str) -> list[str]:
    """When ``phase`` first starts, the host being tried runs short of memory in the simulator;
    the returned list then holds that host's name."""
    hosts: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "phase_started" and e.phase == phase and not hosts:
            hosts.append(orch.get(e.migration_id).attempts[-1].host)
            sim.inject("host_short_of_memory", host=hosts[0])

    orch.subscribe(on_event)
    return hosts


def test_not_enough_memory_on_first_choice_reschedules(orch: Orchestrator, sim: XapiSimulator):
    """The scheduler's first choice passes its filters; then XAPI finds the host short of
    memory (injected as the check starts): the host is excluded and the next one used."""
    chosen = short_of_memory_as(orch, sim, "check-destination")
    m = orch.live_migrate("web-1")
    # xs-a2 and xs-b1 have the same free memory: the scheduler takes xs-a2 (by name) first
    assert chosen == ["xs-a2"]
    assert (m.status, m.destination) == ("completed", "xs-b1")
    assert [(a.host, a.outcome, a.reason) for a in m.attempts if a.outcome == "rejected"] == [
        (
            "xs-a2",
            "rejected",
            "check_destination: not enough free memory on the destination: 2048 MiB needed, "
            "256 MiB available (HOST_NOT_ENOUGH_FREE_MEMORY)",
        )
    ]
    assert [p for p, m in sim.calls if m == "VM.assert_can_boot_here"] == ["pool-a"]
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]


def test_cross_pool_shortage_from_assert_can_migrate_reschedules(
    db_url: str, monkeypatch: pytest.MonkeyPatch
):
    """Across pools XAPI finds the memory shortage where a real XAPI does: in
    ``VM.assert_can_migrate`` (the source check; ``host.migrate_receive`` checks no memory).
    xs-b1 (128 GiB here) is the scheduler's first choice; its destination check passes, then
    it runs short (injected as the source check starts): CheckSource rejects xs-b1 with
    XAPI's reason and the reschedule moves on to xs-a2 (pool_migrate)."""
    scenario = copy.deepcopy(DEFAULT_SCENARIO)
    scenario["pools"]["pool-b"]["hosts"]["xs-b1"]["memory_gib"] = 128
    sim = start_simulator(scenario)
    monkeypatch.setenv(PASSWORD_ENV, sim.password)
    driver = make_driver(sim)
    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[driver])
    try:
        short = short_of_memory_as(orch, sim, "check-source")
        m = orch.live_migrate("web-1")
        assert short == ["xs-b1"]
        assert (m.status, m.destination, m.block_migration) == ("completed", "xs-a2", False)
        assert [(a.host, a.outcome, a.reason) for a in m.attempts if a.outcome == "rejected"] == [
            (
                "xs-b1",
                "rejected",
                "check-source: not enough free memory on the destination: 2048 MiB needed, "
                "256 MiB available (HOST_NOT_ENOUGH_FREE_MEMORY)",
            )
        ]
        # xs-b1's destination check passed (migrate_receive); assert_can_migrate refused it
        assert [
            (p, c) for p, c in sim.calls if c in ("host.migrate_receive", "VM.assert_can_migrate")
        ] == [
            ("pool-b", "host.migrate_receive"),
            ("pool-a", "VM.assert_can_migrate"),
        ]
        assert not [c for _, c in sim.calls if c == "Async.VM.migrate_send"]
        assert sim.vms_named("web-1") == [("pool-a", "xs-a2", "Running")]
        assert sim.leftovers("pool-b") == []
        assert orch.claims.list() == [] and orch.migrations.locks() == {}
    finally:
        orch.close()
        driver.close()
        sim.stop()


def test_abort_mid_transfer_cancels_the_task(orch: Orchestrator, sim: XapiSimulator):
    def on_event(e: Event) -> None:
        if e.kind == "progress" and float(e.data.get("percent", 0)) >= 30:
            orch.migrations.request_abort(e.migration_id)  # as `ferry abort` would

    orch.subscribe(on_event)
    with pytest.raises(MigrationCancelled) as err:
        orch.live_migrate("web-1", destination="xs-b1")
    m = err.value.migration
    assert m.status == "cancelled"
    assert sim.vms_named("web-1") == [("pool-a", "xs-a1", "Running")]
    assert "task.cancel" in methods(sim, "pool-a")
    assert sim.leftovers("pool-b") == []  # the interim network went with the rollback
    assert sim.tasks() == []  # the cancelled task was destroyed by the rollback
    assert orch.claims.list() == [] and orch.migrations.locks() == {}


def test_abort_too_late_completes(orch: Orchestrator, sim: XapiSimulator):
    """Past 90 % XAPI no longer cancels: the abort comes too late and the migration finishes."""

    def on_event(e: Event) -> None:
        # seen by the monitor at its next poll, at 94 %
        if e.kind == "progress" and float(e.data.get("percent", 0)) >= 91:
            orch.migrations.request_abort(e.migration_id)

    orch.subscribe(on_event)
    m = orch.live_migrate("web-1", destination="xs-b1")
    assert (m.status, m.destination) == ("completed", "xs-b1")
    assert "task.cancel" in methods(sim, "pool-a")  # asked, ignored by XAPI
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]


def test_task_cancelled_behind_ferrys_back(orch: Orchestrator, sim: XapiSimulator):
    """An administrator cancels the migrate task (xe task-cancel): the run ends cancelled."""
    cancelled: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress" and float(e.data.get("percent", 0)) >= 20 and not cancelled:
            (task,) = [t["ref"] for t in sim.tasks("pool-a") if t["status"] == "pending"]
            admin(sim, "pool-a").xenapi.task.cancel(task)
            cancelled.append(task)

    orch.subscribe(on_event)
    with pytest.raises(MigrationCancelled) as err:
        orch.live_migrate("web-1", destination="xs-b1")
    assert err.value.migration.status == "cancelled"
    assert cancelled and sim.vm_location("web-1") == ("pool-a", "xs-a1")
    assert sim.leftovers("pool-b") == []


@pytest.mark.parametrize("fault", ["mirror_failed", "task_fails"])
def test_failure_half_way_reverts(orch: Orchestrator, sim: XapiSimulator, fault: str):
    sim.inject(fault, vm="vol-1", at=0.5)
    before = sim.leftovers("pool-a")
    with pytest.raises(MigrationFailed) as err:
        orch.live_migrate("vol-1", destination="xs-b1")
    m = err.value.migration
    code = "MIRROR_FAILED" if fault == "mirror_failed" else "VM_MIGRATE_FAILED"
    assert m.status == "failed" and code in (m.error or ""), m.error
    assert m.leftovers == []
    assert sim.vms_named("vol-1") == [("pool-a", "xs-a2", "Running")]
    assert sim.leftovers("pool-b") == []  # volume SR, its PBD and the interim network: gone
    with sim.model.lock:
        assert sim.model.find("pool-b", "SR", name_label="vol-1-data") == []
    assert sim.leftovers("pool-a") == before
    (pbds,) = [record(sim, "pool-a", "SR", ref_named(sim, "pool-a", "SR", "vol-1-data"))["PBDs"]]
    assert all(record(sim, "pool-a", "PBD", p)["currently_attached"] for p in pbds)
    (task,) = [t for t in sim.tasks("pool-a")] or [None]
    assert task is None  # the failed task was destroyed by the rollback


def test_force_complete_on_timeout_is_refused_clearly(db_url: str, driver: XenAPIDriver):
    settings = fast_settings(
        live_migration_completion_timeout=1, live_migration_timeout_action="force_complete"
    )
    o = Orchestrator(db_url, settings=settings, drivers=[driver])
    try:
        with pytest.raises(MigrationFailed, match="cannot force a live migration to complete"):
            o.live_migrate("web-1", destination="xs-b1")
    finally:
        o.close()


def test_there_and_back_again(orch: Orchestrator, sim: XapiSimulator):
    """a -> b -> a: the interim network made on pool-b is removed when the VM leaves it."""
    uuid = orch.live_migrate("web-1", destination="xs-b1").instance
    interim = f"network:{interim_network_name(uuid, '0')}"
    assert sim.leftovers("pool-b") == [interim]
    m = orch.live_migrate("web-1", destination="xs-a2")
    assert (m.status, m.source) == ("completed", "xs-b1")
    assert sim.vms_named("web-1") == [("pool-a", "xs-a2", "Running")]
    assert sim.leftovers("pool-b") == []  # post-at-source removed it
    assert sim.leftovers("pool-a") == [interim]  # web-1's network on pool-a now


def test_an_unreachable_pool_does_not_block_the_others(
    sim: XapiSimulator, db_url: str, monkeypatch: pytest.MonkeyPatch
):
    configs = [
        *host_configs(sim),
        HostConfig(
            "xs-c1",
            "xenapi",
            {
                "url": "http://127.0.0.1:9",
                "username": "root",
                "password_env": PASSWORD_ENV,
                "verify_tls": False,
            },
        ),
    ]
    driver = XenAPIDriver.from_host_configs(configs, clock=make_driver(sim).clock)
    assert driver.host_info("xs-c1").up is False
    assert {i.name for i in driver.list_instances()} >= {"web-1", "batch-1"}
    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[driver])
    try:
        m = orch.live_migrate("web-1")
        assert m.status == "completed" and m.destination in ("xs-a2", "xs-b1")
        with pytest.raises(MigrationPreCheckError, match="xs-c1"):
            orch.live_migrate("api-1", destination="xs-c1")
    finally:
        orch.close()


# ========================================================================== sessions
def test_session_invalid_logs_in_again(sim: XapiSimulator, driver: XenAPIDriver):
    assert driver.host_info("xs-a1").up
    logins = methods(sim, "pool-a").count("session.login_with_password")
    sim.invalidate_sessions()
    info = driver.host_info("xs-a1")
    assert info.up and info.memory_mb == 65536
    assert info.vcpus == 32  # host.cpu_info.cpu_count
    assert methods(sim, "pool-a").count("session.login_with_password") == logins + 1


def test_session_invalid_mid_transfer(orch: Orchestrator, sim: XapiSimulator):
    done: list[bool] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress" and float(e.data.get("percent", 0)) >= 40 and not done:
            sim.invalidate_sessions()
            done.append(True)

    orch.subscribe(on_event)
    m = orch.live_migrate("web-1", destination="xs-b1")
    assert m.status == "completed" and done
    assert sim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]


def test_rotated_password_is_read_again(
    sim: XapiSimulator, driver: XenAPIDriver, monkeypatch: pytest.MonkeyPatch
):
    web = driver.find_instance("web-1")
    assert web is not None
    real = sim.password
    sim.model.password = "rotated-Pw-2"  # changed on the pool; ferry's env still has the old
    sim.invalidate_sessions()
    with pytest.raises(MigrationPreCheckError) as err:
        driver.check_can_live_migrate_destination(web, "xs-b1", None)
    assert "authentication as 'root' failed" in err.value.reason
    assert real not in str(err.value) and "rotated" not in str(err.value)
    monkeypatch.setenv(PASSWORD_ENV, "rotated-Pw-2")
    driver.check_can_live_migrate_destination(web, "xs-b1", None)


def test_unreachable_pool(sim: XapiSimulator, driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    sim.stop()
    assert driver.host_info("xs-b1").up is False
    assert driver.list_instances() == []
    with pytest.raises(DriverError, match="cannot reach the XAPI pool master at http"):
        driver.find_instance("web-1")  # the VM may well be there: not "not found"
    with pytest.raises(MigrationPreCheckError, match="cannot reach the XAPI pool master at http"):
        driver.check_can_live_migrate_destination(web, "xs-b1", None)


def test_wrong_password_is_said_not_instance_not_found(
    sim: XapiSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-Pw-9")
    driver = make_driver(sim)
    orch = Orchestrator(
        f"sqlite:///{tmp_path / 'auth.db'}", settings=fast_settings(), drivers=[driver]
    )
    try:
        with pytest.raises(InstanceNotFound) as err:
            orch.live_migrate("web-1")
        text = str(err.value)
        assert "authentication as 'root' failed" in text and "could not ask" in text
        assert "not-the-Pw-9" not in text and sim.password not in text
        assert orch.list() == []  # nothing was created
        hosts = {h["name"]: h for h in orch.hosts()}
        assert hosts["xs-b1"]["up"] is False
        reason = hosts["xs-b1"]["down_reason"]
        assert "authentication as 'root' failed" in reason and "xenapi pool http" in reason
        assert "not-the-Pw-9" not in reason
    finally:
        orch.close()


# ============================================================== crash reconciliation
def test_a_new_driver_finds_the_tagged_task(sim: XapiSimulator, driver: XenAPIDriver):
    """After a restart (a new driver: nothing in memory) the task is found by its tags."""
    e = env(driver, "web-1", "xs-a1", "xs-b1")
    instance, data = prepare(e)
    driver.start_transfer(instance, data, TransferPolicy())
    driver.clock.sleep(5)
    (task,) = sim.tasks("pool-a")
    assert task["other_config"] == {
        "ferry_instance": instance.uuid,
        "ferry_token": data.driver_data["token"],
        "ferry_destination": "xs-b1",
    }
    fresh = make_driver(sim)
    loc = fresh.locate(instance.uuid)
    assert (loc.host, loc.transfer_in_flight, loc.transfer_destination) == ("xs-a1", True, "xs-b1")
    progress = fresh.transfer_progress(instance, data)
    assert progress.state == "running" and 0.2 < progress.fraction < 0.4
    assert progress.elapsed_s == pytest.approx(5, abs=1)
    fresh.start_transfer(instance, data, TransferPolicy())  # re-run after the crash: no-op
    assert methods(sim).count("Async.VM.migrate_send") == 1
    assert run_to_end(env(fresh, "web-1", "xs-a1", "xs-b1"), instance, data).state == "completed"
    assert fresh.locate(instance.uuid).host == "xs-b1"
    fresh.close()


def test_an_untagged_task_from_a_crash_is_adopted(sim: XapiSimulator, driver: XenAPIDriver):
    """Killed between Async.VM.migrate_send and tagging: the re-run adopts the running task."""
    e = env(driver, "web-1", "xs-a1", "xs-a2")
    instance, data = prepare(e)
    session = admin(sim, "pool-a")
    task = session.xenapi.Async.VM.pool_migrate(
        vm_ref(sim, "pool-a", "web-1"), ref_named(sim, "pool-a", "host", "xs-a2"), {"live": "true"}
    )
    fresh = make_driver(sim)
    assert fresh.locate(instance.uuid).transfer_in_flight
    fresh.start_transfer(instance, data, TransferPolicy())
    assert methods(sim).count("Async.VM.pool_migrate") == 1
    assert sim.tasks("pool-a")[0]["other_config"]["ferry_token"] == data.driver_data["token"]
    assert run_to_end(e, instance, data).state == "completed"
    assert sim.tasks("pool-a")[0]["ref"] == task
    fresh.close()


def test_abort_cancels_a_task_whose_reply_was_lost(sim: XapiSimulator, driver: XenAPIDriver):
    """The connection dropped after XAPI started the task: ferry never got its ref. The revert's
    abort still finds it (the VM's current_operations) and cancels it."""
    e = env(driver, "web-1", "xs-a1", "xs-b1")
    instance, data = prepare(e)
    driver.start_transfer(instance, data, TransferPolicy())
    (task,) = sim.tasks("pool-a")
    admin(sim, "pool-a").xenapi.task.set_other_config(task["ref"], {})  # as if never tagged
    fresh = make_driver(sim)
    assert fresh.locate(instance.uuid).transfer_in_flight
    fresh.abort_transfer(instance, data)
    assert [t["status"] for t in sim.tasks("pool-a")] == ["cancelled"]
    assert fresh.locate(instance.uuid).host == "xs-a1"
    fresh.rollback_live_migration_at_destination(instance, data)
    assert sim.leftovers("pool-b") == [] and sim.tasks() == []
    fresh.close()


def test_migrate_receive_data_is_fetched_again_after_a_restart(
    sim: XapiSimulator, driver: XenAPIDriver
):
    web = driver.find_instance("web-1")
    assert web is not None
    data = driver.check_can_live_migrate_destination(web, "xs-b1", None)
    assert "session_id" not in repr(data.to_dict())
    assert not any(s in repr(data.to_dict()) for s in sim.session_ids())
    fresh = make_driver(sim)  # the check's migrate-receive data died with the old process
    receives = methods(sim).count("host.migrate_receive")
    fresh.check_can_live_migrate_source(web, data)
    assert methods(sim).count("host.migrate_receive") == receives + 1
    fresh.close()


def test_cleanup_logs_the_receive_session_out(sim: XapiSimulator, driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    data = driver.check_can_live_migrate_destination(web, "xs-b1", None)
    receive_session = sim.session_ids()[-1]
    with sim.model.lock:
        assert sim.model.exists("pool-b", "session", receive_session)
    driver.cleanup_live_migration_destination_check("xs-b1", data)
    driver.cleanup_live_migration_destination_check("xs-b1", data)
    with sim.model.lock:
        assert not sim.model.exists("pool-b", "session", receive_session)


def test_rollback_after_switchover_is_refused(sim: XapiSimulator, driver: XenAPIDriver):
    e = env(driver, "web-1", "xs-a1", "xs-b1")
    instance, data = prepare(e)
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(e, instance, data).state == "completed"
    with pytest.raises(DriverError, match="switchover happened"):
        driver.rollback_live_migration_at_destination(instance, data)
    assert leftovers_on(sim, "xs-b1")  # the interim network carries the VM now: kept


def test_start_refuses_when_the_vm_is_elsewhere(driver: XenAPIDriver):
    web = driver.find_instance("web-1")
    assert web is not None
    data = MigrateData(web.uuid, "xs-a2", "xs-b1", block_migration=True)
    with pytest.raises(TransferFailed, match="runs on xs-a1, not on xs-a2"):
        driver.start_transfer(web, data, TransferPolicy())


# =========================================================================== secrets
def test_no_password_or_session_id_in_the_database_or_the_log(
    sim: XapiSimulator,
    driver: XenAPIDriver,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    orch = Orchestrator(db_url, settings=fast_settings(), drivers=[driver])
    try:
        assert orch.live_migrate("web-1", destination="xs-b1").status == "completed"
        sim.inject("mirror_failed", vm="vol-1", at=0.3)
        invalidated: list[bool] = []

        def on_event(e: Event) -> None:
            if e.kind == "progress" and not invalidated:
                sim.invalidate_sessions()
                invalidated.append(True)

        orch.subscribe(on_event)
        with pytest.raises(MigrationFailed):
            orch.live_migrate("vol-1", destination="xs-b1")
        web = driver.find_instance("web-1")
        assert web is not None
        sim.model.password = "changed"
        sim.invalidate_sessions()
        with pytest.raises(MigrationPreCheckError):
            driver.check_can_live_migrate_destination(web, "xs-a1", None)
    finally:
        orch.close()
        sim.model.password = os.environ[PASSWORD_ENV]
    secrets = [os.environ[PASSWORD_ENV], *sim.session_ids()]
    assert len(secrets) >= 6  # two logins per pool at least, migrate-receive sessions
    blob = database_bytes(db_url)
    assert b"MIRROR_FAILED" in blob  # XAPI's errors were persisted: they were redacted
    log = caplog.text
    assert "Async.VM.migrate_send to xs-b1" in log  # the driver's log was captured
    for secret in secrets:
        assert secret.encode() not in blob, secret
        assert secret not in log, secret


# ============================================================================ config
def xen(name: str, **options: Any) -> HostConfig:
    base = {"url": "https://pool.example", "username": "root", "password_env": "PW"}
    return HostConfig(name=name, driver="xenapi", options={**base, **options})


def test_config_from_the_settings_file(tmp_path: Path):
    settings = parse_settings(
        {
            "hosts": [
                {
                    "name": "a1",
                    "driver": "xenapi",
                    "url": "https://master-a.example/",
                    "username": "root",
                    "password_file": "secret",
                    "host": "xenserver-a1",
                    "pool": "pool-a",
                },
                {
                    "name": "a2",
                    "driver": "xenapi",
                    "url": "https://master-a.example",
                    "username": "root",
                    "password_file": "secret",
                },
            ]
        }
    )
    a1, a2 = parse_hosts(settings.hosts, base_dir=tmp_path)
    assert (a1.label, a2.label) == ("xenserver-a1", "a2")
    assert a1.pool is a2.pool and a1.pool.url == "https://master-a.example"
    assert a1.pool.verify_tls and a1.pool.password_file == str(tmp_path / "secret")
    (tmp_path / "secret").write_text("s3cret\nsecond line ignored\n")
    assert a1.pool.read_password() == "s3cret"
    driver = XenAPIDriver.from_host_configs(settings.hosts, base_dir=tmp_path)
    assert driver.hosts() == ["a1", "a2"]
    assert len(driver._lookup.pools) == 1  # one session per pool master


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": None}, "url is required"),
        ({"uri": "x"}, "unknown key(s) uri"),
        ({"password_file": "/f"}, "exactly one of password_env"),
        ({"password_env": None}, "exactly one of password_env"),
        ({"url": "ftp://pool"}, "url must be https://"),
        ({"url": "https://root:pw@pool"}, "must not carry credentials"),
        ({"url": "http://pool.example"}, "unencrypted http"),
        ({"verify_tls": "no"}, "verify_tls must be true or false"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"ca_file": "/ca.pem", "verify_tls": False}, "ca_file is set but verify_tls = false"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str):
    opts = {**xen("h").options, **options}
    opts = {k: v for k, v in opts.items() if v is not None}  # None: leave the key out
    with pytest.raises(ConfigError) as err:
        parse_hosts([HostConfig("h", "xenapi", opts)])
    assert message in str(err.value)


def test_config_errors_across_hosts():
    with pytest.raises(ConfigError, match="differ in username"):
        parse_hosts([xen("a"), xen("b", username="admin")])
    with pytest.raises(ConfigError, match="both name the XAPI host 'x'"):
        parse_hosts([xen("a", host="x"), xen("b", host="x")])
    parse_hosts([xen("a"), xen("b", url="http://127.0.0.1:8080")])  # loopback http is fine
    parse_hosts([xen("c", url="http://pool.example", verify_tls=False)])


def test_password_sources_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PW", raising=False)
    (host,) = parse_hosts([xen("a")])
    with pytest.raises(ConfigError, match="environment variable PW named by password_env"):
        host.pool.read_password()
    (host,) = parse_hosts([xen("a", password_env=None, password_file=str(tmp_path / "nope"))])
    with pytest.raises(ConfigError, match=r"password_file .*nope does not exist"):
        host.pool.read_password()
    (tmp_path / "empty").write_text("\n")
    (host,) = parse_hosts([xen("a", password_env=None, password_file=str(tmp_path / "empty"))])
    with pytest.raises(ConfigError, match="is empty"):
        host.pool.read_password()


def test_a_missing_password_is_a_failed_check_not_a_crash(
    sim: XapiSimulator, driver: XenAPIDriver, monkeypatch: pytest.MonkeyPatch
):
    web = driver.find_instance("web-1")
    assert web is not None
    monkeypatch.delenv(PASSWORD_ENV)
    sim.invalidate_sessions()
    driver.close()
    assert driver.host_info("xs-b1").up is False
    with pytest.raises(MigrationPreCheckError, match=f"{PASSWORD_ENV} named by password_env"):
        driver.check_can_live_migrate_destination(web, "xs-b1", None)


def test_tls_is_verified_unless_disabled():
    (verified,) = parse_hosts([xen("a")])
    transport = make_transport(verified.pool)
    context = transport.context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    (unverified,) = parse_hosts([xen("a", verify_tls=False)])
    context = make_transport(unverified.pool).context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_NONE
    (bad_ca,) = parse_hosts([xen("a", ca_file="/nonexistent/ca.pem")])
    with pytest.raises(ConfigError, match=r"ca_file /nonexistent/ca\.pem cannot be loaded"):
        make_transport(bad_ca.pool)


def test_untrusted_certificate_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real TLS handshake with a self-signed certificate: refused, with a clear reason."""
    import http.server
    import subprocess
    import threading

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        driver = XenAPIDriver.from_host_configs([xen("a", url=url, password_env=PASSWORD_ENV)])
        monkeypatch.setenv(PASSWORD_ENV, "x")
        info = driver.host_info("a")
        assert info.up is False
        web = Instance(uuid="00000000-0000-4000-8000-000000000001", name="w", host="b")
        with pytest.raises(DriverError, match="TLS certificate not trusted"):
            driver.locate(web.uuid)
    finally:
        server.shutdown()
        server.server_close()


def test_missing_sdk_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "XenAPI", None)
    with pytest.raises(ConfigError, match=r"pip install 'ferry\[xenapi\]'"):
        XenAPIDriver.from_host_configs([xen("a")])


def test_messages_are_redacted(sim: XapiSimulator, driver: XenAPIDriver):
    """Any text the driver puts in a message passes the redactor: session ids (also in URLs)
    and the password are masked."""
    web = driver.find_instance("web-1")
    assert web is not None
    data = driver.check_can_live_migrate_destination(web, "xs-b1", None)
    receive = driver._receive.get(data.driver_data["token"])
    assert receive is not None
    text = driver._redact(f"failed at {receive['xenops']} with {receive['session_id']}")
    assert receive["session_id"] not in text and "session_id=***" in text
    assert driver._redact(f"pw {sim.password}") == "pw ***"
