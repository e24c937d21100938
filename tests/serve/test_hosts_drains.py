"""Hosts and drains over the API: disable/enable a host (the scheduler skips a disabled one; a
drain's host cannot be enabled while the drain runs), drains planned, started (run by the
server's workers), listed, shown and aborted, through the HTTP API and ferry.client.Client."""

from __future__ import annotations

import threading

import pytest

from ferry import Orchestrator
from ferry.client import Client, ClientError
from ferry.context import Event
from ferry.drain.service import DrainOptions
from ferry.model.drain import DrainStatus
from tests.serve.conftest import Service
from tests.serve.helpers import call


class DrainEnded:
    """Set when a drain reports its end (the drain event without a guest)."""

    def __init__(self, orch: Orchestrator) -> None:
        self.ended: dict[str, str] = {}
        self._cond = threading.Condition()
        orch.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.kind == "drain" and "instance" not in (event.data or {}):
            with self._cond:
                self.ended[str(event.data["drain"])] = str(event.status)
                self._cond.notify_all()

    def wait(self, drain_id: str, timeout: float = 60) -> str:
        with self._cond:
            assert self._cond.wait_for(lambda: drain_id in self.ended, timeout), drain_id
            return self.ended[drain_id]


def _hosts(service: Service) -> dict[str, dict]:  # type: ignore[type-arg]
    reply = call(service.url, "GET", "/api/v1/hosts", token=service.reader)
    return {h["name"]: h for h in reply.json}


def test_a_disabled_host_is_not_chosen(service: Service, orch: Orchestrator) -> None:
    op = service.operator
    for name in ("compute-2", "compute-3"):
        reply = call(
            service.url, "POST", f"/api/v1/hosts/{name}/disable", token=op, body={"reason": "fw"}
        )
        assert reply.status == 200, reply.text
        assert (reply.json["enabled"], reply.json["disabled_reason"]) == (False, "fw")
    hosts = _hosts(service)
    assert not hosts["compute-2"]["enabled"] and hosts["compute-2"]["drain"] is None
    assert hosts["compute-1"]["enabled"]
    made = call(service.url, "POST", "/api/v1/migrations", token=op, body={"instance": "web-2"})
    assert made.status == 202
    done = service.finished.wait(made.json["id"])
    assert done.status == "completed" and done.destination not in ("compute-2", "compute-3")
    forced = call(
        service.url,
        "POST",
        "/api/v1/migrations",
        token=op,
        body={"instance": "web-1", "destination": "compute-3"},
    )
    failed = service.finished.wait(forced.json["id"])
    assert failed.status == "failed" and "host is disabled: fw" in str(failed.error)
    enabled = call(service.url, "POST", "/api/v1/hosts/compute-3/enable", token=op)
    assert enabled.status == 200 and enabled.json["enabled"] is True
    assert enabled.json["disabled_reason"] is None
    again = call(
        service.url,
        "POST",
        "/api/v1/migrations",
        token=op,
        body={"instance": "web-1", "destination": "compute-3"},
    )
    assert service.finished.wait(again.json["id"]).destination == "compute-3"


def test_host_writes_refused(service: Service, orch: Orchestrator) -> None:
    op, rd = service.operator, service.reader
    path = "/api/v1/hosts/compute-2/disable"
    assert call(service.url, "POST", path, token=rd, body={"reason": "x"}).status == 403
    missing = call(service.url, "POST", "/api/v1/hosts/nope/disable", token=op, body={})
    assert (missing.status, missing.json["error"]["code"]) == (404, "HostNotFound")
    assert call(service.url, "POST", path, token=op, body={"why": "x"}).status == 400
    # a running drain's host: neither enabled nor re-disabled by hand (like `ferry undrain`)
    drain_id = orch.drain_service.start(DrainOptions("compute-4", reason="bios"))
    for action in ("enable", "disable"):
        reply = call(service.url, "POST", f"/api/v1/hosts/compute-4/{action}", token=op, body={})
        assert (reply.status, reply.json["error"]["code"]) == (409, "HostDraining")
        assert drain_id in reply.json["error"]["message"]
    assert _hosts(service)["compute-4"]["drain"] == drain_id


