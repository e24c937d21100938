"""The migrate-send data of ``host.migrate_receive``, kept in process memory only.

It holds a session id of the destination pool (a secret: never in ``driver_data``, the database
or a log). It is kept per migration token; after a restart (or for the transfer, which wants a
fresh one) ``host.migrate_receive`` is called again. Dropped data has its session logged out.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from .faults import Redactor
from .records import XAPI_PROBLEMS, Refused
from .session import PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")
#: migrate-send data kept at most (the oldest are dropped first)
MAX_KEPT = 64


@dataclass
class _Kept:
    pool: PoolSession
    data: dict[str, str]


class ReceiveStore:
    """token -> migrate-send data, in memory."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def receive(self, token: str, pool: PoolSession, host_ref: str, network: str) -> dict[str, str]:
        """``host.migrate_receive`` on ``pool``, kept under ``token`` (replacing older data)."""
        data = pool.call("host.migrate_receive", host_ref, network, {})
        if not isinstance(data, dict):
            raise Refused("host.migrate_receive returned no migrate-send data")
        self._redact.add(str(data.get("session_id") or ""))
        received = {str(k): str(v) for k, v in data.items()}
        dropped: list[_Kept] = []
        with self._lock:
            previous = self._kept.pop(token, None)
            if previous is not None:
                dropped.append(previous)
            self._kept[token] = _Kept(pool, received)
            while len(self._kept) > MAX_KEPT:
                dropped.append(self._kept.pop(next(iter(self._kept))))
        for item in dropped:
            self._logout(item)
        return received

    def get(self, token: str) -> dict[str, str] | None:
        with self._lock:
            kept = self._kept.get(token)
        return kept.data if kept is not None else None

    def drop(self, token: str | None) -> None:
        """Forget ``token``'s data and log its destination session out (best effort)."""
        with self._lock:
            item = self._kept.pop(token, None) if token else None
        if item is not None:
            self._logout(item)

    def drop_all(self) -> None:
        with self._lock:
            tokens = list(self._kept)
        for token in tokens:
            self.drop(token)

    def _logout(self, item: _Kept) -> None:
        session_id = item.data.get("session_id")
        if not session_id:
            return
        try:
            item.pool.raw_call("session.logout", session_id)
        except XAPI_PROBLEMS as exc:
            LOG.debug(
                "xenapi pool %s: migrate-receive logout: %s", item.pool.url, self._redact(str(exc))
            )
