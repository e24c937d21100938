"""The embedded default driver: a simulated cluster persisted in ferry's database.

* :class:`SimulatedDriver` -- the driver (hosts, instances, checks, pre-copy transfers, faults);
* :class:`SimClock` -- its persisted simulated time (``speed = 0`` for stepped test time);
* :func:`load_cluster` / :data:`DEMO_CLUSTER` -- the TOML cluster description.
"""

from collections.abc import Sequence

from ferry.config import HostConfig, Settings
from ferry.drivers.simulated.clock import SimClock
from ferry.drivers.simulated.cluster import DEMO_CLUSTER, PHASES, ClusterSpec, load_cluster
from ferry.drivers.simulated.driver import SimulatedDriver
from ferry.persistence.db import Database


def build_driver(
    configs: Sequence[HostConfig], settings: Settings, db: Database
) -> SimulatedDriver:
    """The ``simulated`` entry point (:class:`~ferry.drivers.registry.DriverFactory`): the
    ``[simulated]`` cluster in ``db`` (its hosts come from the cluster file, not ``configs``)."""
    return SimulatedDriver(
        db, cluster_file=settings.simulated.cluster, speed=settings.simulated.speed
    )


__all__ = [
    "DEMO_CLUSTER",
    "PHASES",
    "ClusterSpec",
    "SimClock",
    "SimulatedDriver",
    "build_driver",
    "load_cluster",
]
