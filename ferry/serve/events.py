"""``GET /api/v1/events``: Server-Sent Events of migrations (status, phase, progress).

Status events come from the records' status history (``ferry_migration_events``): each carries
that row's id as its SSE ``id``, so a client reconnecting with ``Last-Event-ID`` gets every
status change after it, none missed and none twice, whichever process made it. Progress and
phase events are read from the records as they change and carry no id (they are not replayed).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from ferry.persistence.db import Database
from ferry.persistence.models import MIGRATION_EVENTS as EV, MIGRATIONS as M

KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, sort_keys=True)}\n\n"


class EventFeed:
    """The events of ``migration`` (None: all), after status event ``after``."""

    def __init__(
        self,
        db: Database,
        *,
        migration: str | None = None,
        after: int = 0,
        poll_seconds: float = 0.5,
        stopping: threading.Event | None = None,
    ) -> None:
        self.db = db
        self.migration = migration
        self.after = after
        self.poll_seconds = poll_seconds
        self.stopping = stopping or threading.Event()
        self._seen: dict[str, tuple[Any, Any]] = {}

    def status_events(self) -> list[str]:
        q = sa.select(EV).where(EV.c.id > self.after).order_by(EV.c.id).limit(500)
        if self.migration is not None:
            q = q.where(EV.c.migration_id == self.migration)
        with self.db.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in rows:
            self.after = r["id"]
            data = {
                "migration": r["migration_id"],
                "status": r["status"],
                "detail": r["detail"],
                "at": r["at"],
            }
            out.append(sse("status", data, r["id"]))
        return out

    def progress_events(self) -> list[str]:
        q = sa.select(M.c.id, M.c.status, M.c.progress)
        if self.migration is not None:
            q = q.where(M.c.id == self.migration)
        else:
            q = q.where(M.c.status.notin_(("completed", "failed", "cancelled", "error")))
        with self.db.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for mid, _status, progress in rows:
            progress = dict(progress or {})
            phase = progress.get("phase")
            before = self._seen.get(mid)
            if (before is None or before[0] != phase) and phase is not None:
                out.append(sse("phase", {"migration": mid, "phase": phase}))
            if progress and (before is None or before[1] != progress):
                out.append(sse("progress", {"migration": mid, "progress": progress}))
            self._seen[mid] = (phase, progress)
        return out

    def stream(self) -> Iterator[str]:
        """Events as they happen, until the client goes or the server stops."""
        yield "retry: 1000\n\n"
        idle = 0.0
        while not self.stopping.is_set():
            batch = self.status_events() + self.progress_events()
            if batch:
                idle = 0.0
                yield "".join(batch)
            else:
                idle += self.poll_seconds
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield ": keep-alive\n\n"
            self.stopping.wait(self.poll_seconds)
