"""``/api/v1/events``: status events numbered from the status history, progress and phase
events, a filter by migration, and a reconnect with Last-Event-ID that misses nothing."""

from __future__ import annotations

from typing import Any

from ferry import Orchestrator
from ferry.serve.events import EventFeed
from tests.serve.conftest import Service
from tests.serve.helpers import call, read_events

TERMINAL = {"completed", "failed", "cancelled", "error"}


def ends(mid: str) -> Any:
    return lambda e: (
        e["event"] == "status"
        and e["data"]["migration"] == mid
        and (e["data"]["status"] in TERMINAL)
    )


def post(service: Service, vm: str) -> str:
    reply = call(
        service.url, "POST", "/api/v1/migrations", token=service.operator, body={"instance": vm}
    )
    assert reply.status == 202
    return str(reply.json["id"])


def test_follow_one_migration_live(service: Service) -> None:
    other = post(service, "web-2")
    mid = post(service, "web-1")
    events = read_events(service.url, service.reader, f"?migration={mid}", until=ends(mid))
    assert {e["data"]["migration"] for e in events} == {mid}  # the filter holds
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[0] == "accepted" and statuses[-1] == "completed"
    assert "running" in statuses
    ids = [int(e["id"]) for e in events if e["event"] == "status"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["id"] is None for e in events if e["event"] != "status")
    service.finished.wait(other)


def test_reconnect_with_last_event_id_misses_no_status(service: Service) -> None:
    mid = post(service, "web-1")
    service.finished.wait(mid)
    every = read_events(service.url, service.reader, until=ends(mid))
    status = [e for e in every if e["event"] == "status"]
    assert len(status) >= 4
    cut = status[1]["id"]
    rest = read_events(service.url, service.reader, last_id=cut, until=ends(mid))
    rest_status = [e for e in rest if e["event"] == "status"]
    assert [e["id"] for e in rest_status] == [e["id"] for e in status[2:]]
    assert [e["data"] for e in rest_status] == [e["data"] for e in status[2:]]
    # what happened after the first stream ended arrives on the next one
    later = post(service, "web-2")
    more = read_events(service.url, service.reader, last_id=status[-1]["id"], until=ends(later))
    assert next(e["data"]["status"] for e in more if e["event"] == "status") == "accepted"
    assert all(e["data"]["migration"] == later for e in more if e["event"] == "status")


def test_progress_and_phase_events(service: Service, orch: Orchestrator) -> None:
    mid = orch.create("web-1")
    feed = EventFeed(orch.db, migration=mid)
    assert [e.split("\n")[1] for e in feed.status_events()] == ["event: status"]
    assert feed.progress_events() == []  # no progress yet
    orch.migrations.report_progress(mid, {"phase": "transfer", "percent": 10.0})
    first = feed.progress_events()
    assert [e.split("\n")[0] for e in first] == ["event: phase", "event: progress"]
    assert '"percent": 10.0' in first[1]
    assert feed.progress_events() == []  # unchanged: nothing sent
    orch.migrations.report_progress(mid, {"phase": "transfer", "percent": 55.0})
    assert [e.split("\n")[0] for e in feed.progress_events()] == ["event: progress"]
    bad = call(
        service.url, "GET", "/api/v1/events", token=service.reader, headers={"Last-Event-ID": "x"}
    )
    assert bad.status == 400
