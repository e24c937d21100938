"""A real ``ferry serve`` on 127.0.0.1 (a free port) over the simulated cluster, with one token
of each role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ferry import Orchestrator
from ferry.serve import ServiceServer, TokenStore
from tests.serve.helpers import Finished


@dataclass
class Service:
    server: ServiceServer
    url: str
    operator: str
    reader: str
    finished: Finished


@pytest.fixture
def service(orch: Orchestrator) -> Iterator[Service]:
    tokens = TokenStore(orch.db)
    _, operator = tokens.create("ops", "operator")
    _, reader = tokens.create("dash", "reader")
    finished = Finished(orch)
    server = ServiceServer(orch, "127.0.0.1:0", poll_seconds=0.05).start()
    try:
        yield Service(server, server.url.rstrip("/"), operator, reader, finished)
    finally:
        server.shutdown()
