"""A client of ``ferry serve``: :class:`Client` has the Orchestrator's methods that make sense
over HTTP, on the standard library only (urllib).

>>> client = Client("http://127.0.0.1:8080", token)
>>> mid = client.live_migrate("web-1", to_group="rack-b")     # 202: accepted and persisted
>>> for event in client.events(mid): ...                      # status, phase, progress
>>> client.get(mid).status
'completed'
"""

from __future__ import annotations

import builtins
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ferry.errors import FerryError
from ferry.model import Migration, MigrationRequest, MigrationStatus
from ferry.model.drain import Drain

TERMINAL = frozenset(s.value for s in MigrationStatus if s.terminal)


class ClientError(FerryError):
    """The server refused a request: its HTTP status, the error code (a ferry error's class
    name such as ``MigrationNotFound``, or ``Unauthorized``...) and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


@dataclass(frozen=True)
class ServerEvent:
    """One Server-Sent Event: ``kind`` status|phase|progress, ``id`` (status events only)."""

    kind: str
    data: dict[str, Any]
    id: str | None = None


class Client:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"Client({self.url!r})"

    # ------------------------------------------------------------------ calls
    def _open(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        hdrs = dict(headers or {})
        if self._token:
            hdrs["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=hdrs, method=method)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                err = json.load(exc)["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = exc.reason, ""
            raise ClientError(exc.code, code, message) from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as resp:
            return json.load(resp)

    # --------------------------------------------------------------- methods
    def live_migrate(self, instance: str | MigrationRequest, **fields: Any) -> str:
        """Post a migration request (a MigrationRequest, or the instance with its fields);
        returns the id once the server has persisted it. The run goes on on the server."""
        request = (
            instance
            if isinstance(instance, MigrationRequest)
            else MigrationRequest(instance=instance, **fields)
        )
        body = {k: v for k, v in request.to_dict().items() if v not in (None, [], {})}
        return str(self._json("POST", "/api/v1/migrations", body)["id"])

    def get(self, migration_id: str) -> Migration:
        return _migration(self._json("GET", f"/api/v1/migrations/{_q(migration_id)}"))

    def list(
        self,
        status: str | None = None,
        *,
        instance: str | None = None,
        host: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Migration]:
        """Migrations, newest first (every page, up to ``limit``)."""
        args = {"status": status, "instance": instance, "host": host}
        query = urllib.parse.urlencode({k: v for k, v in args.items() if v is not None})
        path: str | None = f"/api/v1/migrations?{query}"
        out: builtins.list[Migration] = []
        while path is not None and (limit is None or len(out) < limit):
            page = self._json("GET", path)
            out.extend(_migration(m) for m in page["migrations"])
            path = page["next"]
        return out[:limit] if limit is not None else out

    def abort(self, migration_id: str) -> Migration:
        return _migration(self._json("POST", f"/api/v1/migrations/{_q(migration_id)}/abort"))

    def force_complete(self, migration_id: str) -> Migration:
        path = f"/api/v1/migrations/{_q(migration_id)}/force-complete"
        return _migration(self._json("POST", path))

    def hosts(self) -> builtins.list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/hosts"))

    def disable_host(self, host: str, reason: str | None = None) -> dict[str, Any]:
        """Disable ``host`` for scheduling; returns the host as ``hosts()`` shows it."""
        path = f"/api/v1/hosts/{_q(host)}/disable"
        return dict(self._json("POST", path, {"reason": reason}))

    def enable_host(self, host: str) -> dict[str, Any]:
        """Enable ``host`` again (409 while a drain of it runs); returns the host."""
        return dict(self._json("POST", f"/api/v1/hosts/{_q(host)}/enable"))

    def drain(
        self,
        host: str,
        *,
        max_parallel: int | None = None,
        to: str | None = None,
        to_group: str | None = None,
        order: str = "smallest",
        reason: str | None = None,
    ) -> str:
        """Start a drain of ``host`` on the server; returns its id once it is recorded (the
        host disabled). The server's workers drive it; follow it with :meth:`get_drain`."""
        body = _drain_body(host, max_parallel, to, to_group, order, reason)
        return str(self._json("POST", "/api/v1/drains", body)["id"])

    def plan_drain(
        self,
        host: str,
        *,
        max_parallel: int | None = None,
        to: str | None = None,
        to_group: str | None = None,
        order: str = "smallest",
    ) -> builtins.list[dict[str, Any]]:
        """The plan of draining ``host`` (each guest's destination or why it is skipped);
        nothing is recorded."""
        body = {**_drain_body(host, max_parallel, to, to_group, order, None), "dry_run": True}
        return list(self._json("POST", "/api/v1/drains", body)["plan"])

    def drains(self) -> builtins.list[Drain]:
        return [Drain.from_dict(d) for d in self._json("GET", "/api/v1/drains")["drains"]]

    def get_drain(self, drain_id: str) -> Drain:
        return Drain.from_dict(self._json("GET", f"/api/v1/drains/{_q(drain_id)}"))

    def abort_drain(self, drain_id: str) -> Drain:
        return Drain.from_dict(self._json("POST", f"/api/v1/drains/{_q(drain_id)}/abort"))

    def events(
        self,
        migration_id: str | None = None,
        *,
        last_event_id: str | None = None,
        until_done: bool = True,
    ) -> Iterator[ServerEvent]:
        """The event stream; with ``migration_id`` and ``until_done`` it ends after that
        migration's terminal status."""
        query = f"?migration={_q(migration_id)}" if migration_id else ""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self._open("GET", f"/api/v1/events{query}", headers=headers, timeout=None) as stream:
            fields: dict[str, str] = {}
            for raw in stream:
                line = raw.decode().rstrip("\r\n")
                if line:
                    if not line.startswith(":"):
                        key, _, value = line.partition(":")
                        fields[key] = value.removeprefix(" ")
                    continue
                if "event" in fields and "data" in fields:
                    event = ServerEvent(
                        fields["event"], json.loads(fields["data"]), fields.get("id")
                    )
                    yield event
                    if (
                        until_done
                        and migration_id is not None
                        and event.kind == "status"
                        and event.data.get("status") in TERMINAL
                    ):
                        return
                fields = {}


def _drain_body(host: str, *options: Any) -> dict[str, Any]:
    names = ("max_parallel", "to", "to_group", "order", "reason")
    return {"host": host, **{k: v for k, v in zip(names, options, strict=True) if v is not None}}


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _migration(data: dict[str, Any]) -> Migration:
    """A Migration from the API's JSON (whose ``instance`` is the name, ``instance_uuid`` the
    UUID)."""
    return Migration.from_dict({**data, "instance": data.get("instance_uuid", data["instance"])})


__all__ = ["Client", "ClientError", "ServerEvent"]
