"""The simulated driver: the driver contract, plus what only the simulated cluster does
(faults, persistence across driver objects and "processes", the stepped clock, seeding)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ferry.drivers.base import TransferPolicy
from ferry.drivers.simulated import SimClock, SimulatedDriver
from ferry.drivers.simulated.checks import NO_SHARED_STORAGE_REASON
from ferry.errors import (
    ConfigError,
    DriverError,
    HostNotFound,
    InstanceNotFound,
    MigrationPreCheckError,
    TransferFailed,
)
from ferry.model import Instance, MigrateData
from ferry.persistence.db import Database

from .contract import DriverContract, DriverEnv, prepare, run_to_end

WEB_1 = "1f248d90-31c2-426d-9f46-0a80b7da285e"  # compute-1, 4096 MiB, ceph-a
APP_1 = "bb031f11-d4ac-4318-9005-4ed6fade4720"  # compute-4, local disk
CACHE_1 = "9f0905c8-3e1e-49f6-8e99-4ad1c03051f9"  # compute-1, paused
BATCH_1 = "9f3b7fdf-af16-43d5-abc0-287a3b8639b0"  # compute-4, shutdown
BFV_1 = "678c8a1e-b050-4eb0-82e6-4902979bf35b"  # compute-4, boot from shared volume


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(_url(tmp_path / "ferry.db"))
    database.upgrade()
    yield database
    database.close()


@pytest.fixture
def driver(db: Database) -> SimulatedDriver:
    return SimulatedDriver(db, speed=0)


def _names(driver: SimulatedDriver) -> object:
    return lambda host, uuid: [a["name"] for a in driver.artifacts(host, uuid)]


SCENARIOS = {
    # web-1 over shared storage; compute-5 is down
    "shared-storage": (WEB_1, "compute-1", "compute-3", "compute-5"),
    # app-1 (local disk) by block migration to a newer host; compute-2's check always fails
    "block-migration": (APP_1, "compute-4", "compute-1", "compute-2"),
}


class TestSimulatedDriverContract(DriverContract):
    @pytest.fixture(params=sorted(SCENARIOS))
    def driver_env(self, request: pytest.FixtureRequest, driver: SimulatedDriver) -> DriverEnv:
        instance, source, destination, bad = SCENARIOS[request.param]
        return DriverEnv(
            driver=driver,
            instance=instance,
            source=source,
            destination=destination,
            bad_destination=bad,
            wait=driver.clock.sleep,
            artifacts=_names(driver),  # type: ignore[arg-type]
        )


# ----------------------------------------------------------------------------- helpers
def _instance(driver: SimulatedDriver, ref: str) -> Instance:
    found = driver.find_instance(ref)
    assert found is not None
    return found


def _migrate_data(
    driver: SimulatedDriver, ref: str, destination: str, block: bool | None = None
) -> tuple[Instance, MigrateData]:
    instance = _instance(driver, ref)
    data = driver.check_can_live_migrate_destination(instance, destination, block)
    data = driver.check_can_live_migrate_source(instance, data)
    return instance, driver.pre_live_migration(instance, data)


def _env(driver: SimulatedDriver, ref: str, destination: str) -> DriverEnv:
    instance = _instance(driver, ref)
    return DriverEnv(
        driver, instance.uuid, instance.host, destination, "compute-5", wait=driver.clock.sleep
    )


# ------------------------------------------------------------------------------ checks
class TestChecks:
    def test_shared_storage_means_no_block_migration(self, driver: SimulatedDriver) -> None:
        web = _instance(driver, "web-1")
        data = driver.check_can_live_migrate_destination(web, "compute-3", None)
        assert data.shared_storage and not data.block_migration
        assert driver.check_markers("compute-3")[0]["instance_uuid"] == WEB_1

    def test_local_storage_means_block_migration(self, driver: SimulatedDriver) -> None:
        app = _instance(driver, "app-1")
        data = driver.check_can_live_migrate_destination(app, "compute-1", None)
        assert not data.shared_storage and data.block_migration

    def test_not_enough_memory(self, tmp_path: Path) -> None:
        cluster = tmp_path / "small.toml"
        cluster.write_text(
            """
