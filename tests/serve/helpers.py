"""A tiny HTTP client for the tests of ``ferry serve`` (the standard library's http.client, so
what the tests see is what goes over the socket), and a wait on the orchestrator's events."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ferry import Orchestrator
from ferry.context import Event
from ferry.model import Migration, MigrationStatus


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class Finished:
    """Waits (no sleeps) until migrations reach a terminal status, from the status events."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        orch.subscribe(self._on_event)

    def _event(self, migration_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(migration_id, threading.Event())

    def _on_event(self, event: Event) -> None:
        if event.kind == "status" and MigrationStatus(event.status).terminal:
            self._event(str(event.migration_id)).set()

    def wait(self, migration_id: str, timeout: float = 60) -> Migration:
        event = self._event(migration_id)
        if not self.orch.get(migration_id).done:
            assert event.wait(timeout), f"migration {migration_id} did not finish"
        return self.orch.get(migration_id)


def read_events(
    url: str, token: str, query: str = "", *, last_id: str | None = None, until: Any = None
) -> list[dict[str, Any]]:
    """Read ``/api/v1/events`` until ``until(event)`` is true; each event as a dict with
    ``event``, ``id`` (or None) and ``data`` (parsed)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    events: list[dict[str, Any]] = []
    try:
        conn.request("GET", f"/api/v1/events{query}", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type", "").startswith(
            "text/event-stream"
        )
        current: dict[str, Any] = {}
        while True:
            line = resp.fp.readline().decode().rstrip("\n")
            if line.startswith(":") or line.startswith("retry:"):
                continue
            if line:
                key, _, value = line.partition(": ")
                current[key] = value
                continue
            if "event" in current:
                event = {
                    "event": current["event"],
                    "id": current.get("id"),
                    "data": json.loads(current["data"]),
                }
                events.append(event)
                if until is not None and until(event):
                    return events
            current = {}
    finally:
        conn.close()
