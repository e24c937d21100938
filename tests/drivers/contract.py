"""The behavioural contract every ferry driver passes (simulated, libvirt, XenAPI).

Use it by subclassing :class:`DriverContract` in a test module and providing a function-scoped
``driver_env`` fixture that returns a :class:`DriverEnv` describing a fresh environment::

    class TestLibvirtContract(DriverContract):
        @pytest.fixture
        def driver_env(self, two_hosts) -> DriverEnv:
            driver = LibvirtDriver(...)
            return DriverEnv(driver=driver, instance=uuid, source="host-a",
                             destination="host-b", bad_destination="host-c",
                             wait=time.sleep)

The suite only uses the abstract :class:`~ferry.drivers.base.Driver` API (plus the optional
``artifacts`` callable to prove that a rollback leaves nothing behind). Every test starts from a
fresh environment and leaves the instance running somewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ferry.drivers.base import Driver, TransferPolicy
from ferry.errors import DriverError, HostNotFound, InstanceNotFound, MigrationPreCheckError
from ferry.model import Instance, MigrateData, TransferProgress

UNKNOWN_UUID = "00000000-0000-4000-8000-00000000dead"


@dataclass
class DriverEnv:
    """What the contract needs to know about one driver environment."""

    driver: Driver
    #: UUID of a running instance that can live-migrate from ``source`` to ``destination``
    #: and whose transfer lasts more than one ``poll_s`` (so it can be aborted mid-way)
    instance: str
    source: str
    destination: str
    #: a host whose destination check fails for the instance
    bad_destination: str
    #: waits that many seconds of the driver's time (``driver.clock.sleep``, ``time.sleep``, ...)
    wait: Callable[[float], None]
    #: optional: names of what ``instance`` has on ``host`` (``(host, instance_uuid) -> names``)
    artifacts: Callable[[str, str], list[str]] | None = None
    #: block migration to request (``None``: let the driver decide)
    block_migration: bool | None = None
    policy: TransferPolicy | None = None
    poll_s: float = 0.5
    #: give up on a transfer after this many seconds of the driver's time
    max_wait_s: float = 600.0


def prepare(env: DriverEnv) -> tuple[Instance, MigrateData]:
    """Run the checks and pre_live_migration; the instance and the data for the transfer."""
    driver = env.driver
    instance = driver.find_instance(env.instance)
    assert instance is not None
    data = driver.check_can_live_migrate_destination(instance, env.destination, env.block_migration)
    data = driver.check_can_live_migrate_source(instance, data)
    data = driver.pre_live_migration(instance, data)
    return instance, data


def run_to_end(env: DriverEnv, instance: Instance, data: MigrateData) -> TransferProgress:
    """Poll the transfer (waiting ``poll_s`` between polls) until it is no longer running."""
    for _ in range(math.ceil(env.max_wait_s / env.poll_s) + 1):
        progress = env.driver.transfer_progress(instance, data)
        assert progress.state in ("running", "completed", "failed", "cancelled"), progress
        if progress.state != "running":
            return progress
        env.wait(env.poll_s)
    pytest.fail(f"the transfer did not end within {env.max_wait_s} s")


def policy(env: DriverEnv) -> TransferPolicy:
    return env.policy or TransferPolicy()


class DriverContract:
    """The contract suite; subclasses provide the ``driver_env`` fixture."""

    # ------------------------------------------------------------------ inventory
    def test_hosts_include_source_and_destinations(self, driver_env: DriverEnv) -> None:
        hosts = driver_env.driver.hosts()
        assert {driver_env.source, driver_env.destination} <= set(hosts)
        assert hosts == driver_env.driver.hosts()

    def test_host_info_reports_capacity_and_usage(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        info = driver.host_info(driver_env.source)
        assert info.name == driver_env.source
        assert info.driver == driver.name
        assert info.up
        assert info.memory_mb_used >= instance.memory_mb
        assert info.vcpus_used >= instance.vcpus
        assert info.free_memory_mb == info.memory_mb - info.memory_mb_used
        assert info.hypervisor_type and info.hypervisor_version > 0

    def test_host_info_of_unknown_host_raises_host_not_found(self, driver_env: DriverEnv) -> None:
        with pytest.raises(HostNotFound):
            driver_env.driver.host_info("no-such-host.invalid")
        with pytest.raises(HostNotFound):
            driver_env.driver.host_status("no-such-host.invalid")

    def test_host_status_agrees_with_host_info(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        for host in (driver_env.source, driver_env.destination):
            status, info = driver.host_status(host), driver.host_info(host)
            assert status.name == host and status.driver == driver.name
            assert (status.up, status.enabled) == (info.up, info.enabled) == (True, True)
            assert status.hypervisor_type == info.hypervisor_type
            assert status.hypervisor_version == info.hypervisor_version

    def test_list_instances(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        on_source = driver.list_instances(driver_env.source)
        assert driver_env.instance in {i.uuid for i in on_source}
        assert all(i.host == driver_env.source for i in on_source)
        assert driver_env.instance in {i.uuid for i in driver.list_instances()}
        assert driver_env.instance not in {
            i.uuid for i in driver.list_instances(driver_env.destination)
        }

    def test_find_instance_by_uuid_and_by_name(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        by_uuid = driver.find_instance(driver_env.instance)
        assert by_uuid is not None
        assert by_uuid.uuid == driver_env.instance
        assert by_uuid.host == driver_env.source
        assert by_uuid.power_state == "running"
        by_name = driver.find_instance(by_uuid.name)
        assert by_name is not None and by_name.uuid == by_uuid.uuid
        assert driver.find_instance(UNKNOWN_UUID) is None
        assert driver.find_instance("no-such-instance") is None

    def test_locate(self, driver_env: DriverEnv) -> None:
        location = driver_env.driver.locate(driver_env.instance)
        assert location.instance_uuid == driver_env.instance
        assert location.host == driver_env.source
        assert location.power_state == "running"
        assert not location.transfer_in_flight
        assert location.transfer_destination is None
        with pytest.raises(InstanceNotFound):
            driver_env.driver.locate(UNKNOWN_UUID)

    # --------------------------------------------------------------------- checks
    def test_destination_check_passes_for_good_destination(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        for _ in range(2):  # safe to call twice
            data = driver.check_can_live_migrate_destination(
                instance, driver_env.destination, driver_env.block_migration
            )
            assert data.instance_uuid == instance.uuid
            assert data.source == driver_env.source
            assert data.destination == driver_env.destination
            assert isinstance(data.block_migration, bool)
            assert isinstance(data.shared_storage, bool)
            assert MigrateData.from_dict(data.to_dict()) == data  # plain, JSON-friendly
        driver.cleanup_live_migration_destination_check(driver_env.destination, data)

    def test_destination_check_rejects_bad_destination(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_destination(
                instance, driver_env.bad_destination, driver_env.block_migration
            )
        assert err.value.host == driver_env.bad_destination
        assert err.value.reason

    def test_check_cleanup_is_idempotent(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        before = self._artifacts(driver_env, driver_env.destination)
        data = driver.check_can_live_migrate_destination(
            instance, driver_env.destination, driver_env.block_migration
        )
        driver.cleanup_live_migration_destination_check(driver_env.destination, data)
        driver.cleanup_live_migration_destination_check(driver_env.destination, data)
        assert self._artifacts(driver_env, driver_env.destination) == before

    def test_source_check_passes(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        data = driver.check_can_live_migrate_destination(
            instance, driver_env.destination, driver_env.block_migration
        )
        checked = driver.check_can_live_migrate_source(instance, data)
        assert checked.source == data.source and checked.destination == data.destination
        assert checked == driver.check_can_live_migrate_source(instance, data)

    # -------------------------------------------------------------------- prepare
    def test_pre_and_rollback_are_idempotent_and_leave_nothing(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        before = self._artifacts(driver_env, driver_env.destination)
        instance, data = prepare(driver_env)
        again = driver.pre_live_migration(instance, data)
        assert again.driver_data == data.driver_data
        driver.rollback_live_migration_at_destination(instance, again)
        driver.rollback_live_migration_at_destination(instance, again)
        driver.cleanup_live_migration_destination_check(driver_env.destination, data)
        assert self._artifacts(driver_env, driver_env.destination) == before
        location = driver.locate(driver_env.instance)
        assert location.host == driver_env.source
        assert location.power_state == "running"

    def test_rollback_without_pre_is_a_noop(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance = driver.find_instance(driver_env.instance)
        assert instance is not None
        before = self._artifacts(driver_env, driver_env.destination)
        data = MigrateData(instance.uuid, driver_env.source, driver_env.destination)
        driver.rollback_live_migration_at_destination(instance, data)
        assert self._artifacts(driver_env, driver_env.destination) == before

    # ------------------------------------------------------------------- transfer
    def test_no_transfer_before_start(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        assert driver.transfer_progress(instance, data).state == "none"
        driver.abort_transfer(instance, data)  # nothing in flight: no-op
        assert driver.locate(instance.uuid).host == driver_env.source
        driver.rollback_live_migration_at_destination(instance, data)

    def test_full_live_migration(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        driver.start_transfer(instance, data, policy(driver_env))
        driver.start_transfer(instance, data, policy(driver_env))  # in flight: no-op
        first = driver.transfer_progress(instance, data)
        assert first.state in ("running", "completed")
        assert first.memory_total_mb > 0

        progress = run_to_end(driver_env, instance, data)
        assert progress.state == "completed", progress
        assert progress.fraction == 1.0
        assert progress.memory_processed_mb >= progress.memory_total_mb
        assert driver.transfer_progress(instance, data).state == "completed"

        location = driver.locate(instance.uuid)
        assert location.host == driver_env.destination
        assert location.power_state == "running"
        assert not location.transfer_in_flight
        # a late start after the switchover is a no-op, an abort is refused
        driver.start_transfer(instance, data, policy(driver_env))
        with pytest.raises(DriverError):
            driver.abort_transfer(instance, data)

        for _ in range(2):
            driver.post_live_migration_at_source(instance, data)
            driver.post_live_migration_at_destination(instance, data)
        moved = driver.find_instance(instance.uuid)
        assert moved is not None and moved.host == driver_env.destination
        assert instance.uuid in {i.uuid for i in driver.list_instances(driver_env.destination)}
        assert instance.uuid not in {i.uuid for i in driver.list_instances(driver_env.source)}
        assert self._artifacts(driver_env, driver_env.source, instance.uuid) == []
        assert driver.host_info(driver_env.destination).memory_mb_used >= instance.memory_mb

    def test_abort_mid_transfer_leaves_instance_on_source(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        before = self._artifacts(driver_env, driver_env.destination)
        instance, data = prepare(driver_env)
        driver.start_transfer(instance, data, policy(driver_env))
        driver_env.wait(driver_env.poll_s)
        assert driver.transfer_progress(instance, data).state == "running"
        assert driver.locate(instance.uuid).transfer_in_flight
        assert driver.locate(instance.uuid).transfer_destination == driver_env.destination

        driver.abort_transfer(instance, data)
        driver.abort_transfer(instance, data)
        assert driver.transfer_progress(instance, data).state == "cancelled"
        location = driver.locate(instance.uuid)
        assert location.host == driver_env.source
        assert location.power_state == "running"
        assert not location.transfer_in_flight

        driver.rollback_live_migration_at_destination(instance, data)
        driver.rollback_live_migration_at_destination(instance, data)
        driver.cleanup_live_migration_destination_check(driver_env.destination, data)
        assert self._artifacts(driver_env, driver_env.destination) == before
        driver_env.wait(driver_env.poll_s * 4)
        assert driver.locate(instance.uuid).host == driver_env.source

    def test_downtime_steps_and_force_complete(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        driver.set_max_downtime(instance, data, 100)  # nothing in flight yet: no-op
        driver.start_transfer(instance, data, policy(driver_env))
        driver.set_max_downtime(instance, data, 200)
        driver.set_max_downtime(instance, data, 200)
        lever = driver.force_complete(instance, data)
        assert lever in ("pause", "post-copy")
        assert driver.force_complete(instance, data) == lever
        progress = run_to_end(driver_env, instance, data)
        assert progress.state == "completed", progress
        assert driver.locate(instance.uuid).host == driver_env.destination
        driver.post_live_migration_at_source(instance, data)
        driver.post_live_migration_at_destination(instance, data)

    def test_force_complete_without_transfer_raises(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        with pytest.raises(DriverError):
            driver.force_complete(instance, data)
        driver.rollback_live_migration_at_destination(instance, data)

    def test_post_steps_refuse_before_switchover(self, driver_env: DriverEnv) -> None:
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        with pytest.raises(DriverError):
            driver.post_live_migration_at_source(instance, data)
        assert driver.locate(instance.uuid).host == driver_env.source
        driver.rollback_live_migration_at_destination(instance, data)

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _artifacts(env: DriverEnv, host: str, instance_uuid: str | None = None) -> list[str]:
        if env.artifacts is None:
            return []
        return sorted(env.artifacts(host, instance_uuid or env.instance))
