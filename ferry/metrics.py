"""Process counters in the Prometheus format: what a conductor (``ferry conductor
--metrics-port``) and the server (``/metrics``) count in memory, as opposed to the migration
metrics read from the database (:mod:`ferry.serve.metrics`). One definition of each:

- ``ferry_conductor_jobs_claimed_total``: jobs this process claimed from the board and dispatched
- ``ferry_conductor_jobs_taken_over_total``: of those, jobs another conductor had dispatched
  before (it died, stalled or handed the job back)
- ``ferry_lease_renewals_failed_total``: lease renewals that failed (a database error, or the
  lease row or the board claim found to be another's)

Plain counters with no import of prometheus-client until they are exposed (it is the ``serve``
extra); the runner and the conductor count, :func:`start_metrics_server` and
:class:`ProcessCollector` expose.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ferry.errors import ConfigError

METRICS_EXTRA_HINT = "metrics need the 'serve' extra: pip install 'ferry[serve]'"


@dataclass(frozen=True)
class CounterDef:
    name: str  # without the ``_total`` suffix prometheus-client adds
    doc: str


JOBS_CLAIMED = CounterDef(
    "ferry_conductor_jobs_claimed", "Jobs this conductor claimed from the board and dispatched."
)
JOBS_TAKEN_OVER = CounterDef(
    "ferry_conductor_jobs_taken_over",
    "Claimed jobs another conductor had dispatched before (it died, stalled or gave it back).",
)
LEASE_RENEWALS_FAILED = CounterDef(
    "ferry_lease_renewals_failed",
    "Lease renewals that failed: a database error, or the lease or claim found another's.",
)
DEFINITIONS = (JOBS_CLAIMED, JOBS_TAKEN_OVER, LEASE_RENEWALS_FAILED)


class ProcessCounters:
    """Thread-safe counters of this process (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(DEFINITIONS, 0)

    def inc(self, counter: CounterDef, amount: int = 1) -> None:
        with self._lock:
            self._values[counter] += amount

    def value(self, counter: CounterDef) -> int:
        with self._lock:
            return self._values[counter]


#: this process's counters
COUNTERS = ProcessCounters()


class ProcessCollector:
    """A prometheus-client collector of :data:`COUNTERS` (or another :class:`ProcessCounters`)."""

    def __init__(self, counters: ProcessCounters = COUNTERS) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        for each in DEFINITIONS:
            yield CounterMetricFamily(each.name, each.doc, value=self.counters.value(each))


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve this process's counters at ``http://addr:port/metrics`` (port 0: a free one; the
    returned server's ``server_port`` names it) in a daemon thread; ``shutdown()`` stops it.
    Raises ConfigError without the ``serve`` extra or when the port cannot be bound."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ConfigError(f"{METRICS_EXTRA_HINT} ({exc})") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessCollector())
    try:
        server, _thread = start_http_server(port, addr, registry)
    except OSError as exc:
        raise ConfigError(f"metrics on {addr}:{port}: {exc.strerror or exc}") from None
    return server
