"""The embedded default driver: a simulated cluster persisted in ferry's database.

* :class:`SimulatedDriver` -- the driver (hosts, instances, checks, pre-copy transfers, faults);
* :class:`SimClock` -- its persisted simulated time (``speed = 0`` for stepped test time);
* :func:`load_cluster` / :data:`DEMO_CLUSTER` -- the TOML cluster description.
"""

from ferry.drivers.simulated.clock import SimClock
from ferry.drivers.simulated.cluster import DEMO_CLUSTER, PHASES, ClusterSpec, load_cluster
from ferry.drivers.simulated.driver import SimulatedDriver

__all__ = ["DEMO_CLUSTER", "PHASES", "ClusterSpec", "SimClock", "SimulatedDriver", "load_cluster"]
