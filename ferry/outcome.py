"""The outcome rule, written once: which typed error explains a migration that did not complete.

The sentinel's revert writes the record's error line with it, and the runner raises the error it
names, so the record and the exception a caller gets always agree:

* an abort by request -> :class:`~ferry.errors.MigrationCancelled`;
* a host check that failed -> :class:`~ferry.errors.NoValidHost` with every rejected host's
  reason (the reschedule ran out of hosts or attempts), except for a forced destination, whose
  own :class:`~ferry.errors.MigrationPreCheckError` is the answer;
* anything else -> :class:`~ferry.errors.MigrationFailed` with the record's status and error.

``cause`` is an exception or a TaskFlow ``Failure`` (read back from the logbook after a resume it
may hold no exception object, only its type names: ``Failure.check`` still answers).
"""

from __future__ import annotations

from typing import Any

from ferry.errors import (
    FerryError,
    MigrationCancelled,
    MigrationFailed,
    MigrationPreCheckError,
    NoValidHost,
)
from ferry.model import Migration, MigrationStatus


def rejected_hosts(record: Migration) -> dict[str, str]:
    """Every host the scheduler's loop rejected, with its reason."""
    return {a.host: a.reason or "" for a in record.attempts if a.outcome == "rejected"}


def _is(cause: Any, cls: type[BaseException]) -> bool:
    if isinstance(cause, BaseException):
        return isinstance(cause, cls)
    check = getattr(cause, "check", None)
    return bool(check(cls)) if callable(check) else False


def _exception(cause: Any) -> BaseException | None:
    if isinstance(cause, BaseException):
        return cause
    exc = getattr(cause, "exception", None)
    return exc if isinstance(exc, BaseException) else None


def host_failure(record: Migration, cause: Any) -> FerryError | None:
    """The :class:`NoValidHost` (or forced destination's check error) that ``cause`` amounts
    to; None when ``cause`` is not a failed host check."""
    if _is(cause, NoValidHost):
        exc = _exception(cause)
        return exc if isinstance(exc, NoValidHost) else NoValidHost(rejected_hosts(record))
    if _is(cause, MigrationPreCheckError):
        rejected = rejected_hosts(record)
        if record.requested_destination and len(rejected) <= 1:
            exc = _exception(cause)
            if isinstance(exc, FerryError):
                return exc
            # read back from the logbook without its exception object: keep its message
            rebuilt = MigrationPreCheckError(record.requested_destination, "")
            rebuilt.message = str(getattr(cause, "exception_str", cause))
            return rebuilt
        return NoValidHost(rejected)
    return None


def outcome_error(record: Migration, cause: Any) -> FerryError | None:
    """None for a completed record, else the typed error that explains it (with
    ``.migration`` set to the record)."""
    if record.status == MigrationStatus.COMPLETED:
        return None
    error: FerryError | None = None
    if record.status == MigrationStatus.CANCELLED:
        error = MigrationCancelled(record.id)
    elif record.status == MigrationStatus.FAILED:
        error = host_failure(record, cause)
    if error is None:
        exc = _exception(cause)
        error = MigrationFailed(record.id, record.status, record.error or (str(exc) if exc else ""))
        error.__cause__ = exc
    error.migration = record
    return error
