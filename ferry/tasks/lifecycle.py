"""The sentinel (first atom: its revert is the migration's last word when it fails)."""

from __future__ import annotations

from typing import Any

from ferry import errors
from ferry.context import Context
from ferry.model import MigrationStatus
from ferry.outcome import host_failure
from ferry.tasks.base import LOG, FerryTask, describe, primary_failure


def summarise_failures(
    ctx: Context, migration_id: str, flow_failures: dict[str, Any]
) -> tuple[bool, str]:
    """(cancelled?, error line) for the failures that reverted the flow (the outcome rule of
    :mod:`ferry.outcome`, which the runner raises from the same record)."""
    failures = list(flow_failures.values())
    cancelled = any(f.check(errors.MigrationCancelled) for f in failures)
    cancelled = cancelled or bool(ctx.migrations.field(migration_id, "abort_requested"))
    if cancelled:
        return True, f"{errors.MigrationCancelled(migration_id)}; it was reverted"
    main = primary_failure(failures)
    if main is None:
        return cancelled, "reverted"
    explained = host_failure(ctx.migrations.get(migration_id), main)
    if isinstance(explained, errors.NoValidHost):
        return cancelled, str(explained)
    return cancelled, describe(main)


class Sentinel(FerryTask):
    """Marks the migration as being prepared and holds the instance lock.

    Revert: mark the record ``failed`` (``cancelled`` after an abort; ``error`` when an undo step
    left something behind) with the error, release any claim this migration still holds, release
    the instance lock. Never raises.
    """

    def execute(self, context: Context, migration_id: str) -> None:
        if not context.migrations.start(migration_id, MigrationStatus.PREPARING):
            raise errors.MigrationCancelled(migration_id, "before it started")

    def revert(
        self,
        context: Context,
        migration_id: str,
        result: Any,
        flow_failures: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        try:
            cancelled, error = summarise_failures(context, migration_id, flow_failures)
            context.claims.release(migration_id)
            record = context.migrations.get(migration_id)
            status = MigrationStatus.CANCELLED if cancelled else MigrationStatus.FAILED
            if record.leftovers:  # something could not be undone: an operator must look
                status = MigrationStatus.ERROR
                error = f"{error}; left over: {'; '.join(record.leftovers)}"
            context.migrations.set_status(
                migration_id, status, detail=error, error=error, unlock=record.instance
            )
        except Exception:
            LOG.exception("migration %s: sentinel revert could not finish", migration_id)
