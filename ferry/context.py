"""The resolver handed to every task: repositories, drivers, clock and event bus; and the
refresh of the scheduler's host state cache from the drivers (for tasks and readers alike).

It is injected into each engine *transiently* (never persisted): the store keeps plain JSON, and
a resumed run gets the resolver of the process that resumes it. Tests build their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.clock import Clock
from ferry.config import Settings
from ferry.drivers.base import Driver
from ferry.drivers.registry import DriverRegistry
from ferry.errors import MigrationCancelled
from ferry.persistence.db import Database
from ferry.persistence.repository import MigrationRepository
from ferry.scheduler.repository import ClaimRepository

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Something a user may want to react to.

    ``kind``: ``phase_started``, ``phase_done``, ``phase_failed``, ``phase_reverted``,
    ``progress`` (``data`` holds the progress dict) or ``status`` (``status`` is set).
    """

    kind: str
    migration_id: str
    phase: str | None = None
    status: str | None = None
    detail: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Event], None]


class EventBus:
    """Fan-out of :class:`Event` to subscribed callbacks; a failing callback is logged only."""

    def __init__(self) -> None:
        self._subs: list[Callback] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._subs.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for cb in subs:
            try:
                cb(event)
            except Exception:
                LOG.exception("event callback failed for %s", event.kind)


@dataclass
class Context:
    db: Database
    settings: Settings
    drivers: DriverRegistry
    clock: Clock
    migrations: MigrationRepository
    claims: ClaimRepository
    events: EventBus

    def driver(self, host: str) -> Driver:
        return self.drivers.driver_for(host)

    def check_abort(self, migration_id: str, when: str = "") -> None:
        """Raise :class:`MigrationCancelled` when someone asked to abort this migration."""
        if self.migrations.field(migration_id, "abort_requested"):
            raise MigrationCancelled(migration_id, when)


def refresh_host_states(context: Context, *, force: bool = False) -> None:
    """Refresh the host state cache from every driver when it is empty or its oldest report is
    older than ``[scheduler] host_state_ttl`` (or when ``force``); otherwise do nothing, so
    scheduling reads the database and calls no hypervisor."""
    count, oldest = context.claims.cache_age()
    now = context.claims.now()
    ttl = context.settings.scheduler.host_state_ttl
    if force or count == 0 or oldest is None or now - oldest > ttl:
        context.claims.refresh_hosts(context.drivers.host_infos(), reported_at=now, complete=True)
