"""``/metrics`` scraped with prometheus-client's parser before and after real runs."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ferry import Orchestrator
from tests.serve.conftest import Service
from tests.serve.helpers import call


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = call(service.url, "GET", "/metrics", token=service.reader)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def test_metrics_move_with_runs(service: Service, orch: Orchestrator) -> None:
    before = scrape(service)
    completed = ("ferry_migrations_total", (("driver", "simulated"), ("outcome", "completed")))
    assert completed not in before
    assert not any(name == "ferry_reschedules_total" for name, _ in before)
    assert before[("ferry_migration_duration_seconds_count", ())] == 0
    assert before[("ferry_migrations_in_flight", (("phase", "none"), ("status", "accepted")))] == 0
    waiting = orch.create("api-1")  # accepted, not run
    mid = call(
        service.url,
        "POST",
        "/api/v1/migrations",
        token=service.operator,
        body={"instance": "web-1"},
    ).json["id"]
    service.finished.wait(mid)
    after = scrape(service)
    assert after[completed] == 1
    # the demo cluster's compute-2 fails its destination check: one reschedule
    assert after[("ferry_reschedules_total", (("reason", "check_destination"),))] == 1
    assert after[("ferry_migration_duration_seconds_count", ())] == 1
    assert after[("ferry_migration_downtime_seconds_count", ())] == 1
    assert after[("ferry_migration_downtime_seconds_sum", ())] > 0
    in_flight = [
        v
        for (name, labels), v in after.items()
        if name == "ferry_migrations_in_flight" and ("status", "accepted") in labels
    ]
    assert sum(in_flight) == 1
    orch.abort(waiting)
    final = scrape(service)
    assert (
        final[("ferry_migrations_total", (("driver", "simulated"), ("outcome", "cancelled")))] == 1
    )


def test_running_migration_reports_bytes(orch: Orchestrator) -> None:
    from ferry.serve.metrics import MigrationCollector, exposition

    m = orch.get(orch.create("web-1"))
    m.status = "running"
    m.progress = {
        "phase": "transfer",
        "state": "running",
        "memory_processed_mb": 2.0,
        "memory_remaining_mb": 1.0,
        "dirty_rate_mbps": 0.5,
    }
    text = exposition(MigrationCollector(lambda: [m], lambda _h: "simulated")).decode()
    values = {
        (s.name, s.labels.get("migration")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert values[("ferry_migration_data_processed_bytes", m.id)] == 2 * 1024 * 1024
    assert values[("ferry_migration_data_remaining_bytes", m.id)] == 1024 * 1024
    assert values[("ferry_migration_memory_transfer_rate_bytes", m.id)] == 512 * 1024
    assert values[("ferry_migrations_in_flight", None)] == 1


def test_reason_kinds_are_bounded() -> None:
    from ferry.serve.metrics import reason_kind

    assert reason_kind("check_destination: unable to connect: refused") == "check_destination"
    assert reason_kind("anti-affinity: db-1 runs here") == "anti-affinity"
    assert reason_kind("host is down") == "other" and reason_kind(None) == "other"


def test_the_process_counters_are_exposed(service: Service) -> None:
    from ferry.metrics import COUNTERS, DEFINITIONS, LEASE_RENEWALS_FAILED

    before = scrape(service)
    assert {f"{d.name}_total" for d in DEFINITIONS} <= {name for name, _ in before}
    COUNTERS.inc(LEASE_RENEWALS_FAILED)
    key = ("ferry_lease_renewals_failed_total", ())
    assert scrape(service)[key] == before[key] + 1


def test_the_conductor_side_needs_no_flask() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ferry.jobs.conductor, ferry.metrics, ferry.cli.jobstore; "
        "assert 'flask' not in sys.modules and 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
