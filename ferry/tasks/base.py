"""What every ferry task shares: typed access to the resolver and safe revert helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from taskflow import task
from taskflow.types import failure as tf_failure

from ferry.compat import type_names
from ferry.context import Context
from ferry.errors import FerryError, MigrationCancelled, MigrationPreCheckError
from ferry.model import Instance, MigrateData

LOG = logging.getLogger("ferry.tasks")


class FerryTask(task.Task):
    """Base task. Subclasses set ``phase`` (the atom name) and implement execute/revert."""

    def __init__(self, name: str, provides: Any = None, **kwargs: Any) -> None:
        super().__init__(name=name, provides=provides, **kwargs)


def is_failure(result: Any) -> bool:
    return isinstance(result, tf_failure.Failure)


def describe(failure_or_exc: Any) -> str:
    """One line for a Failure or an exception (ferry errors print their own message)."""
    if isinstance(failure_or_exc, tf_failure.Failure):
        exc = failure_or_exc.exception
        if isinstance(exc, FerryError):
            return str(exc)
        names = type_names(failure_or_exc)
        kind = names[0].rsplit(".", 1)[-1] if names else "Error"
        return f"{kind}: {failure_or_exc.exception_str}"
    if isinstance(failure_or_exc, FerryError):
        return str(failure_or_exc)
    return f"{type(failure_or_exc).__name__}: {failure_or_exc}"


def primary_failure(failures: Any) -> Any:
    """Of several TaskFlow failures, the one that explains the outcome: a real error first, then
    a host check failure (the reschedule ran out of hosts), then an abort."""
    failures = list(failures)

    def rank(f: Any) -> int:
        if f.check(MigrationCancelled):
            return 2
        if f.check(MigrationPreCheckError):
            return 1
        return 0

    return min(failures, key=rank) if failures else None


def safe_revert(ctx: Context, migration_id: str, what: str, undo: Callable[[], Any]) -> None:
    """Run an undo step; never raise out of a revert: record the leftover instead."""
    try:
        undo()
    except Exception as exc:
        LOG.exception("migration %s: %s failed during revert", migration_id, what)
        try:
            ctx.migrations.add_leftover(migration_id, f"{what}: {describe(exc)}")
        except Exception:  # pragma: no cover - database gone as well: nothing more to do
            LOG.exception("migration %s: cannot record leftover", migration_id)


def instance_of(data: dict[str, Any]) -> Instance:
    return Instance.from_dict(data)


def migrate_data_of(data: dict[str, Any]) -> MigrateData:
    return MigrateData.from_dict(data)
