"""After the switchover: post at source, post at destination, complete. Roll forward only.

The host state cache follows seed 004's order: the instance's usage on the source (its pinned
pCPUs included) is released only after post-migration at the source succeeded; then the instance
record is updated (the migration ``completed``, the instance on its destination, the lock
released); then the destination's claim turns into usage.

The finish subflow has its own retry controller (:class:`RollForward`): a failing post step is
retried with backoff; when the retries run out only this subflow is reverted (its tasks undo
nothing) and the migration is recorded ``error`` with what is left. The VM stays on the
destination: nothing before the switchover is ever reverted from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskflow import retry

from ferry.config import MigrationSettings
from ferry.context import Context
from ferry.model import MigrationStatus
from ferry.tasks.base import LOG, FerryTask, describe, instance_of, migrate_data_of


class RollForward(retry.Retry):
    """Retry controller of the finish subflow: ``post_retries`` attempts, exponential backoff.

    When the retries run out the destination claim turns into usage (the instance runs there)
    and the source hold is dropped without releasing the source's usage: post at source may not
    have run, and the source's next driver report corrects it.

    Revert: (retries exhausted) record ``error`` with the failed steps as leftovers, release the
    destination claim (the instance now counts as usage there) and the instance lock.

    ``steps``: the names of the subflow's atoms (the flow names them; failures of other atoms
    are not this subflow's leftovers).
    """

    def __init__(self, *, steps: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = frozenset(steps)

    def execute(
        self, history: Any, context: Context, migration_id: str, settings: dict[str, Any]
    ) -> int:
        attempt = len(history) + 1
        if attempt > 1:
            delay = MigrationSettings.from_store(settings).post_retry_delay * 2 ** (attempt - 2)
            LOG.info(
                "migration %s: post-switchover attempt %d in %.1f s", migration_id, attempt, delay
            )
            context.clock.sleep(delay)
        context.migrations.set_status(migration_id, MigrationStatus.POST_MIGRATING)
        return attempt

    def on_failure(
        self, history: Any, context: Context, migration_id: str, settings: dict[str, Any]
    ) -> Any:
        if len(history) < MigrationSettings.from_store(settings).post_retries:
            return retry.RETRY
        return retry.REVERT  # this subflow only: the switchover is never undone

    def revert(
        self,
        history: Any,
        context: Context,
        migration_id: str,
        settings: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        try:
            failures = kwargs.get("flow_failures") or {}
            # flow_failures also holds failures from earlier phases (e.g. a host that failed its
            # check before the reschedule): only this subflow's steps are left over
            steps = [
                f"{name}: {describe(f)}"
                for name, f in sorted(failures.items())
                if name in self.steps
            ]
            for step in steps:
                context.migrations.add_leftover(migration_id, step)
            record = context.migrations.get(migration_id)
            error = (
                f"the VM runs on {record.destination}, but post-switchover steps failed after "
                f"{len(history)} attempt(s): {'; '.join(steps) or 'unknown failure'}"
            )
            context.claims.complete(migration_id)
            context.claims.release(migration_id)
            context.migrations.set_status(
                migration_id,
                MigrationStatus.ERROR,
                detail=error,
                error=error,
                unlock=record.instance,
            )
        except Exception:
            LOG.exception(
                "migration %s: could not record the post-switchover failure", migration_id
            )


class PostAtSource(FerryTask):
    """Clean the source: the driver undefines the old guest, removes local files unless storage
    is shared, disconnects volumes (Nova's ``post_live_migration_at_source``).

    Then, not before (seed 004), the instance's usage and pinned pCPUs on the source are
    released in the host state cache.

    Revert: nothing (the switchover is never undone; a failure is recorded by the finish retry).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        prepared_migrate_data: dict[str, Any],
    ) -> None:
        data = migrate_data_of(prepared_migrate_data)
        context.driver(data.source).post_live_migration_at_source(instance_of(instance), data)
        context.claims.release_source(migration_id)

    def revert(self, *args: Any, **kwargs: Any) -> None:
        return None


class PostAtDestination(FerryTask):
    """Finish on the destination: guest persistent and running, networks plugged
    (Nova's ``post_live_migration_at_destination``).

    Revert: nothing (roll forward only).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        prepared_migrate_data: dict[str, Any],
    ) -> None:
        data = migrate_data_of(prepared_migrate_data)
        context.driver(data.destination).post_live_migration_at_destination(
            instance_of(instance), data
        )

    def revert(self, *args: Any, **kwargs: Any) -> None:
        return None


class Complete(FerryTask):
    """Record the new host and ``completed``; the claim becomes usage (the driver now counts the
    instance on the destination), the instance lock is released.

    The order is seed 004's: the record (new host, ``completed``, lock released) first, then the
    destination claim turns into usage (its pCPUs pinned there).

    Revert: nothing (roll forward only).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        prepared_migrate_data: dict[str, Any],
        transfer_result: dict[str, Any],
    ) -> None:
        data = migrate_data_of(prepared_migrate_data)
        context.migrations.set_status(
            migration_id,
            MigrationStatus.COMPLETED,
            destination=data.destination,
            error=None,
            unlock=instance_of(instance).uuid,
        )
        context.claims.complete(migration_id)

    def revert(self, *args: Any, **kwargs: Any) -> None:
        return None