def test_drain_over_the_api(service: Service, orch: Orchestrator) -> None:
    ended = DrainEnded(orch)
    op, rd = service.operator, service.reader
    body = {"host": "compute-4", "max_parallel": 2, "reason": "bios"}
    plan = call(service.url, "POST", "/api/v1/drains", token=op, body={**body, "dry_run": True})
    assert plan.status == 200 and plan.json["host"] == "compute-4"
    planned = {e["instance"]: e for e in plan.json["plan"]}
    assert planned["batch-1"]["skipped"] and planned["app-1"]["destination"]
    assert orch.drains() == [] and _hosts(service)["compute-4"]["enabled"]
    made = call(service.url, "POST", "/api/v1/drains", token=op, body=body)
    assert made.status == 202, made.text
    drain_id = made.json["id"]
    assert made.headers["location"] == f"/api/v1/drains/{drain_id}"
    assert ended.wait(drain_id) in ("completed", "partial")
    shown = call(service.url, "GET", made.headers["location"], token=rd).json
    moved = {g["instance"]: g for g in shown["guests"]}
    assert {moved[n]["state"] for n in ("app-1", "app-2", "bfv-1")} == {"completed"}
    assert moved["batch-1"]["state"] == "skipped"
    assert {i.host for i in orch.instances() if i.name in ("app-1", "app-2", "bfv-1")}.isdisjoint(
        {"compute-4"}
    )
    listed = call(service.url, "GET", "/api/v1/drains", token=rd).json["drains"]
    assert [d["id"] for d in listed] == [drain_id]
    host = _hosts(service)["compute-4"]
    assert (host["enabled"], host["drain"], host["disabled_reason"]) == (False, drain_id, "bios")
    again = call(service.url, "POST", "/api/v1/drains", token=op, body={"host": "nope"})
    assert (again.status, again.json["error"]["code"]) == (400, "HostNotFound")
    bad = call(service.url, "POST", "/api/v1/drains", token=op, body={"host": "x", "order": 1})
    assert bad.status == 400 and orch.drains()[0].id == drain_id
    gone = call(service.url, "GET", "/api/v1/drains/nope", token=rd)
    assert (gone.status, gone.json["error"]["code"]) == (404, "DrainNotFound")
    enabled = call(service.url, "POST", "/api/v1/hosts/compute-4/enable", token=op)
    assert enabled.status == 200 and enabled.json["enabled"] is True


def test_client_drains_and_hosts(service: Service, orch: Orchestrator) -> None:
    ended = DrainEnded(orch)
    client = Client(service.url, service.operator)
    assert client.disable_host("compute-5", "psu")["disabled_reason"] == "psu"
    assert client.enable_host("compute-5")["enabled"] is True
    plan = client.plan_drain("compute-1", order="name")
    assert [e["instance"] for e in plan] == ["api-1", "cache-1", "web-1"]
    # a drain recorded but not driven yet, aborted through the API: it ends cancelled
    waiting = orch.drain_service.start(DrainOptions("compute-1", reason="ram"))
    with pytest.raises(ClientError) as refused:
        client.enable_host("compute-1")
    assert (refused.value.status, refused.value.code) == (409, "HostDraining")
    aborted = client.abort_drain(waiting)
    assert aborted.status == DrainStatus.CANCELLED and aborted.done
    assert {g.state for g in aborted.guests} == {"skipped"}
    drain_id = client.drain("compute-1", max_parallel=1, reason="ram")
    assert ended.wait(drain_id) in ("completed", "partial")
    got = client.get_drain(drain_id)
    assert got.host == "compute-1" and got.reason == "ram" and got.done
    assert [d.id for d in client.drains()] == [drain_id, waiting]
    with pytest.raises(ClientError) as missing:
        client.get_drain("nope")
    assert missing.value.status == 404
