"""Host checks of the select-destination subflow. A failing check records the host's reason
on the migration record and raises MigrationPreCheckError (the reschedule tries the next host)."""

from __future__ import annotations

from typing import Any

from ferry import errors
from ferry.config import MigrationSettings
from ferry.context import Context
from ferry.scheduler.filters import hypervisor_mismatch
from ferry.tasks.base import FerryTask, instance_of, is_failure, migrate_data_of, safe_revert
from ferry.tasks.scheduling import host_rejected
from ferry.transport import Transport


def _colon(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def _checked(ctx: Context, migration_id: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except errors.MigrationPreCheckError as exc:
        host_rejected(ctx, migration_id, exc)
        raise


class CheckHypervisor(FerryTask):
    """Destination up and enabled, same hypervisor type, version not older than the source's
    (Nova's ``_check_compatible_with_source_hypervisor``; forced hosts skip the scheduler, not
    this check).

    Revert: nothing to undo (read-only).
    """

    def execute(
        self, context: Context, migration_id: str, source_host: str, destination: str
    ) -> None:

        def check() -> None:
            src = context.drivers.host_status(source_host)
            dst = context.drivers.host_status(destination)
            if not dst.up:
                raise errors.MigrationPreCheckError(destination, "host is down", "check-hypervisor")
            if not dst.enabled:
                raise errors.MigrationPreCheckError(
                    destination, "host is disabled", "check-hypervisor"
                )
            maintenance = context.claims.maintenance_of(destination)
            if maintenance is not None:
                disabled = (
                    f"host is disabled for maintenance (drain {maintenance['drain']})"
                    if maintenance["drain"]
                    else "host is disabled" + _colon(maintenance["reason"])
                )
                raise errors.MigrationPreCheckError(destination, disabled, "check-hypervisor")
            why = hypervisor_mismatch(src, dst)
            if why:
                raise errors.MigrationPreCheckError(destination, why, "check-hypervisor")

        _checked(context, migration_id, check)


class CheckDestination(FerryTask):
    """The destination's driver checks it can take the instance and decides block migration when
    the request leaves it open (block migration iff storage is not shared).

    The transport options of the settings (``[libvirt]``: TLS, parallel connections, ...) are
    the driver's to check on this destination.

    The pCPUs the scheduler claimed for a pinned guest replace the driver's own pick in the
    migrate data (``MigrateData.pinning``).

    Revert: the driver's cleanup of the destination check data.
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        destination: str,
        request: dict[str, Any],
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        inst = instance_of(instance)
        driver = context.driver(destination)
        transport = Transport.of(MigrationSettings.from_store(settings or {}))
        data = _checked(
            context,
            migration_id,
            driver.check_can_live_migrate_destination,
            inst,
            destination,
            request.get("block_migration"),
            None if transport.plain else transport,
        )
        claimed = context.claims.pinning(migration_id, destination)
        if claimed is not None:  # the scheduler's claimed pCPUs win over the driver's own pick
            data = data.with_pinning(claimed)
        return data.to_dict()

    def revert(
        self, context: Context, migration_id: str, destination: str, result: Any, **kwargs: Any
    ) -> None:
        if result is None or is_failure(result):
            return
        safe_revert(
            context,
            migration_id,
            f"cleanup of the destination check on {destination}",
            lambda: context.driver(destination).cleanup_live_migration_destination_check(
                destination, migrate_data_of(result)
            ),
        )


class CheckSource(FerryTask):
    """The source's driver checks the migration against the destination's data; then the
    destination check data is cleaned up (as Nova does once both checks ran).

    Provides the migrate data used by every later phase.
    Revert: nothing of its own (the destination check's revert cleans up).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        source_host: str,
        destination: str,
        dest_check_data: dict[str, Any],
    ) -> dict[str, Any]:
        inst = instance_of(instance)
        check_data = migrate_data_of(dest_check_data)
        try:
            data = context.driver(source_host).check_can_live_migrate_source(inst, check_data)
        except errors.MigrationPreCheckError as exc:
            # the source refused *this destination*: exclude the destination, not the source
            exc = errors.MigrationPreCheckError(destination, exc.reason, "check-source")
            host_rejected(context, migration_id, exc)
            raise exc from None
        context.driver(destination).cleanup_live_migration_destination_check(
            destination, check_data
        )
        context.migrations.update(
            migration_id, destination=destination, block_migration=data.block_migration
        )
        return data.to_dict()
