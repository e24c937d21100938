"""Plain, JSON-serialisable data handed between ferry's phases and shown to users.

Everything here round-trips through ``to_dict()`` / ``from_dict()`` so it can live in
TaskFlow's store, in job details and in the database without pickling.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from ferry.model.numa import (
    CellFree,
    GuestRequest,
    HostNumaState,
    NumaCell,
    NumaTopology,
    Pinning,
)

T = TypeVar("T")


class _Record:
    """Mixin: dataclass <-> plain dict, ignoring unknown keys (forward compatible)."""

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


def _to_plain(value: Any) -> Any:
    if isinstance(value, HostNumaState | Pinning):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


class PowerState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    NOSTATE = "nostate"


class MigrationStatus(enum.StrEnum):
    """A migration's user-visible status (Nova's migration statuses, trimmed)."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    POST_MIGRATING = "post-migrating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        MigrationStatus.COMPLETED,
        MigrationStatus.FAILED,
        MigrationStatus.CANCELLED,
        MigrationStatus.ERROR,
    }
)


@dataclass
class Host(_Record):
    """A hypervisor host as the scheduler sees it (capacity and current usage)."""

    name: str
    driver: str
    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    disk_gb: int
    vcpus_used: int = 0
    memory_mb_used: int = 0
    disk_gb_used: int = 0
    up: bool = True
    enabled: bool = True
    storage_group: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: why the host is down, as its driver saw it (None when up, or when it cannot tell)
    down_reason: str | None = None
    #: the NUMA topology and what is pinned / used in each cell (None: not reported)
    numa: HostNumaState | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        obj = super().from_dict(data)
        if isinstance(obj.numa, dict):
            obj.numa = HostNumaState.from_dict(obj.numa)
        return obj

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb - self.memory_mb_used

    @property
    def free_vcpus(self) -> int:
        return self.vcpus - self.vcpus_used

    @property
    def free_disk_gb(self) -> int:
        return self.disk_gb - self.disk_gb_used


@dataclass
class Instance(_Record):
    """A virtual machine, as its driver reports it."""

    uuid: str
    name: str
    host: str
    power_state: str = PowerState.RUNNING.value
    vcpus: int = 1
    memory_mb: int = 512
    disk_gb: int = 1
    volumes: list[dict[str, Any]] = field(default_factory=list)
    vifs: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MigrationRequest(_Record):
    """What the user asked for. ``instance`` is a name or a UUID.

    ``to_group``: only hosts of that host group (affinity); ``not_with``: instances (names or
    UUIDs) the instance must not share a host with (anti-affinity).
    """

    instance: str
    destination: str | None = None
    block_migration: bool | None = None
    max_attempts: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    to_group: str | None = None
    not_with: list[str] = field(default_factory=list)


_REQUEST_FIELDS = frozenset(
    {"destination", "block_migration", "max_attempts", "overrides", "to_group", "not_with"}
)


def as_request(request: str | MigrationRequest, **fields: Any) -> MigrationRequest:
    """``request`` itself, or a request for the instance ``request`` (name or UUID) with
    ``fields``; a request object and fields together are refused."""
    if isinstance(request, MigrationRequest):
        given = {k: v for k, v in fields.items() if v is not None}
        if given:
            raise TypeError(f"pass a MigrationRequest or its fields, not both: {sorted(given)}")
        return request
    unknown = set(fields) - _REQUEST_FIELDS
    if unknown:
        raise TypeError(f"not fields of a migration request: {sorted(unknown)}")
    return MigrationRequest(
        instance=request,
        destination=fields.get("destination"),
        block_migration=fields.get("block_migration"),
        max_attempts=fields.get("max_attempts"),
        overrides=dict(fields.get("overrides") or {}),
        to_group=fields.get("to_group"),
        not_with=[str(v) for v in fields.get("not_with") or ()],
    )


