"""Destination selection: the reschedule retry controller, the scheduler call and the claim."""

from __future__ import annotations

from typing import Any

from taskflow import retry

from ferry import errors
from ferry.context import Context
from ferry.scheduler import HostCandidate, select_destination
from ferry.tasks.base import LOG, FerryTask, instance_of, safe_revert


class Reschedule(retry.Retry):
    """Retry controller of the select-destination subflow (Nova's ``_find_destination`` loop).

    Provides the hosts to exclude (the source is never a candidate; every host that failed a check
    is excluded with its reason). A host check failure retries the subflow with the next host, up
    to ``max_attempts`` (0 = until the hosts run out); anything else reverts the whole migration.

    The tried hosts are read from the migration record, not from TaskFlow's retry history (which
    TaskFlow wipes on revert and mis-reloads after a resume).

    Revert: nothing to undo.
    """

    def execute(
        self,
        history: Any,
        context: Context,
        migration_id: str,
        request: dict[str, Any],
        settings: dict[str, Any],
    ) -> list[str]:
        # (on_failure receives the same arguments as execute: TaskFlow maps them once)
        return sorted(context.migrations.rejected_hosts(migration_id))

    def revert(self, history: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def on_failure(
        self,
        history: Any,
        context: Context,
        migration_id: str,
        request: dict[str, Any],
        settings: dict[str, Any],
    ) -> Any:
        _provided, failures = history[-1]
        host_failed = any(f.check(errors.MigrationPreCheckError) for f in failures.values())
        if not host_failed or request.get("destination"):
            return retry.REVERT_ALL
        max_attempts = int(request.get("max_attempts") or settings.get("max_attempts") or 0)
        tried = len(context.migrations.rejected_hosts(migration_id))
        if max_attempts and tried >= max_attempts:
            LOG.info("migration %s: %d host(s) tried, max_attempts reached", migration_id, tried)
            return retry.REVERT_ALL
        return retry.RETRY


def host_rejected(ctx: Context, migration_id: str, exc: errors.MigrationPreCheckError) -> None:
    ctx.migrations.record_attempt(
        migration_id,
        exc.host,
        "rejected",
        exc.reason if exc.phase == "check" else f"{exc.phase}: {exc.reason}",
    )


class Schedule(FerryTask):
    """Pick the destination: the forced one, or the scheduler's best host minus the exclusions.

    Raises :class:`NoValidHost` with every host's reason when none is left.
    Revert: nothing to undo (the attempt stays on the record as history).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        source_host: str,
        excluded_hosts: list[str],
        request: dict[str, Any],
    ) -> str:
        inst = instance_of(instance)
        rejected = context.migrations.rejected_hosts(migration_id)
        forced = request.get("destination")
        if forced:
            if forced in rejected:
                raise errors.NoValidHost({forced: rejected[forced]})
            destination = str(forced)
        else:
            infos = context.drivers.host_infos()
            claimed = context.claims.refresh_hosts(infos)
            by_name = {h.name: h for h in infos}
            if source_host not in by_name:
                raise errors.ComputeHostUnavailable(source_host, "no host information")
            candidates = [HostCandidate(h, *claimed.get(h.name, (0, 0, 0))) for h in infos]
            destination = select_destination(candidates, inst, by_name[source_host], rejected)
        context.migrations.record_attempt(
            migration_id, destination, "chosen", destination=destination
        )
        LOG.info("migration %s: destination %s chosen", migration_id, destination)
        return destination


class ClaimDestination(FerryTask):
    """Hold the instance's vCPUs, RAM and disk on the destination (atomic conditional update).

    A host without room after other claims fails its check (the reschedule moves on).
    Revert: release this migration's claim on that host.
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        destination: str,
        request: dict[str, Any],
    ) -> None:
        inst = instance_of(instance)
        if request.get("destination"):
            # a forced host skipped the scheduler, which caches every host's capacity
            context.claims.refresh_hosts([context.drivers.host_info(destination)])
        if not context.claims.claim(migration_id, destination, inst):
            exc = errors.MigrationPreCheckError(
                destination,
                "not enough free resources after the claims of other migrations",
                "claim",
            )
            host_rejected(context, migration_id, exc)
            raise exc

    def revert(
        self, context: Context, migration_id: str, destination: str, result: Any, **kwargs: Any
    ) -> None:
        safe_revert(
            context,
            migration_id,
            f"release of the claim on {destination}",
            lambda: context.claims.release(migration_id, destination),
        )
