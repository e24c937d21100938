"""Abort and force-complete over HTTP while the transfers really run (real-time simulated
cluster: a demo migration takes ~4 s)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.config import MigrationSettings, Settings, SimulatedSettings
from ferry.context import Event
from ferry.serve import ServiceServer, TokenStore
from tests.serve.helpers import Finished, call


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Orchestrator, ServiceServer, str]]:
    settings = Settings(
        simulated=SimulatedSettings(speed=1.0), migration=MigrationSettings(post_retry_delay=0.0)
    )
    with Orchestrator(f"sqlite:///{tmp_path / 'live.db'}", settings=settings) as orch:
        _, token = TokenStore(orch.db).create("ops", "operator")
        with ServiceServer(orch, "127.0.0.1:0", poll_seconds=0.05) as server:
            yield orch, server, token


def test_abort_and_force_complete_while_transferring(
    live: tuple[Orchestrator, ServiceServer, str],
) -> None:
    orch, server, token = live
    finished = Finished(orch)
    transferring: dict[str, threading.Event] = {}

    def on_event(event: Event) -> None:
        if event.kind == "progress" and event.migration_id in transferring:
            transferring[str(event.migration_id)].set()

    orch.subscribe(on_event)
    ids = {}
    for vm in ("web-1", "web-2"):  # on different sources
        reply = call(server.url, "POST", "/api/v1/migrations", token=token, body={"instance": vm})
        ids[vm] = reply.json["id"]
        transferring[ids[vm]] = threading.Event()
    for mid in ids.values():
        assert transferring[mid].wait(30)
    abort = call(server.url, "POST", f"/api/v1/migrations/{ids['web-1']}/abort", token=token)
    assert abort.status == 200 and abort.json["abort_requested"] is True
    fc = call(server.url, "POST", f"/api/v1/migrations/{ids['web-2']}/force-complete", token=token)
    assert fc.status == 200, fc.text
    aborted, forced = finished.wait(ids["web-1"]), finished.wait(ids["web-2"])
    assert aborted.status == "cancelled" and aborted.source == "compute-1"
    assert forced.status == "completed"
    assert {i.name: i.host for i in orch.instances()}["web-1"] == "compute-1"  # stayed
