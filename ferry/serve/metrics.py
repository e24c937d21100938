"""``/metrics``: ferry's migrations in the Prometheus text format (prometheus-client).

Every value is read from the database at scrape time (a custom collector), so counters count
every migration the database holds, whichever process ran it, and survive a restart of the
server. Names follow KubeVirt's migration metrics where they map:

- ``ferry_migrations_total{outcome, driver}``: finished migrations (outcome = the terminal status)
- ``ferry_migrations_in_flight{status, phase}``: migrations not finished, by status and phase
- ``ferry_migration_duration_seconds``: histogram, creation to the terminal status
- ``ferry_migration_downtime_seconds``: histogram, the downtime limit the completed transfers
  reached (``downtime_ms`` of their last progress report)
- ``ferry_reschedules_total{reason}``: destinations rejected and another tried, by the phase
  that rejected them (``check_destination``, ``pre_live_migration``, ``claim``...)
- ``ferry_migration_data_processed_bytes`` / ``_data_remaining_bytes`` /
  ``_memory_transfer_rate_bytes{migration, instance}``: per running migration

and the server process's own counters (:mod:`ferry.metrics`: jobs claimed and taken over, lease
renewals failed), defined once there and exposed by ``ferry conductor --metrics-port`` too.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ferry.model import Migration, MigrationStatus
from ferry.persistence.db import Database
from ferry.persistence.models import ATTEMPTS as AT

MB = 1024 * 1024
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DOWNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _histogram(name: str, doc: str, values: Sequence[float], buckets: Sequence[float]) -> Metric:
    counts = [0] * (len(buckets) + 1)
    for v in values:
        counts[bisect.bisect_left(buckets, v)] += 1
    cumulative, running = [], 0
    for bound, n in zip([*map(str, buckets), "+Inf"], counts, strict=True):
        running += n
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=sum(values))


def _ended_at(m: Migration) -> float:
    ends = [h.at for h in m.history if MigrationStatus(h.status).terminal]
    return ends[-1] if ends else m.updated_at


class MigrationCollector:
    """A prometheus-client collector over the migration records.

    ``records()`` returns every record; ``driver_of(host)`` names the driver of a host.
    """

    def __init__(
        self,
        records: Callable[[], list[Migration]],
        driver_of: Callable[[str | None], str],
        rejections: Callable[[], list[str | None]] = list,
    ) -> None:
        self.records = records
        self.driver_of = driver_of
        self.rejections = rejections

    def collect(self) -> Iterator[Metric]:
        records = self.records()
        totals: Counter[tuple[str, str]] = Counter()
        in_flight: Counter[tuple[str, str]] = Counter()
        durations: list[float] = []
        downtimes: list[float] = []
        processed = GaugeMetricFamily(
            "ferry_migration_data_processed_bytes",
            "Memory copied so far by a running migration.",
            labels=["migration", "instance"],
        )
        remaining = GaugeMetricFamily(
            "ferry_migration_data_remaining_bytes",
            "Memory left to copy by a running migration.",
            labels=["migration", "instance"],
        )
        rate = GaugeMetricFamily(
            "ferry_migration_memory_transfer_rate_bytes",
            "Dirty-page rate the running transfer reported (bytes per second).",
            labels=["migration", "instance"],
        )
        for m in records:
            if m.done:
                totals[(m.status, self.driver_of(m.source))] += 1
                durations.append(max(0.0, _ended_at(m) - m.created_at))
                if m.status == MigrationStatus.COMPLETED and "downtime_ms" in m.progress:
                    downtimes.append(float(m.progress["downtime_ms"]) / 1000.0)
                continue
            phase = str(m.progress.get("phase") or "none")
            in_flight[(m.status, phase)] += 1
            if m.progress.get("state") == "running":
                labels = [m.id, m.instance_name or m.instance]
                processed.add_metric(labels, _mb(m.progress, "memory_processed_mb"))
                remaining.add_metric(labels, _mb(m.progress, "memory_remaining_mb"))
                rate.add_metric(labels, _mb(m.progress, "dirty_rate_mbps"))
        total = CounterMetricFamily(
            "ferry_migrations",
            "Finished migrations by outcome and driver.",
            labels=["outcome", "driver"],
        )
        for (outcome, driver), n in sorted(totals.items()):
            total.add_metric([outcome, driver], n)
        flight = GaugeMetricFamily(
            "ferry_migrations_in_flight",
            "Migrations not finished, by status and phase.",
            labels=["status", "phase"],
        )
        for each in MigrationStatus:
            if not each.terminal and not any(s == each.value for s, _ in in_flight):
                flight.add_metric([each.value, "none"], 0)
        for (status, phase), n in sorted(in_flight.items()):
            flight.add_metric([status, phase], n)
        reschedules = CounterMetricFamily(
            "ferry_reschedules",
            "Destinations rejected (another was tried), by the phase that rejected them.",
            labels=["reason"],
        )
        for reason, n in sorted(Counter(map(reason_kind, self.rejections())).items()):
            reschedules.add_metric([reason], n)
        yield total
        yield flight
        yield reschedules
        yield _histogram(
            "ferry_migration_duration_seconds",
            "Seconds from creation to the terminal status.",
            durations,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "ferry_migration_downtime_seconds",
            "Downtime limit the completed transfers reached.",
            downtimes,
            DOWNTIME_BUCKETS,
        )
        yield processed
        yield remaining
        yield rate


_KIND = re.compile(r"^([A-Za-z][\w-]{0,40}):")


def reason_kind(reason: str | None) -> str:
    """A bounded label from a rejection reason: the phase it starts with, else "other"."""
    match = _KIND.match(reason or "")
    return match.group(1) if match else "other"


def rejection_reasons(db: Database) -> list[str | None]:
    """The reasons of every rejected destination in the database."""
    with db.connect() as conn:
        q = sa.select(AT.c.reason).where(AT.c.outcome == "rejected")
        return [r for (r,) in conn.execute(q)]


def _mb(progress: dict[str, Any], key: str) -> float:
    return float(progress.get(key) or 0.0) * MB


def exposition(*collectors: Any) -> bytes:
    """The text format of one scrape of ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
