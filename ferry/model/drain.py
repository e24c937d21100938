"""A drain (host maintenance): the host, its guests' states and migrations, plain data.

A drain empties one host with live migrations. It is persisted (``ferry_drains`` and
``ferry_drain_guests``); the host is disabled for scheduling in the transaction that records it
(``ferry_host_maintenance``) and stays disabled until ``undrain``. Its migrations are ordinary
migration records, linked from its guests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class DrainStatus(enum.StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    COMPLETED = "completed"  # every running guest moved
    PARTIAL = "partial"  # some moved, some failed or skipped
    CANCELLED = "cancelled"  # aborted by request; what moved stays moved
    FAILED = "failed"  # nothing moved and something could not be

    @property
    def terminal(self) -> bool:
        return self not in (DrainStatus.PLANNING, DrainStatus.RUNNING)


class GuestState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # its migration is in flight
    COMPLETED = "completed"  # moved (destination set)
    FAILED = "failed"
    SKIPPED = "skipped"  # not running, paused, fits nowhere, cancelled


#: ``--order``: smallest RAM first, largest RAM first, or by name
ORDERS = ("smallest", "largest", "name")


@dataclass
class DrainGuest:
    """One guest of a drain; ``position`` is its place in the drain's order."""

    instance_uuid: str
    instance: str
    state: str = GuestState.QUEUED.value
    migration: str | None = None
    destination: str | None = None
    reason: str | None = None
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "instance_uuid": self.instance_uuid,
            "state": self.state,
            "migration": self.migration,
            "destination": self.destination,
            "reason": self.reason,
        }


@dataclass
class Drain:
    """A drain record. ``options``: ``max_parallel``, ``to``, ``to_group``, ``order``."""

    id: str
    host: str
    status: str
    reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    guests: list[DrainGuest] = field(default_factory=list)
    abort_requested: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return DrainStatus(self.status).terminal

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in GuestState}
        for g in self.guests:
            out[g.state] = out.get(g.state, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "drain",
            "host": self.host,
            "status": self.status,
            "reason": self.reason,
            "options": dict(self.options),
            "abort_requested": self.abort_requested,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "counts": self.counts(),
            "guests": [g.to_dict() for g in self.guests],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Drain:
        """The drain of :meth:`to_dict` (the guests' positions: their order)."""
        fields = ("instance_uuid", "instance", "state", "migration", "destination", "reason")
        return cls(
            id=data["id"],
            host=data["host"],
            status=data["status"],
            reason=data.get("reason"),
            options=dict(data.get("options") or {}),
            guests=[
                DrainGuest(**{k: g.get(k) for k in fields}, position=i)
                for i, g in enumerate(data.get("guests") or [])
            ],
            abort_requested=bool(data.get("abort_requested")),
            created_at=float(data.get("created_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            finished_at=data.get("finished_at"),
        )


@dataclass(frozen=True)
class PlanEntry:
    """One guest of a drain plan: its destination, or why it is skipped (``reasons``: each
    host's reason when it fits nowhere)."""

    instance_uuid: str
    instance: str
    memory_mb: int
    destination: str | None = None
    skipped: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "instance_uuid": self.instance_uuid,
            "memory_mb": self.memory_mb,
            "destination": self.destination,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
        }
