"""ferry.client.Client against a real ``ferry serve``."""

from __future__ import annotations

import pytest

from ferry import Orchestrator
from ferry.client import Client, ClientError
from ferry.model import MigrationRequest
from tests.serve.conftest import Service


def test_client_migrates_follows_and_reads(service: Service, orch: Orchestrator) -> None:
    client = Client(service.url, service.operator)
    assert service.operator not in repr(client)
    mid = client.live_migrate("web-1", destination="compute-3")
    events = list(client.events(mid))
    assert events[-1].kind == "status" and events[-1].data["status"] == "completed"
    m = client.get(mid)
    assert (m.status, m.destination) == ("completed", "compute-3")
    assert m.instance == orch.get(mid).instance and m.instance_name == "web-1"
    assert [h.status for h in m.history] == [h.status for h in orch.get(mid).history]
    other = client.live_migrate(MigrationRequest(instance="web-2"))
    list(client.events(other))
    assert [x.id for x in client.list()] == [other, mid]
    assert [x.id for x in client.list(instance="web-2")] == [other]
    assert [x.id for x in client.list(limit=1)] == [other]
    assert "compute-1" in {h["name"] for h in client.hosts()}
    later = list(client.events(mid, last_event_id=events[1].id))
    assert [e.id for e in later if e.kind == "status"] == [
        e.id for e in events[2:] if e.kind == "status"
    ]
    with pytest.raises(ClientError) as late:
        client.abort(mid)
    assert (late.value.status, late.value.code) == (409, "AbortTooLate")


def test_client_errors_name_status_and_code(service: Service) -> None:
    with pytest.raises(ClientError) as missing:
        Client(service.url, service.reader).get("nope")
    assert (missing.value.status, missing.value.code) == (404, "MigrationNotFound")
    with pytest.raises(ClientError) as denied:
        Client(service.url, service.reader).live_migrate("web-1")
    assert denied.value.status == 403 and service.reader not in str(denied.value)
    with pytest.raises(ClientError) as anonymous:
        Client(service.url).hosts()
    assert anonymous.value.status == 401
