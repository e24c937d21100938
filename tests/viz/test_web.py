"""``ferry web`` through Flask's test client: pages, JSON, graph files, read-only, loopback."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from ferry import Orchestrator
from ferry.drivers.simulated import SimulatedDriver
from ferry.viz import RunStore, dot_available
from ferry.web import HOST, WebServer, create_app
from ferry.web.app import host_allowed
from tests.viz.helpers import run_to_end


@pytest.fixture
def client(orch: Orchestrator) -> Iterator[FlaskClient]:
    app = create_app(RunStore.of(orch))
    app.testing = True
    with app.test_client() as c:
        yield c


def test_list_page_and_json(orch: Orchestrator, client: FlaskClient) -> None:
    m = run_to_end(orch, "web-1")
    page = client.get("/").get_data(as_text=True)
    assert f'id="m-{m.id}"' in page and 'data-status="completed"' in page
    assert "web-1" in page and "compute-3" in page and "100%" in page
    rows = client.get("/api/migrations").get_json()
    assert rows[0]["id"] == m.id and rows[0]["status"] == "completed"
    assert rows[0]["source"] == "compute-1" and rows[0]["percent"] == 100.0


def test_migration_page_shows_graph_progress_and_hosts(
    orch: Orchestrator, client: FlaskClient
) -> None:
    m = run_to_end(orch, "web-1")
    page = html.unescape(client.get(f"/migrations/{m.id}").get_data(as_text=True))
    assert 'id="graph"' in page and 'id="atom-transfer"' in page
    assert 'id="percent">100.0%' in page
    assert "compute-2" in page and "rejected" in page  # hosts tried
    assert 'id="timeline"' in page and "switchover" in page
    live = client.get(f"/api/migrations/{m.id}/live").get_json()
    assert live["status"] == "completed" and live["done"] is True
    assert {a["name"]: a["state"] for a in live["atoms"]}["transfer"] == "SUCCESS"
    export = client.get(f"/api/migrations/{m.id}").get_json()
    assert export["format"] == "ferry.run/1"


def test_fallback_list_without_graphviz(
    orch: Orchestrator, sim: SimulatedDriver, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ferry.web.fragments.dot_available", lambda: False)
    sim.inject_fault("compute-3", "pre_live_migration", message="<b>no room</b>")
    m = run_to_end(orch, "web-1")
    page = client.get(f"/migrations/{m.id}").get_data(as_text=True)
    assert "<svg" not in page
    assert '<li id="atom-transfer" class="atom kind-task state-pending">' in page
    assert 'id="atom-pre-live-migration" class="atom kind-task state-reverted failed"' in page
    assert '<li class="switchover">' in page
    assert "&lt;b&gt;no room&lt;/b&gt;" in page and "<b>no room</b>" not in page  # escaped


def test_graph_files(orch: Orchestrator, client: FlaskClient) -> None:
    m = run_to_end(orch, "web-1")
    dot = client.get(f"/migrations/{m.id}/graph.dot")
    assert dot.status_code == 200 and dot.get_data(as_text=True).startswith("digraph")
    data = json.loads(client.get(f"/migrations/{m.id}/graph.json").get_data(as_text=True))
    assert data["format"] == "ferry.graph/1"
    svg = client.get(f"/migrations/{m.id}/graph.svg")
    assert svg.status_code == (200 if dot_available() else 404)
    assert client.get(f"/migrations/{m.id}/graph.exe").status_code == 404


def test_read_only_and_not_found(orch: Orchestrator, client: FlaskClient) -> None:
    m = run_to_end(orch, "web-1")
    assert client.get("/migrations/nope").status_code == 404
    assert client.get("/api/migrations/nope/live").status_code == 404
    for path in ("/", "/api/migrations", f"/migrations/{m.id}", f"/api/migrations/{m.id}"):
        assert client.post(path).status_code == 405
        assert client.delete(path).status_code == 405
    resp = client.get("/")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


def test_server_binds_loopback_only(orch: Orchestrator) -> None:
    server = WebServer(RunStore.of(orch), 0)
    try:
        assert HOST == "127.0.0.1"
        assert server._server.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8080", "localhost", "LocalHost:1", "[::1]", "[::1]:65535"],
)
def test_loopback_host_names_are_answered(client: FlaskClient, host: str) -> None:
    assert host_allowed(host)
    assert client.get("/api/migrations", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
        "localhost.evil.example:8080",
        "10.0.0.7:8080",
        "::1",
        "[::1]x",
        "localhost:",
        "localhost:80x",
        "localhost:\u0668\u0660",  # non-ASCII digits
        "",
    ],
)
def test_other_host_names_are_refused(orch: Orchestrator, client: FlaskClient, host: str) -> None:
    m = run_to_end(orch, "web-1")
    assert not host_allowed(host)
    for path in ("/", "/api/migrations", f"/migrations/{m.id}", f"/api/migrations/{m.id}"):
        resp = client.get(path, headers={"Host": host})
        text = resp.get_data(as_text=True)
        assert resp.status_code == 400 and resp.mimetype == "text/plain"
        assert text == "ferry web: wrong Host header; open the page at 127.0.0.1\n"
        assert m.id not in text and "web-1" not in text