@dataclass
class MigrateData(_Record):
    """Data gathered by the checks and handed to pre/transfer/post phases.

    ``pinning``: the pinned guest's new placement on the destination (claimed by the scheduler,
    or the driver's own fit). ``driver_data`` belongs to the driver (never secrets: those stay
    in process memory).
    """

    instance_uuid: str
    source: str
    destination: str
    block_migration: bool = False
    shared_storage: bool = False
    driver_data: dict[str, Any] = field(default_factory=dict)
    pinning: Pinning | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        obj = super().from_dict(data)
        if isinstance(obj.pinning, dict):
            obj.pinning = Pinning.from_dict(obj.pinning)
        elif obj.pinning is None and isinstance(obj.driver_data.get("numa_pinning"), dict):
            # runs persisted before the pinning had its own field
            driver_data = dict(obj.driver_data)
            obj.pinning = Pinning.from_dict(driver_data.pop("numa_pinning"))
            obj.driver_data = driver_data
        return obj

    def with_driver_data(self, **updates: Any) -> MigrateData:
        merged = {**self.driver_data, **updates}
        return dataclasses.replace(self, driver_data=merged)

    def with_pinning(self, pinning: Pinning | None) -> MigrateData:
        return dataclasses.replace(self, pinning=pinning)


@dataclass
class TransferProgress(_Record):
    """One observation of a memory transfer (pre-copy)."""

    state: str  # none | running | completed | failed | cancelled
    memory_total_mb: float = 0.0
    memory_processed_mb: float = 0.0
    memory_remaining_mb: float = 0.0
    dirty_rate_mbps: float = 0.0
    iteration: int = 0
    downtime_ms: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    #: guest CPU throttle applied by auto-converge (percent; 0 = none)
    throttle_percent: int = 0

    @property
    def fraction(self) -> float:
        if self.state == "completed":
            return 1.0
        if self.memory_total_mb <= 0:
            return 0.0
        done = 1.0 - self.memory_remaining_mb / self.memory_total_mb
        return max(0.0, min(0.99, done))


@dataclass
class StatusChange(_Record):
    status: str
    at: float
    detail: str | None = None


@dataclass
class Attempt(_Record):
    """One destination host tried by the scheduler/reschedule loop."""

    host: str
    outcome: str  # chosen | rejected (the host moved to is the record's destination)
    reason: str | None = None
    at: float = 0.0


@dataclass
class PhaseState(_Record):
    name: str
    state: str
    seconds: float | None = None
    error: str | None = None


@dataclass
class Migration(_Record):
    """The user's view of one live migration."""

    id: str
    instance: str
    instance_name: str | None
    source: str | None
    destination: str | None
    status: str
    block_migration: bool | None = None
    requested_destination: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    history: list[StatusChange] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    phases: list[PhaseState] = field(default_factory=list)
    abort_requested: bool = False
    #: when the transfer was (last) started; None = never
    transfer_started_at: float | None = None

    @property
    def status_enum(self) -> MigrationStatus:
        return MigrationStatus(self.status)

    @property
    def done(self) -> bool:
        return self.status_enum.terminal

    def headline(self) -> dict[str, Any]:
        """The fields every view of a migration starts with (CLI ``--json``, graph, web)."""
        return {
            "id": self.id,
            "status": self.status,
            "instance": self.instance_name or self.instance,
            "instance_uuid": self.instance,
            "source": self.source,
            "destination": self.destination,
            "requested_destination": self.requested_destination,
            "error": self.error,
            "leftovers": list(self.leftovers),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Migration:
        obj = super().from_dict(data)
        obj.history = [StatusChange.from_dict(h) for h in data.get("history", [])]
        obj.attempts = [Attempt.from_dict(a) for a in data.get("attempts", [])]
        obj.phases = [PhaseState.from_dict(p) for p in data.get("phases", [])]
        return obj


__all__ = [
    "Attempt",
    "CellFree",
    "GuestRequest",
    "Host",
    "HostNumaState",
    "Instance",
    "MigrateData",
    "Migration",
    "MigrationRequest",
    "MigrationStatus",
    "NumaCell",
    "NumaTopology",
    "PhaseState",
    "Pinning",
    "PowerState",
    "StatusChange",
    "TransferProgress",
    "as_request",
]
