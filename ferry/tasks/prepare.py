"""pre_live_migration on the destination (instance dir, volumes, networks)."""

from __future__ import annotations

from typing import Any

from ferry.context import Context
from ferry.tasks.base import FerryTask, instance_of, migrate_data_of, safe_revert


class PreLiveMigration(FerryTask):
    """Prepare the destination: the driver creates the instance directory, connects volumes and
    plugs networks (Nova's ``pre_live_migration``). Make before break: the source is untouched.

    Revert: the driver's rollback at the destination, which removes whatever pre_live_migration
    (or a partial transfer) left there; run even when this task itself failed half way.
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        migrate_data: dict[str, Any],
    ) -> dict[str, Any]:
        context.check_abort(migration_id, "before the destination was prepared")
        data = migrate_data_of(migrate_data)
        prepared = context.driver(data.destination).pre_live_migration(instance_of(instance), data)
        return prepared.to_dict()

    def revert(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        migrate_data: dict[str, Any],
        result: Any,
        **kwargs: Any,
    ) -> None:
        data = migrate_data_of(result if isinstance(result, dict) else migrate_data)
        safe_revert(
            context,
            migration_id,
            f"rollback at destination {data.destination}",
            lambda: context.driver(data.destination).rollback_live_migration_at_destination(
                instance_of(instance), data
            ),
        )
