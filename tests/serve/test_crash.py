"""SIGKILL of ``ferry serve`` loses no accepted request: after a restart every migration that
got its 202 runs to its end exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.config import load_settings
from ferry.serve import TokenStore
from tests.serve.helpers import call, read_events

pytestmark = pytest.mark.crash
TERMINAL = {"completed", "failed", "cancelled", "error"}


class Serve:
    """``ferry serve`` in a real subprocess; its URL read from its first line on stderr."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "serve", "--listen", "127.0.0.1:0"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert line.startswith("ferry serve: http://"), line
        self.url = line.split()[2].rstrip("/")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    cfg = tmp_path / "ferry.toml"
    # real time: a demo migration takes ~4 s, so the kill comes while they run
    cfg.write_text("[simulated]\nspeed = 1.0\n[migration]\npost_retry_delay = 0\n")
    yield {
        **os.environ,
        "FERRY_DB": f"sqlite:///{tmp_path / 'serve.db'}",
        "FERRY_CONFIG": str(cfg),
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }


def test_sigkill_loses_no_accepted_migration(env: dict[str, str]) -> None:
    settings = load_settings(env["FERRY_CONFIG"])
    with Orchestrator(env["FERRY_DB"], settings=settings) as orch:
        _, token = TokenStore(orch.db).create("ops", "operator")
    first = Serve(env)
    ids = []
    for vm in ("web-1", "web-2", "api-1"):
        reply = call(first.url, "POST", "/api/v1/migrations", token=token, body={"instance": vm})
        assert reply.status == 202, reply.text
        ids.append(reply.json["id"])
    first.kill()
    with Orchestrator(env["FERRY_DB"], settings=settings) as orch:
        assert any(not orch.get(mid).done for mid in ids)  # the kill came mid-run
    second = Serve(env)
    try:
        ended: set[str] = set()

        def all_done(event: dict[str, object]) -> bool:
            data = event["data"]
            assert isinstance(data, dict)
            if event["event"] == "status" and data["status"] in TERMINAL:
                ended.add(str(data["migration"]))
            return ended >= set(ids)

        read_events(second.url, token, until=all_done)
    finally:
        second.kill(signal.SIGTERM)
    with Orchestrator(env["FERRY_DB"], settings=settings) as orch:
        where = {i.name: i.host for i in orch.instances()}
        for mid in ids:
            m = orch.get(mid)
            statuses = [h.status for h in m.history]
            assert m.status == "completed", (mid, statuses, m.error)
            # status changes (a resume adds a note under the current status, not a change)
            changes = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
            assert changes.count("accepted") == 1 and changes.count("completed") == 1, statuses
            assert where[m.instance_name or ""] == m.destination != m.source
            assert orch.runner.flow_state(mid) == "SUCCESS"
        assert len(orch.list()) == 3  # nothing was run twice as a new migration


def test_stop_suspends_runs_and_the_next_start_resumes_them(tmp_path: Path) -> None:
    from ferry.config import MigrationSettings, Settings, SimulatedSettings
    from ferry.serve import ServiceServer
    from tests.serve.helpers import Finished

    settings = Settings(
        simulated=SimulatedSettings(speed=1.0), migration=MigrationSettings(post_retry_delay=0.0)
    )
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    with Orchestrator(url, settings=settings) as orch:
        _, token = TokenStore(orch.db).create("ops", "operator")
        running = threading.Event()
        orch.subscribe(lambda e: running.set() if e.kind == "progress" else None)
        server = ServiceServer(orch, "127.0.0.1:0", poll_seconds=0.05).start()
        reply = call(
            server.url, "POST", "/api/v1/migrations", token=token, body={"instance": "web-1"}
        )
        mid = reply.json["id"]
        assert running.wait(30)  # the transfer is under way
        server.shutdown()
        record = orch.get(mid)
        assert not record.done and orch.leases.get(mid) is None  # suspended, lease released
    with Orchestrator(url, settings=settings) as orch:
        finished = Finished(orch)
        server = ServiceServer(orch, "127.0.0.1:0", poll_seconds=0.05).start()
        try:
            assert server.recovered == [mid]
            assert finished.wait(mid).status == "completed"
        finally:
            server.shutdown()
