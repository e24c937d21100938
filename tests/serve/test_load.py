"""Concurrent requests: 200 GETs and 50 POSTs for distinct guests at once (a cluster of 50
guests), no error, each accepted POST exactly one migration; a second POST for the same guest
while it migrates is a 409. Runs through the job store when one is configured; a missing `serve`
extra is named."""

from __future__ import annotations

import builtins
import concurrent.futures
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from ferry import Orchestrator
from ferry.cli import cli
from ferry.model import MigrationRequest
from ferry.serve import ServiceServer, TokenStore
from ferry.serve.workers import Workers
from tests.scheduler.helpers import host, orchestrator, vm, write_cluster
from tests.serve.conftest import Service
from tests.serve.helpers import Finished, call

GUESTS = ("web-1", "web-2", "api-1", "cache-1", "app-1", "app-2", "bfv-1", "db-1")


def test_concurrent_posts_and_gets(service: Service, orch: Orchestrator) -> None:
    def post(vm: str) -> tuple[str, int, str | None]:
        reply = call(
            service.url, "POST", "/api/v1/migrations", token=service.operator, body={"instance": vm}
        )
        return vm, reply.status, reply.json.get("id")

    def get(_: int) -> int:
        return call(service.url, "GET", "/api/v1/migrations", token=service.reader).status

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        posts = list(pool.map(post, [*GUESTS, *GUESTS]))  # each guest twice at once
        gets = list(pool.map(get, range(100)))
    assert set(gets) == {200}
    accepted = [(vm, mid) for vm, status, mid in posts if status == 202]
    assert {status for _, status, _ in posts} <= {202, 409}
    assert len({vm for vm, _ in accepted}) == len(GUESTS)  # every guest got one
    for _, mid in accepted:
        service.finished.wait(str(mid))
    records = orch.list()
    assert sorted(m.id for m in records) == sorted(str(mid) for _, mid in accepted)
    for m in records:  # a late duplicate may be accepted after the first ended: both ran once
        assert [h.status for h in orch.get(m.id).history].count("accepted") == 1


def load_cluster(path: Any, guests: int = 50, hosts: int = 5) -> Any:
    """``hosts`` roomy hosts with ``guests`` small unpinned guests spread over them."""
    return write_cluster(
        path,
        [host(f"h{i}", vcpus=256, memory_mb=262_144) for i in range(hosts)],
        [vm(f"g-{n:03d}", f"h{n % hosts}", memory_mb=256, pinned=False) for n in range(guests)],
    )


def test_200_gets_and_50_posts_for_distinct_guests(tmp_path: Any) -> None:
    orch, _sim = orchestrator(
        f"sqlite:///{tmp_path / 'load.db'}", load_cluster(tmp_path / "c.toml")
    )
    _, operator = TokenStore(orch.db).create("ops", "operator")
    _, reader = TokenStore(orch.db).create("dash", "reader")
    finished = Finished(orch)
    server = ServiceServer(orch, "127.0.0.1:0", poll_seconds=0.05).start()
    url = server.url.rstrip("/")
    guests = [f"g-{n:03d}" for n in range(50)]

    def post(name: str) -> tuple[str, int, str | None]:
        reply = call(url, "POST", "/api/v1/migrations", token=operator, body={"instance": name})
        return name, reply.status, reply.json.get("id")

    def get(n: int) -> int:
        path = "/api/v1/migrations" if n % 2 else "/api/v1/hosts"
        return call(url, "GET", path, token=reader).status

    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            gets = [pool.submit(get, n) for n in range(200)]
            posts = [pool.submit(post, name) for name in guests]
            statuses = [f.result() for f in gets]
            accepted = [f.result() for f in posts]
        assert statuses == [200] * 200
        assert [status for _, status, _ in accepted] == [202] * 50
        ids = [str(mid) for _, _, mid in accepted]
        for mid in ids:
            assert finished.wait(mid, timeout=120).status == "completed"
        records = orch.list()
        assert sorted(m.id for m in records) == sorted(ids)
        assert sorted(m.instance_name or "" for m in records) == guests
        for m in records:
            history = [h.status for h in orch.get(m.id).history]
            assert history.count("accepted") == 1 and history.count("completed") == 1
    finally:
        server.shutdown()
        orch.close()


def test_the_job_store_takes_the_requests_when_configured() -> None:
    posted: list[MigrationRequest] = []
    fake: Any = SimpleNamespace(
        settings=SimpleNamespace(
            jobboard=SimpleNamespace(url="redis://127.0.0.1:1"),
            limits=SimpleNamespace(total=0),
        ),
        submit=lambda request: posted.append(request) or "m-1",
        drains=lambda: [],
    )
    workers = Workers(fake)
    try:
        assert workers.accept(MigrationRequest(instance="web-1")) == "m-1"
        assert posted == [MigrationRequest(instance="web-1")] and workers.busy() == 0
        assert workers.recover() == []  # the conductors own the board's jobs
    finally:
        workers.close()


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    real_import = builtins.__import__

    def no_prometheus(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("prometheus_client"):
            raise ImportError("No module named 'prometheus_client'", name="prometheus_client")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in list(sys.modules) if m.startswith("ferry.serve")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_prometheus)
    result = CliRunner().invoke(
        cli, ["token", "list"], env={"FERRY_DB": f"sqlite:///{tmp_path / 'x.db'}"}
    )
    assert result.exit_code == 2
    assert "pip install 'ferry[serve]'" in result.stderr and "prometheus_client" in result.stderr