[[hosts]]
name = "a"
hypervisor_type = "qemu"
hypervisor_version = 1
vcpus = 8
memory_mb = 8192
disk_gb = 100
bandwidth_mbps = 100
[[hosts]]
name = "b"
hypervisor_type = "qemu"
hypervisor_version = 1
vcpus = 8
memory_mb = 8192
disk_gb = 100
bandwidth_mbps = 100
[[instances]]
uuid = "11111111-1111-4111-8111-111111111111"
name = "big"
host = "a"
vcpus = 2
memory_mb = 4096
[[instances]]
uuid = "22222222-2222-4222-8222-222222222222"
name = "filler"
host = "b"
vcpus = 2
memory_mb = 6144
"""
        )
        db = Database(_url(tmp_path / "small.db"))
        driver = SimulatedDriver(db, cluster_file=cluster, speed=0)
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_destination(_instance(driver, "big"), "b", None)
        assert err.value.host == "b"
        assert err.value.reason == "not enough free memory: 2048 MiB free, 4096 MiB needed"
        assert driver.check_markers() == []
        db.close()

    @pytest.mark.parametrize(
        ("destination", "reason"),
        [
            ("compute-5", "host is down"),
            ("compute-4", "hypervisor version 8002000 is older than the source's 9001000"),
            ("compute-1", "the instance already runs on this host"),
            ("nowhere", "host is not part of the simulated cluster"),
        ],
    )
    def test_destination_problems(
        self, driver: SimulatedDriver, destination: str, reason: str
    ) -> None:
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_destination(_instance(driver, "web-1"), destination, None)
        assert (err.value.host, err.value.reason, err.value.phase) == (
            destination,
            reason,
            "check_destination",
        )

    def test_block_migration_on_shared_storage_is_refused(self, driver: SimulatedDriver) -> None:
        web = _instance(driver, "web-1")
        data = driver.check_can_live_migrate_destination(web, "compute-3", True)
        with pytest.raises(MigrationPreCheckError, match="cannot block-migrate"):
            driver.check_can_live_migrate_source(web, data)

    def test_local_disk_without_block_migration_is_refused(self, driver: SimulatedDriver) -> None:
        app = _instance(driver, "app-1")
        data = driver.check_can_live_migrate_destination(app, "compute-1", False)
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_source(app, data)
        assert err.value.reason == NO_SHARED_STORAGE_REASON
        assert err.value.phase == "check_source"

    def test_boot_from_volume_needs_neither(self, driver: SimulatedDriver) -> None:
        bfv = _instance(driver, "bfv-1")
        data = driver.check_can_live_migrate_destination(bfv, "compute-1", False)
        checked = driver.check_can_live_migrate_source(bfv, data)
        assert not checked.block_migration and not checked.shared_storage
        assert checked.driver_data["has_local_disk"] is False

    def test_shutdown_instance_fails_source_check_and_transfer(
        self, driver: SimulatedDriver
    ) -> None:
        batch = _instance(driver, "batch-1")
        data = driver.check_can_live_migrate_destination(batch, "compute-1", None)
        with pytest.raises(MigrationPreCheckError, match="shutdown"):
            driver.check_can_live_migrate_source(batch, data)
        with pytest.raises(TransferFailed):
            driver.start_transfer(batch, data, TransferPolicy())

    def test_unknown_instance(self, driver: SimulatedDriver) -> None:
        ghost = Instance(uuid="00000000-0000-4000-8000-0000000000ff", name="ghost", host="x")
        with pytest.raises(InstanceNotFound):
            driver.check_can_live_migrate_destination(ghost, "compute-3", None)


# ------------------------------------------------------------------------------ faults
class TestFaults:
    def test_demo_first_choice_always_fails_its_check(self, driver: SimulatedDriver) -> None:
        web = _instance(driver, "web-1")
        for _ in range(3):
            with pytest.raises(MigrationPreCheckError) as err:
                driver.check_can_live_migrate_destination(web, "compute-2", None)
            assert err.value.host == "compute-2"
            assert "Connection refused" in err.value.reason
        assert driver.faults()[0]["fired"] == 3

    def test_fault_fires_times_then_stops(self, driver: SimulatedDriver) -> None:
        web = _instance(driver, "web-1")
        driver.inject_fault("compute-3", "check_destination", times=2, message="nope")
        for _ in range(2):
            with pytest.raises(MigrationPreCheckError, match="nope"):
                driver.check_can_live_migrate_destination(web, "compute-3", None)
        driver.check_can_live_migrate_destination(web, "compute-3", None)
        fault = next(f for f in driver.faults() if f["host"] == "compute-3")
        assert (fault["times"], fault["fired"]) == (2, 2)

    def test_check_source_fault(self, driver: SimulatedDriver) -> None:
        web = _instance(driver, "web-1")
        driver.inject_fault("compute-1", "check_source", times=1)
        data = driver.check_can_live_migrate_destination(web, "compute-3", None)
        with pytest.raises(MigrationPreCheckError) as err:
            driver.check_can_live_migrate_source(web, data)
        assert (err.value.host, err.value.phase) == ("compute-1", "check_source")
        driver.check_can_live_migrate_source(web, data)

    def test_pre_live_migration_fault_leaves_partial_work_for_the_rollback(
        self, driver: SimulatedDriver
    ) -> None:
        app = _instance(driver, "app-1")
        data = driver.check_can_live_migrate_destination(app, "compute-1", None)
        data = driver.check_can_live_migrate_source(app, data)
        driver.inject_fault("compute-1", "pre_live_migration", times=1, message="disk full")
        with pytest.raises(DriverError) as err:
            driver.pre_live_migration(app, data)
        assert (err.value.host, err.value.operation, err.value.reason) == (
            "compute-1",
            "pre_live_migration",
            "disk full",
        )
        partial = [a["name"] for a in driver.artifacts("compute-1", APP_1)]
        assert "instance_dir" in partial and not any(n.startswith("vif:") for n in partial)
        driver.rollback_live_migration_at_destination(app, data)  # no pre_artifacts listed
        assert driver.artifacts("compute-1", APP_1) == []
        done = driver.pre_live_migration(app, data)
        assert done.driver_data["pre_artifacts"] == [
            "instance_dir",
            "vif:port-app-1",
            "volume:vol-app-1-scratch",
        ]

    def test_transfer_fault_fails_at_fraction_and_vm_stays_on_source(
        self, driver: SimulatedDriver
    ) -> None:
        driver.inject_fault("compute-3", "transfer", times=1, at=0.25, message="stream broken")
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.clock.advance(0.5)
        assert driver.transfer_progress(web, data).state == "running"
        driver.clock.advance(10)
        progress = driver.transfer_progress(web, data)
        assert progress.state == "failed"
        assert progress.error == "stream broken"
        assert progress.memory_processed_mb == pytest.approx(0.25 * 4096)
        assert progress.elapsed_s == pytest.approx(0.25 * 4096 / 1200)
        location = driver.locate(WEB_1)
        assert (location.host, location.power_state, location.transfer_in_flight) == (
            "compute-1",
            "running",
            False,
        )
        assert "guest" in [a["name"] for a in driver.artifacts("compute-3", WEB_1)]
        driver.abort_transfer(web, data)  # failed: nothing in flight
        driver.rollback_live_migration_at_destination(web, data)
        assert driver.artifacts("compute-3", WEB_1) == []
        # the fault fired once: a new attempt goes through
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        assert run_to_end(_env(driver, "web-1", "compute-3"), web, data).state == "completed"

    def test_never_converge_until_aborted(self, driver: SimulatedDriver) -> None:
        driver.inject_fault("compute-3", "never_converge", times=1)
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        for step in (50, 100, 200, 300, 500):  # the downtime steps ferry's monitor would take
            driver.set_max_downtime(web, data, step)
            driver.clock.advance(60)
            progress = driver.transfer_progress(web, data)
            assert progress.state == "running"
            assert progress.downtime_ms == step
            assert progress.dirty_rate_mbps >= 1200
        driver.abort_transfer(web, data)
        assert driver.locate(WEB_1).host == "compute-1"

    def test_post_faults_then_retry(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.clock.advance(3600)
        driver.inject_fault("compute-1", "post_at_source", times=1)
        driver.inject_fault("compute-3", "post_at_destination", times=1)
        with pytest.raises(DriverError, match="post_live_migration_at_source"):
            driver.post_live_migration_at_source(web, data)
        with pytest.raises(DriverError, match="post_live_migration_at_destination"):
            driver.post_live_migration_at_destination(web, data)
        driver.post_live_migration_at_source(web, data)
        driver.post_live_migration_at_destination(web, data)
        assert driver.artifacts("compute-1", WEB_1) == []
        states = {a["name"]: a["state"] for a in driver.artifacts("compute-3", WEB_1)}
        assert states == {
            "guest": "persistent",
            "vif:port-web-1": "plugged",
            "volume:vol-web-1-data": "connected",
        }
        assert driver.check_markers() == []

    def test_inject_fault_validation_and_clear(self, driver: SimulatedDriver) -> None:
        with pytest.raises(HostNotFound):
            driver.inject_fault("nowhere", "transfer")
        with pytest.raises(ValueError, match="phase"):
            driver.inject_fault("compute-1", "teleport")
        with pytest.raises(ValueError, match="at"):
            driver.inject_fault("compute-1", "check_source", at=0.5)
        driver.inject_fault("compute-3", "transfer", at=0.1)
        assert driver.clear_faults(host="compute-3") == 1
        assert driver.clear_faults() == 1  # the demo's compute-2 fault
        driver.check_can_live_migrate_destination(_instance(driver, "web-1"), "compute-2", None)


# ---------------------------------------------------------------------------- transfers
class TestTransfers:
    def test_paused_guest_dirties_nothing(self, driver: SimulatedDriver) -> None:
        cache, data = _migrate_data(driver, "cache-1", "compute-3")
        driver.start_transfer(cache, data, TransferPolicy())
        driver.clock.advance(100)
        progress = driver.transfer_progress(cache, data)
        assert progress.state == "completed"
        assert progress.iteration == 2 and progress.downtime_ms == 0
        assert progress.elapsed_s == pytest.approx(8192 / 1200)
        assert driver.locate(CACHE_1).power_state == "paused"

    def test_policy_bandwidth_caps_the_link(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy(bandwidth_mbps=100))
        driver.clock.advance(10)
        progress = driver.transfer_progress(web, data)
        assert progress.memory_processed_mb == pytest.approx(1000)

    def test_locate_materialises_the_switchover(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        location = driver.locate(WEB_1)
        assert location.transfer_in_flight and location.transfer_destination == "compute-3"
        driver.clock.advance(3.9)
        location = driver.locate(WEB_1)
        assert (location.host, location.transfer_in_flight) == ("compute-3", False)
        progress = driver.transfer_progress(web, data)
        assert progress.state == "completed"
        assert progress.elapsed_s == pytest.approx(3.9)
        assert progress.iteration == 4

    def test_list_instances_and_host_info_see_the_switchover(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        used = driver.host_info("compute-3").memory_mb_used
        driver.start_transfer(web, data, TransferPolicy())
        driver.clock.advance(60)
        assert _instance(driver, "web-1").host == "compute-3"
        assert driver.host_info("compute-3").memory_mb_used == used + 4096
        assert "web-1" in {i.name for i in driver.list_instances("compute-3")}

    def test_force_complete_post_copy_switches_over_at_once(self, driver: SimulatedDriver) -> None:
        driver.inject_fault("compute-3", "never_converge")
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy(permit_post_copy=True))
        driver.clock.advance(30)
        assert driver.force_complete(web, data) == "post-copy"
        progress = driver.transfer_progress(web, data)
        assert progress.state == "completed" and progress.downtime_ms == 0
        assert progress.elapsed_s == pytest.approx(30)
        assert driver.force_complete(web, data) == "post-copy"

    def test_force_complete_pause_sends_the_rest_paused(self, driver: SimulatedDriver) -> None:
        driver.inject_fault("compute-3", "never_converge")
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.clock.advance(30)
        assert driver.force_complete(web, data) == "pause"
        progress = driver.transfer_progress(web, data)
        assert progress.state == "running" and progress.dirty_rate_mbps == 0
        driver.clock.advance(10)
        progress = driver.transfer_progress(web, data)
        assert progress.state == "completed"
        assert progress.downtime_ms == round(4096 / 1200 * 1000)

    def test_one_transfer_per_instance(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.start_transfer(web, data, TransferPolicy(bandwidth_mbps=1))
        driver.clock.advance(1)
        assert driver.transfer_progress(web, data).memory_processed_mb == pytest.approx(1200)

    def test_previous_migration_does_not_leak_into_the_next(self, driver: SimulatedDriver) -> None:
        web, first = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, first, TransferPolicy())
        driver.abort_transfer(web, first)
        driver.rollback_live_migration_at_destination(web, first)
        web, second = _migrate_data(driver, "web-1", "compute-3")
        assert driver.transfer_progress(web, second).state == "none"
        assert driver.transfer_progress(web, first).state == "cancelled"

    def test_rollback_after_switchover_is_refused(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.clock.advance(60)
        with pytest.raises(DriverError, match="switchover happened"):
            driver.rollback_live_migration_at_destination(web, data)
        assert driver.locate(WEB_1).host == "compute-3"

    def test_rollback_cancels_a_transfer_in_flight(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.rollback_live_migration_at_destination(web, data)
        assert driver.transfer_progress(web, data).state == "cancelled"
        driver.clock.advance(60)
        assert driver.locate(WEB_1).host == "compute-1"
        assert driver.artifacts("compute-3", WEB_1) == []

    def test_start_refuses_when_destination_is_down(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.set_host_state("compute-3", up=False)
        with pytest.raises(TransferFailed, match="destination host is down"):
            driver.start_transfer(web, data, TransferPolicy())
        assert driver.host_info("compute-3").up is False
        driver.set_host_state("compute-3", up=True, enabled=False)
        assert driver.host_info("compute-3").enabled is False


# ------------------------------------------------------------------ persistence / processes
class TestPersistence:
    def test_state_survives_a_new_driver_on_the_same_file(self, tmp_path: Path) -> None:
        url = _url(tmp_path / "ferry.db")
        db1 = Database(url)
        first = SimulatedDriver(db1, speed=0)
        web, data = _migrate_data(first, "web-1", "compute-3")
        first.inject_fault("compute-2", "transfer", times=3)
        first.start_transfer(web, data, TransferPolicy())
        first.clock.advance(1)
        db1.close()  # "the process dies"

        db2 = Database(url)
        second = SimulatedDriver(db2, speed=0)
        assert second.ensure_seeded() is False
        location = second.locate(WEB_1)
        assert location.transfer_in_flight and location.host == "compute-1"
        assert second.transfer_progress(web, data).elapsed_s == pytest.approx(1)
        assert [f["times"] for f in second.faults() if f["phase"] == "transfer"] == [3]
        second.clock.advance(60)
        assert second.locate(WEB_1).host == "compute-3"
        assert {a["host"] for a in second.artifacts(instance_uuid=WEB_1)} == {
            "compute-1",
            "compute-3",
        }
        db2.close()

    def test_second_process_sees_the_same_cluster_and_time(self, tmp_path: Path) -> None:
        url = _url(tmp_path / "ferry.db")
        db_a, db_b = Database(url), Database(url)
        a = SimulatedDriver(db_a, speed=0)
        b = SimulatedDriver(db_b, speed=0)
        web, data = _migrate_data(a, "web-1", "compute-3")
        a.start_transfer(web, data, TransferPolicy())
        assert b.locate(WEB_1).transfer_in_flight
        assert b.clock.now() == a.clock.now()
        b.clock.sleep(2)
        assert a.transfer_progress(web, data).elapsed_s == pytest.approx(2)
        b.inject_fault("compute-3", "check_destination", times=1)
        with pytest.raises(MigrationPreCheckError):
            a.check_can_live_migrate_destination(_instance(a, "app-2"), "compute-3", None)
        b.clock.advance(10)
        assert a.find_instance("web-1").host == "compute-3"  # type: ignore[union-attr]
        db_a.close()
        db_b.close()

    def test_concurrent_seeding_has_one_winner(self, tmp_path: Path) -> None:
        url = _url(tmp_path / "ferry.db")
        Database(url).upgrade()
        databases = [Database(url) for _ in range(4)]
        drivers = [SimulatedDriver(d, speed=0) for d in databases]
        results: list[bool] = []
        barrier = threading.Barrier(len(drivers))

        def seed(d: SimulatedDriver) -> None:
            barrier.wait()
            results.append(d.ensure_seeded())

        threads = [threading.Thread(target=seed, args=(d,)) for d in drivers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, False, False, True]
        assert len(drivers[0].hosts()) == 5
        assert len(drivers[1].list_instances()) == 10
        for d in databases:
            d.close()

    def test_reset_reseeds_from_the_file(self, driver: SimulatedDriver) -> None:
        web, data = _migrate_data(driver, "web-1", "compute-3")
        driver.start_transfer(web, data, TransferPolicy())
        driver.inject_fault("compute-3", "transfer")
        driver.clock.advance(60)
        now = driver.clock.now()
        assert driver.locate(WEB_1).host == "compute-3"
        driver.reset()
        assert driver.locate(WEB_1).host == "compute-1"
        assert [(f["host"], f["fired"]) for f in driver.faults()] == [("compute-2", 0)]
        assert driver.check_markers() == [] and driver.artifacts("compute-3", WEB_1) == []
        assert driver.clock.now() == now  # the clock is not reset
        info = driver.cluster_info()
        assert info["name"] == "demo" and info["builtin"] is True

    def test_custom_cluster_file_is_recorded(self, tmp_path: Path, db: Database) -> None:
        cluster = tmp_path / "one.toml"
        cluster.write_text(
            '[[hosts]]\nname = "solo"\nhypervisor_type = "qemu"\nhypervisor_version = 1\n'
            "vcpus = 1\nmemory_mb = 1024\ndisk_gb = 10\nbandwidth_mbps = 10\n"
        )
        driver = SimulatedDriver(db, cluster_file=cluster, speed=0)
        assert driver.hosts() == ["solo"]
        assert driver.cluster_info()["file"] == str(cluster.resolve())
        # a driver without a file reuses the recorded one on reset
        SimulatedDriver(db, speed=0).reset()
        assert driver.hosts() == ["solo"]

    def test_bad_cluster_file_raises_config_error_on_first_use(
        self, tmp_path: Path, db: Database
    ) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text("[[hosts]\nname = 1\n")
        driver = SimulatedDriver(db, cluster_file=bad, speed=0)
        with pytest.raises(ConfigError, match=str(bad)):
            driver.hosts()

    def test_tables_match_the_alembic_revision(self, db: Database) -> None:
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        from ferry.persistence.models import METADATA

        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), METADATA)
        ours = [d for d in diffs if "ferry_sim_" in repr(d)]
        assert ours == []

    def test_revision_downgrades_and_upgrades_again(self, db: Database) -> None:
        from alembic import command

        from ferry.persistence.schema import alembic_config

        def sim_tables() -> list[str]:
            return [t for t in sa.inspect(db.engine).get_table_names() if "ferry_sim_" in t]

        assert len(sim_tables()) == 8
        command.downgrade(alembic_config(db), "0001_core")
        assert sim_tables() == []
        command.upgrade(alembic_config(db), "0002_simulated")
        assert len(sim_tables()) == 8

    def test_works_on_tables_made_by_create_all(self, tmp_path: Path) -> None:
        from ferry.persistence.models import METADATA

        db = Database(_url(tmp_path / "plain.db"))
        METADATA.create_all(db.engine)
        assert len(SimulatedDriver(db, speed=0).hosts()) == 5
        assert "ferry_alembic_version" not in sa.inspect(db.engine).get_table_names()
        db.close()


# -------------------------------------------------------------------------------- clock
class TestClock:
    def test_stepped_sleep_is_instant_and_shared(self, db: Database) -> None:
        clock = SimClock(db, speed=0)
        start = clock.now()
        wall = time.monotonic()
        clock.sleep(3600)
        assert time.monotonic() - wall < 1.0
        assert clock.now() == pytest.approx(start + 3600)
        assert clock.now() == clock.now()  # time stands still
        assert SimClock(db, speed=0).now() == pytest.approx(start + 3600)

    def test_running_clock_follows_wall_time_times_speed(self, db: Database) -> None:
        clock = SimClock(db, speed=1000)
        start = clock.now()
        clock.sleep(5)  # 5 ms of wall time
        assert clock.now() - start >= 5

    def test_changing_speed_keeps_time_continuous(self, db: Database) -> None:
        stepped = SimClock(db, speed=0)
        stepped.advance(100)
        before = stepped.now()
        fast = SimClock(db, speed=10)
        assert fast.now() >= before
        assert fast.now() - before < 60
        with pytest.raises(ValueError):
            fast.advance(-1)
        with pytest.raises(ConfigError):
            SimClock(db, speed=-1)

    def test_driver_clock_is_a_ferry_clock(self, driver: SimulatedDriver) -> None:
        from ferry.clock import Clock

        assert isinstance(driver.clock, Clock)
        assert driver.clock.stepped


def test_contract_helpers_accept_other_environments(driver: SimulatedDriver) -> None:
    """prepare()/run_to_end() work for any instance the env names (used by other suites)."""
    env = _env(driver, "bfv-1", "compute-1")
    env.block_migration = False
    instance, data = prepare(env)
    driver.start_transfer(instance, data, TransferPolicy())
    assert run_to_end(env, instance, data).state == "completed"
    assert driver.locate(BFV_1).host == "compute-1"


def test_a_failed_transfer_is_not_restarted_by_a_repeated_start(driver: SimulatedDriver) -> None:
    driver.inject_fault("compute-3", "transfer", times=1, at=0.1)
    web, data = _migrate_data(driver, "web-1", "compute-3")
    driver.start_transfer(web, data, TransferPolicy())
    driver.clock.advance(5)
    driver.start_transfer(web, data, TransferPolicy())  # e.g. replayed after a crash
    assert driver.transfer_progress(web, data).state == "failed"
    assert driver.locate(WEB_1).host == "compute-1"
