"""A drain as one picture: ``ferry graph DRAIN_ID`` (DOT, SVG, JSON) and the web view's drain
page -- one node per guest coloured by its state, each linking to its migration's graph."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from ferry import Orchestrator
from ferry.cli import cli
from ferry.model.drain import Drain
from ferry.viz import RunStore, dot_available
from ferry.viz.dot import COLOURS
from ferry.viz.drain import STATE_COLOURS, drain_dot, drain_graph
from ferry.web import create_app
from tests.drain.helpers import drain_cluster


@pytest.fixture
def drained(tmp_path: Path) -> Iterator[tuple[Orchestrator, Drain, dict[str, str]]]:
    cfg = tmp_path / "ferry.toml"
    cluster = drain_cluster(tmp_path, guests=3)
    cfg.write_text(
        f'[simulated]\nspeed = 0\ncluster = "{cluster}"\n[migration]\npost_retry_delay = 0\n'
    )
    env = {"FERRY_DB": f"sqlite:///{tmp_path / 'g.db'}", "FERRY_CONFIG": str(cfg)}
    orch = Orchestrator(env["FERRY_DB"], config=cfg)
    sim = orch.drivers.drivers[0]
    # pin-1 fits dst-2 only, which refuses every guest: pin-1 fails, the others go to dst-1
    sim.inject_fault("dst-2", "check_destination", times=0, message="maintenance soon")  # type: ignore[attr-defined]
    d = orch.drain("src", max_parallel=2, order="name")
    yield orch, d, env
    orch.close()


def test_one_node_per_guest_coloured_by_state_linking_to_its_migration(
    drained: tuple[Orchestrator, Drain, dict[str, str]],
) -> None:
    _orch, d, _env = drained
    states = {g.instance: g.state for g in d.guests}
    assert {"completed", "failed", "skipped"} <= set(states.values())
    g = drain_graph(d)
    guests = {data["instance"]: data for _n, data in g.nodes(data=True) if data["kind"] == "guest"}
    assert {n: x["state"] for n, x in guests.items()} == states
    for guest in d.guests:
        node = guests[guest.instance]
        assert node["url"] == (f"/migrations/{guest.migration}" if guest.migration else None)
    dot = drain_dot(g)
    for guest in d.guests:
        fill = COLOURS[STATE_COLOURS[guest.state]][0]
        line = next(x for x in dot.splitlines() if f'"guest:{guest.instance_uuid}"' in x)
        assert f'fillcolor="{fill}"' in line and f'class="guest state-{guest.state}"' in line
        assert (f'URL="/migrations/{guest.migration}"' in line) == bool(guest.migration)


def test_ferry_graph_of_a_drain(
    drained: tuple[Orchestrator, Drain, dict[str, str]], tmp_path: Path
) -> None:
    _orch, d, env = drained
    run = CliRunner()
    out = run.invoke(cli, ["graph", d.id], env=env, catch_exceptions=False)
    assert out.exit_code == 0 and out.stdout.startswith(f'digraph "drain-{d.id}"')
    moved = next(g for g in d.guests if g.state == "completed")
    assert f'URL="{moved.migration}.svg"' in out.stdout
    out = run.invoke(cli, ["graph", d.id, "--format", "json"], env=env, catch_exceptions=False)
    data = json.loads(out.stdout)
    assert data["format"] == "ferry.drain-graph/1" and data["graph"]["drain"] == d.id
    kinds = [n["kind"] for n in data["nodes"]]
    assert kinds.count("guest") == len(d.guests)
    if not dot_available():
        pytest.skip("Graphviz's dot is not installed: no SVG")
    target = tmp_path / "out" / "drain.svg"
    target.parent.mkdir()
    out = run.invoke(cli, ["graph", d.id, "-o", str(target)], env=env, catch_exceptions=False)
    assert out.exit_code == 0, out.stderr
    svg = target.read_text()
    assert f'href="{moved.migration}.svg"' in svg
    for guest in d.guests:  # the graphs it links to are written next to it
        if guest.migration:
            linked = html.unescape(target.with_name(f"{guest.migration}.svg").read_text())
            assert 'id="atom-transfer"' in linked


def test_web_drain_page_and_list(drained: tuple[Orchestrator, Drain, dict[str, str]]) -> None:
    orch, d, _env = drained
    app = create_app(RunStore.of(orch))
    app.testing = True
    client: FlaskClient
    with app.test_client() as client:
        index = client.get("/").get_data(as_text=True)
        assert f'<a href="/drains/{d.id}">{d.id}</a>' in index
        page = html.unescape(client.get(f"/drains/{d.id}").get_data(as_text=True))
        assert 'data-page="drain"' in page and 'data-done="yes"' in page
        for guest in d.guests:
            if guest.migration:
                assert f'href="/migrations/{guest.migration}"' in page
        if dot_available():
            assert "<svg" in page and 'guest state-failed"' in page
        rows = client.get("/api/drains").get_json()
        assert rows[0]["id"] == d.id and rows[0]["status"] == d.status
        assert client.get(f"/api/drains/{d.id}").get_json()["guests"]
        dot = client.get(f"/drains/{d.id}/graph.dot").get_data(as_text=True)
        assert dot.startswith("digraph")
        graph = client.get(f"/drains/{d.id}/graph.json").get_json()
        assert graph["format"] == "ferry.drain-graph/1"
        assert client.get("/drains/nope").status_code == 404
        assert client.get(f"/drains/{d.id}/graph.exe").status_code == 404


def test_web_drain_page_without_graphviz(
    drained: tuple[Orchestrator, Drain, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    orch, d, _env = drained
    monkeypatch.setattr("ferry.web.fragments.dot_available", lambda: False)
    app = create_app(RunStore.of(orch))
    with app.test_client() as client:
        page = client.get(f"/drains/{d.id}").get_data(as_text=True)
    assert "<svg" not in page
    failed = next(g for g in d.guests if g.state == "failed")
    assert f'<li id="guest:{failed.instance_uuid}" class="guest state-failed">' in page
    assert f'<a href="/migrations/{failed.migration}">' in page
