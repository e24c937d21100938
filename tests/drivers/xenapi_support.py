"""Helpers of the XenAPI driver tests: the driver wired to the XAPI simulator (tests/xapisim).

The simulator runs in the test process; its stepped :class:`~tests.xapisim.SimClock` is ferry's
clock too (:class:`SimTime`), so every poll of the transfer monitor advances the simulated time
and nothing sleeps.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ferry.config import HostConfig
from ferry.drivers.xenapi import XenAPIDriver
from tests.xapisim import XapiSimulator
from tests.xapisim.clock import SimClock

PASSWORD_ENV = "FERRY_XENAPI_PASSWORD"
#: which simulated pool each host of the default scenario belongs to
POOL_OF = {"xs-a1": "pool-a", "xs-a2": "pool-a", "xs-b1": "pool-b"}


class SimTime:
    """ferry's :class:`~ferry.clock.Clock` on the simulator's stepped clock: ``sleep`` advances
    the simulated time at once (the simulator then moves its tasks forward)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def now(self) -> float:
        return float(self.clock.now())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.clock.advance(seconds)


def host_configs(sim: XapiSimulator, password_env: str = PASSWORD_ENV) -> list[HostConfig]:
    """The ``[[hosts]]`` entries of every simulated host, as ferry's config parser makes them."""
    out = []
    for entry in sim.host_configs(password_env):
        options = {k: v for k, v in entry.items() if k not in ("name", "driver")}
        out.append(HostConfig(name=entry["name"], driver=entry["driver"], options=options))
    return out


def make_driver(sim: XapiSimulator, password_env: str = PASSWORD_ENV) -> XenAPIDriver:
    """A driver for every simulated host on the simulator's clock (the password must be in
    ``password_env``)."""
    return XenAPIDriver.from_host_configs(host_configs(sim, password_env), clock=SimTime(sim.clock))


def start_simulator(scenario: dict[str, Any] | None = None) -> XapiSimulator:
    """A started simulator on stepped time."""
    return XapiSimulator(scenario=scenario, clock=SimClock()).start()


def leftovers_on(sim: XapiSimulator, host: str) -> list[str]:
    """What ferry created through XAPI on ``host``'s pool and is still there."""
    return sim.leftovers(POOL_OF[host], host)


def database_bytes(db_url: str) -> bytes:
    """Every byte ferry wrote to the SQLite database (main file, WAL and journal included)."""
    path = Path(db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))
