"""Request validation (Nova's LiveMigrationTask._check_instance_is_active / _check_host_is_up)."""

from __future__ import annotations

from typing import Any

from ferry import errors
from ferry.context import Context
from ferry.model import Instance, MigrationRequest, PowerState
from ferry.tasks.base import FerryTask

MIGRATABLE_STATES = (PowerState.RUNNING.value, PowerState.PAUSED.value)


def validate_request(ctx: Context, instance: Instance, request: MigrationRequest) -> None:
    """Raise a typed error when the request cannot be carried out. Read-only."""
    if instance.power_state not in MIGRATABLE_STATES:
        raise errors.InstanceInvalidState(instance.name, instance.power_state)
    source = ctx.drivers.host_status(instance.host)
    if not source.up:
        raise errors.ComputeHostUnavailable(instance.host, "down")
    if request.destination is not None:
        if not ctx.drivers.has_host(request.destination):
            raise errors.HostNotFound(request.destination)
        if request.destination == instance.host:
            raise errors.UnableToMigrateToSelf(instance.name, instance.host)


class Validate(FerryTask):
    """Instance running or paused, source host up, destination known and not the source.

    Provides the instance (as found now) and the source host.
    Revert: nothing to undo (read-only).
    """

    def execute(
        self, context: Context, migration_id: str, request: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        uuid, recorded_source = context.migrations.fields(migration_id, "instance_uuid", "source")
        instance = context.drivers.find_instance(uuid)
        validate_request(context, instance, MigrationRequest.from_dict(request))
        if instance.host != recorded_source:  # it moved since the request was accepted
            context.migrations.update(migration_id, source=instance.host)
        return instance.to_dict(), instance.host
