"""``/api/v1`` of a real ``ferry serve``: accept, list, show, abort, force-complete, graph,
timeline, hosts; bad input is refused with a JSON error and changes nothing."""

from __future__ import annotations

from ferry import Orchestrator
from ferry.model import MigrationStatus
from tests.serve.conftest import Service
from tests.serve.helpers import call


def post(service: Service, body: object) -> str:
    reply = call(service.url, "POST", "/api/v1/migrations", token=service.operator, body=body)
    assert reply.status == 202, reply.text
    return str(reply.json["id"])


def test_post_is_persisted_202_and_runs(service: Service, orch: Orchestrator) -> None:
    reply = call(
        service.url,
        "POST",
        "/api/v1/migrations",
        token=service.operator,
        body={"instance": "web-1", "destination": "compute-3"},
    )
    assert reply.status == 202
    mid = reply.json["id"]
    assert reply.headers["location"] == f"/api/v1/migrations/{mid}"
    assert orch.migrations.exists(mid)  # persisted before the reply
    assert service.finished.wait(mid).status == MigrationStatus.COMPLETED
    one = call(service.url, "GET", reply.headers["location"], token=service.reader)
    assert one.status == 200
    body = one.json
    assert body["status"] == "completed" and body["destination"] == "compute-3"
    assert body["instance"] == "web-1" and [h["status"] for h in body["history"]][-1] == "completed"
    assert {p["name"] for p in body["phases"]} >= {"transfer"}


def test_list_filters_and_pages(service: Service) -> None:
    ids = [post(service, {"instance": vm}) for vm in ("web-1", "web-2", "api-1")]
    for mid in ids:
        service.finished.wait(mid)
    page = call(service.url, "GET", "/api/v1/migrations?limit=2", token=service.reader).json
    assert [m["id"] for m in page["migrations"]] == ids[::-1][:2]
    rest = call(service.url, "GET", page["next"], token=service.reader).json
    assert [m["id"] for m in rest["migrations"]] == [ids[0]] and rest["next"] is None
    by_vm = call(service.url, "GET", "/api/v1/migrations?instance=web-2", token=service.reader)
    assert [m["id"] for m in by_vm.json["migrations"]] == [ids[1]]
    by_host = call(service.url, "GET", "/api/v1/migrations?host=compute-2", token=service.reader)
    assert ids[1] in [m["id"] for m in by_host.json["migrations"]]
    done = call(service.url, "GET", "/api/v1/migrations?status=completed", token=service.reader)
    assert len(done.json["migrations"]) == 3
    bad = call(service.url, "GET", "/api/v1/migrations?status=nope", token=service.reader)
    assert bad.status == 400 and "unknown status" in bad.json["error"]["message"]
    assert (
        call(service.url, "GET", "/api/v1/migrations?limit=0", token=service.reader).status == 400
    )


def test_abort_force_complete_and_conflicts(service: Service, orch: Orchestrator) -> None:
    waiting = orch.create("web-1")  # accepted, nobody runs it yet
    aborted = call(
        service.url, "POST", f"/api/v1/migrations/{waiting}/abort", token=service.operator
    )
    assert aborted.status == 200 and aborted.json["status"] == "cancelled"
    fc = call(
        service.url, "POST", f"/api/v1/migrations/{waiting}/force-complete", token=service.operator
    )
    assert fc.status == 409 and fc.json["error"]["code"] == "InvalidMigrationState"
    mid = post(service, {"instance": "web-2"})
    service.finished.wait(mid)
    late = call(service.url, "POST", f"/api/v1/migrations/{mid}/abort", token=service.operator)
    assert late.status == 409 and late.json["error"]["code"] == "AbortTooLate"
    twice = post(service, {"instance": "api-1"})
    again = call(
        service.url,
        "POST",
        "/api/v1/migrations",
        token=service.operator,
        body={"instance": "api-1"},
    )
    assert again.status in (202, 409)  # 409 while the first holds the instance lock
    service.finished.wait(twice)


def test_graph_timeline_hosts(service: Service) -> None:
    mid = post(service, {"instance": "web-1"})
    service.finished.wait(mid)
    dot = call(
        service.url, "GET", f"/api/v1/migrations/{mid}/graph?format=dot", token=service.reader
    )
    assert dot.status == 200 and dot.text.startswith("digraph")
    graph = call(service.url, "GET", f"/api/v1/migrations/{mid}/graph", token=service.reader)
    assert graph.json["format"] == "ferry.graph/1"
    assert (
        call(
            service.url, "GET", f"/api/v1/migrations/{mid}/graph?format=exe", token=service.reader
        ).status
        == 400
    )
    rows = call(service.url, "GET", f"/api/v1/migrations/{mid}/timeline", token=service.reader)
    assert {r["name"]: r["state"] for r in rows.json}["transfer"] == "SUCCESS"
    hosts = call(service.url, "GET", "/api/v1/hosts", token=service.reader).json
    assert "compute-1" in {h["name"] for h in hosts}


def test_the_web_pages_are_served_too(service: Service) -> None:
    mid = post(service, {"instance": "web-1"})
    service.finished.wait(mid)
    page = call(service.url, "GET", f"/migrations/{mid}")  # loopback: pages need no token
    assert page.status == 200 and 'id="graph"' in page.text


def test_bad_input_changes_nothing(service: Service, orch: Orchestrator) -> None:
    url, op = service.url, service.operator
    cases = [
        (b"{not json", "application/json", 400, "MalformedJSON"),
        (b'{"instance": "web-1", "colour": "red"}', "application/json", 400, "InvalidRequest"),
        (b'{"instance": 7}', "application/json", 400, "InvalidRequest"),
        (b'{"instance": "web-1", "max_attempts": "3"}', "application/json", 400, "InvalidRequest"),
        (b'["web-1"]', "application/json", 400, "InvalidRequest"),
        (b"instance=web-1", "application/x-www-form-urlencoded", 415, "UnsupportedMediaType"),
        (
            b'{"instance": "' + b"x" * 70_000 + b'"}',
            "application/json",
            413,
            "RequestEntityTooLarge",
        ),
        (b'{"instance": "no-such-vm"}', "application/json", 400, "InstanceNotFound"),
    ]
    for raw, ctype, status, code in cases:
        reply = call(
            url, "POST", "/api/v1/migrations", token=op, raw=raw, headers={"Content-Type": ctype}
        )
        assert (reply.status, reply.json["error"]["code"]) == (status, code), raw[:40]
        assert "Traceback" not in reply.text
    assert orch.list() == []
    missing = call(url, "GET", "/api/v1/migrations/nope", token=service.reader)
    assert missing.status == 404 and missing.json["error"]["code"] == "MigrationNotFound"
    for path in ("/api/v1/migrations/nope/abort", "/api/v1/migrations/nope/force-complete"):
        assert call(url, "POST", path, token=op).status == 404
    assert call(url, "GET", "/api/v1/nothing-here", token=service.reader).json["error"]
    wrong_method = call(url, "DELETE", "/api/v1/migrations", token=op)
    assert wrong_method.status == 405 and wrong_method.json["error"]["code"] == "MethodNotAllowed"
