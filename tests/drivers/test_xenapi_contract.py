"""The driver contract against the XenAPI driver on the XAPI simulator, in four scenarios:
same pool (``pool_migrate``), across pools (``migrate_send``), a disk on a host-local SR within
the pool (storage motion) and a VM with a volume SR moving across pools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ferry.errors import DriverError
from tests.drivers.contract import DriverContract, DriverEnv, policy, prepare, run_to_end
from tests.drivers.xenapi_support import PASSWORD_ENV, leftovers_on, make_driver, start_simulator
from tests.xapisim import XapiSimulator

# scenario -> (VM, source, destination, host whose check fails: short of memory)
SCENARIOS = {
    "same-pool": ("web-1", "xs-a1", "xs-a2", "xs-b1"),
    "cross-pool": ("web-1", "xs-a1", "xs-b1", "xs-a2"),
    "local-disk-in-pool": ("db-1", "xs-a1", "xs-a2", "xs-b1"),
    "volume-cross-pool": ("vol-1", "xs-a2", "xs-b1", "xs-a1"),
}


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[XapiSimulator]:
    simulator = start_simulator()
    monkeypatch.setenv(PASSWORD_ENV, simulator.password)
    yield simulator
    simulator.stop()


class TestXenAPIContract(DriverContract):
    @pytest.fixture(params=sorted(SCENARIOS))
    def driver_env(self, request: pytest.FixtureRequest, sim: XapiSimulator) -> Iterator[DriverEnv]:
        vm, source, destination, bad = SCENARIOS[request.param]
        sim.inject("host_short_of_memory", host=bad)
        driver = make_driver(sim)
        instance = driver.find_instance(vm)
        assert instance is not None
        yield DriverEnv(
            driver=driver,
            instance=instance.uuid,
            source=source,
            destination=destination,
            bad_destination=bad,
            wait=driver.clock.sleep,
            artifacts=lambda host, _uuid: leftovers_on(sim, host),
        )
        driver.close()

    def test_downtime_steps_and_force_complete(self, driver_env: DriverEnv) -> None:
        """Replaces the contract's test: XAPI has no downtime knob (``set_max_downtime`` is a
        documented no-op) and cannot force a migration to complete (no post-copy, no pause),
        so ``force_complete`` raises a DriverError saying so; the transfer goes on."""
        driver = driver_env.driver
        instance, data = prepare(driver_env)
        driver.set_max_downtime(instance, data, 100)
        driver.start_transfer(instance, data, policy(driver_env))
        driver.set_max_downtime(instance, data, 200)
        with pytest.raises(DriverError, match="cannot force a live migration to complete"):
            driver.force_complete(instance, data)
        progress = run_to_end(driver_env, instance, data)
        assert progress.state == "completed", progress
        assert driver.locate(instance.uuid).host == driver_env.destination
        driver.post_live_migration_at_source(instance, data)
        driver.post_live_migration_at_destination(instance, data)
