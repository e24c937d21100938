"""Where XAPI problems become ferry's typed errors: a refusal (:class:`.records.Refused`) or a XAPI
problem inside a driver step is raised as the step's error, its message redacted and
``from None`` (no chained XAPI exception reaches TaskFlow's persisted failures)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from ferry.errors import DriverError, FerryError, MigrationPreCheckError

from .faults import Redactor
from .records import XAPI_PROBLEMS, Refused


@contextlib.contextmanager
def precheck(redact: Redactor, host: str, phase: str) -> Iterator[None]:
    """Refusals and XAPI problems -> :class:`MigrationPreCheckError` on ``host``."""
    try:
        yield
    except Refused as exc:
        raise MigrationPreCheckError(host, str(exc), phase) from None
    except XAPI_PROBLEMS as exc:
        raise MigrationPreCheckError(host, redact(str(exc)), phase) from None


@contextlib.contextmanager
def failing(
    redact: Redactor,
    host: str,
    operation: str,
    error: Callable[[str, str], FerryError] | None = None,
) -> Iterator[None]:
    """Refusals and XAPI problems -> :class:`DriverError` (or ``error(host, reason)``)."""

    def make(reason: str) -> FerryError:
        if error is not None:
            return error(host, reason)
        return DriverError(host, operation, reason)

    try:
        yield
    except Refused as exc:
        raise make(str(exc)) from None
    except XAPI_PROBLEMS as exc:
        raise make(redact(str(exc))) from None
