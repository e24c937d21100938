"""ferry: live migration of running virtual machines as a revertible, resumable TaskFlow flow."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ferry.config import MigrationSettings, Settings, load_settings
from ferry.errors import (
    AbortTooLate,
    ComputeHostUnavailable,
    ConfigError,
    DatabaseUnavailable,
    DriverError,
    FerryError,
    HostNotFound,
    InstanceInvalidState,
    InstanceNotFound,
    InvalidMigrationState,
    JobBoardUnavailable,
    LeaseLost,
    MigrationCancelled,
    MigrationFailed,
    MigrationInProgress,
    MigrationNotFound,
    MigrationPreCheckError,
    NoValidHost,
    TransferFailed,
    UnableToMigrateToSelf,
)
from ferry.model import (
    Host,
    Instance,
    MigrateData,
    Migration,
    MigrationRequest,
    MigrationStatus,
)

if TYPE_CHECKING:
    from ferry.api import MigrationHandle, Orchestrator
    from ferry.context import Event

__version__ = "0.1.0"

#: imported on first use, so that ``import ferry.cli`` (and ``ferry --help``) does not load the
#: API with its TaskFlow engines and database layers
_LAZY = {"MigrationHandle": "ferry.api", "Orchestrator": "ferry.api", "Event": "ferry.context"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ferry' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "AbortTooLate",
    "ComputeHostUnavailable",
    "ConfigError",
    "DatabaseUnavailable",
    "DriverError",
    "Event",
    "FerryError",
    "Host",
    "HostNotFound",
    "Instance",
    "InstanceInvalidState",
    "InstanceNotFound",
    "InvalidMigrationState",
    "JobBoardUnavailable",
    "LeaseLost",
    "MigrateData",
    "Migration",
    "MigrationCancelled",
    "MigrationFailed",
    "MigrationHandle",
    "MigrationInProgress",
    "MigrationNotFound",
    "MigrationPreCheckError",
    "MigrationRequest",
    "MigrationSettings",
    "MigrationStatus",
    "NoValidHost",
    "Orchestrator",
    "Settings",
    "TransferFailed",
    "UnableToMigrateToSelf",
    "__version__",
    "load_settings",
]
