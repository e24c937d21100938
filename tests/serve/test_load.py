"""Concurrent requests: many GETs and POSTs at once, no error; each accepted POST is exactly one
migration, a second POST for the same guest while it migrates is a 409. Runs through the job
store when one is configured; a missing `serve` extra is named."""

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
from ferry.serve.workers import Workers
from tests.serve.conftest import Service
from tests.serve.helpers import call

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
