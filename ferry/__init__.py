"""ferry: live migration of running virtual machines as a revertible, resumable TaskFlow flow."""

from ferry.api import MigrationHandle, Orchestrator
from ferry.config import MigrationSettings, Settings, load_settings
from ferry.context import Event
from ferry.errors import (
    AbortTooLate,
    ComputeHostUnavailable,
    ConfigError,
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
from ferry.model import Host, Instance, MigrateData, Migration, MigrationStatus

__version__ = "0.1.0"

__all__ = [
    "AbortTooLate",
    "ComputeHostUnavailable",
    "ConfigError",
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
