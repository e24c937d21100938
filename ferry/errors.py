"""Typed errors raised by ferry.

Each error carries plain, JSON-friendly arguments so TaskFlow's ``Failure`` objects keep them
across a crash (``Failure.exception_args``). Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any


class FerryError(Exception):
    """Base class of every error ferry raises on purpose.

    ``migration`` is set (to the :class:`~ferry.model.Migration` record) on errors that end a run.
    """

    migration: Any = None

    def __init__(self, message: str, *args: Any) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FerryError):
    """The configuration (file, flag, environment) is invalid."""


class InstanceNotFound(FerryError):
    """No configured host has the instance; ``unasked``: why some could not be asked (then the
    instance may well exist there, and the message says so)."""

    def __init__(self, ref: str, unasked: list[str] | None = None) -> None:
        self.unasked = list(unasked or [])
        if self.unasked:
            message = (
                f"instance {ref!r} not found on the hosts that answered; "
                f"could not ask: {'; '.join(self.unasked)}"
            )
        else:
            message = f"instance {ref!r} not found on any configured host"
        super().__init__(message, ref)
        self.ref = ref


class InstanceInvalidState(FerryError):
    def __init__(self, name: str, state: str, expected: str = "running or paused") -> None:
        super().__init__(
            f"instance {name!r} is {state}; it must be {expected} to migrate", name, state, expected
        )
        self.state = state


class HostNotFound(FerryError):
    def __init__(self, host: str) -> None:
        super().__init__(f"host {host!r} is not a configured host", host)
        self.host = host


class ComputeHostUnavailable(FerryError):
    def __init__(self, host: str, why: str = "down") -> None:
        super().__init__(f"host {host!r} is unavailable ({why})", host, why)
        self.host = host


class UnableToMigrateToSelf(FerryError):
    def __init__(self, instance: str, host: str) -> None:
        super().__init__(
            f"instance {instance!r} already runs on {host!r}; cannot migrate to itself",
            instance,
            host,
        )


class MigrationInProgress(FerryError):
    """Another migration holds the instance, or another runner holds this migration's lease."""


class MigrationNotFound(FerryError):
    def __init__(self, migration_id: str) -> None:
        super().__init__(f"migration {migration_id!r} not found", migration_id)
        self.migration_id = migration_id


class NoValidHost(FerryError):
    """No destination passed the filters and the checks. ``reasons`` maps host -> why not."""

    def __init__(self, reasons: dict[str, str]) -> None:
        if reasons:
            detail = "; ".join(f"{h}: {r}" for h, r in sorted(reasons.items()))
        else:
            detail = "no candidate hosts"
        super().__init__(f"no valid host was found ({detail})", reasons)
        self.reasons = dict(reasons)


class MigrationPreCheckError(FerryError):
    """A destination failed a pre-migration check; the reschedule moves on to the next host."""

    def __init__(self, host: str, reason: str, phase: str = "check") -> None:
        super().__init__(f"{phase} failed on {host}: {reason}", host, reason, phase)
        self.host = host
        self.reason = reason
        self.phase = phase


class DriverError(FerryError):
    """A driver operation failed (not a check: this reverts the migration)."""

    def __init__(self, host: str, operation: str, reason: str) -> None:
        super().__init__(f"{operation} on {host} failed: {reason}", host, operation, reason)
        self.host = host
        self.operation = operation
        self.reason = reason


class TransferFailed(DriverError):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host, "transfer", reason)


class TransferTimeout(TransferFailed):
    def __init__(self, host: str, seconds: float) -> None:
        super().__init__(host, f"did not complete within the completion timeout ({seconds:.0f} s)")
        self.args = (host, seconds)


class MigrationCancelled(FerryError):
    def __init__(self, migration_id: str, when: str = "") -> None:
        suffix = f" {when}" if when else ""
        super().__init__(
            f"migration {migration_id} was aborted by request{suffix}", migration_id, when
        )


class AbortTooLate(FerryError):
    def __init__(self, migration_id: str, status: str) -> None:
        super().__init__(
            f"migration {migration_id} cannot be aborted: it is {status}", migration_id, status
        )


class InvalidMigrationState(FerryError):
    """An action that the migration's status does not allow (e.g. force-complete of a finished
    or queued migration)."""

    def __init__(self, migration_id: str, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} migration {migration_id}: it is {status}", migration_id, status
        )


class LeaseLost(FerryError):
    """This runner lost its lease (another runner took the migration over)."""


class JobBoardUnavailable(FerryError):
    """The job board cannot be reached or refused the request (the message names its URL with
    any password masked)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the job board {url}: {reason}", url, reason)
        self.url = url
        self.reason = reason


class DatabaseUnavailable(FerryError):
    """ferry's database refused a write (a full disk, a read-only file, a lock held past the
    busy timeout, a server gone): the run stopped where it was and is resumable (``ferry resume
    ID``) once the database takes writes again."""

    def __init__(self, migration_id: str, reason: str) -> None:
        super().__init__(
            f"migration {migration_id} stopped: the database refused a write ({reason}); it is "
            f"resumable: run `ferry resume {migration_id}` once the database takes writes again",
            migration_id,
            reason,
        )
        self.migration_id = migration_id
        self.reason = reason


class MigrationFailed(FerryError):
    """A migration ended ``failed`` or ``error``; ``status`` and the record's error say why."""

    def __init__(self, migration_id: str, status: str, error: str) -> None:
        super().__init__(
            f"migration {migration_id} ended {status}: {error}", migration_id, status, error
        )
        self.migration_id = migration_id
        self.status = status
        self.error = error


class DrainNotFound(FerryError):
    def __init__(self, drain_id: str) -> None:
        super().__init__(f"drain {drain_id!r} not found", drain_id)
        self.drain_id = drain_id


class HostDraining(FerryError):
    """A drain of the host is running (a second drain, or ``undrain``, is refused)."""
