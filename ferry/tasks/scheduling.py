"""Destination selection: the reschedule retry controller, the scheduler call and the claim
(with the exact pCPUs of a pinned guest)."""

from __future__ import annotations

import functools
from typing import Any

from taskflow import retry

from ferry import errors
from ferry.context import Context, refresh_host_states
from ferry.model import Instance, MigrationRequest
from ferry.scheduler.claims import NO_ROOM
from ferry.scheduler.scheduler import HostScheduler, anti_affinity
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


def validate_placement(context: Context, instance: Instance, request: MigrationRequest) -> None:
    """Check a request's ``to_group`` and ``not_with`` before anything is created.

    :raises ConfigError: combined with a forced destination, an unknown host group, the
        instance named in its own ``not_with``.
    :raises InstanceNotFound: a ``not_with`` instance does not exist.
    """
    if not request.to_group and not request.not_with:
        return
    if request.destination:
        raise errors.ConfigError(
            "a forced destination skips the scheduler: it cannot be combined with a host group "
            "or anti-affinity"
        )
    if request.to_group:
        scheduler = HostScheduler(context.db, context.settings.scheduler)
        if not scheduler.group_known(request.to_group):  # a label added since the last refresh?
            refresh_host_states(context, force=True)
        if not scheduler.group_known(request.to_group):
            raise errors.ConfigError(
                f"unknown host group {request.to_group!r} (neither in [scheduler.groups] nor on "
                "any host's group/groups label)"
            )
    for ref in request.not_with:
        other = context.drivers.find_instance(ref)
        if other.uuid == instance.uuid:
            raise errors.ConfigError(f"{instance.name} cannot be kept away from itself")


def avoided_hosts(context: Context, request: dict[str, Any]) -> dict[str, str]:
    """Host -> reason for the hosts ``not_with`` (anti-affinity) rules out: where the named
    instances run (asked of their drivers) and where their migrations hold claims."""
    refs = [str(r) for r in request.get("not_with") or ()]
    if not refs:
        return {}
    named = []
    for ref in refs:
        try:
            named.append(context.drivers.find_instance(ref))
        except errors.InstanceNotFound:
            LOG.info("anti-affinity: instance %s no longer exists", ref)
    return anti_affinity(named, context.claims.list())


class Schedule(FerryTask):
    """Pick the destination: the forced one, or the scheduler's best host minus the exclusions.

    The scheduler reads the host state cache (refreshed from the drivers when older than
    ``[scheduler] host_state_ttl``) and applies the filters (up/enabled, not the source,
    hypervisor, capacity after claims, ``to_group``, ``not_with``, NUMA cell fit of a pinned
    guest) and the weighers of ``[scheduler]``.

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
            refresh_host_states(context)
            scheduler = HostScheduler(context.db, context.settings.scheduler)
            select = functools.partial(
                scheduler.select,
                inst,
                source_host,
                rejected,
                to_group=request.get("to_group"),
                avoid=avoided_hosts(context, request),
            )
            try:
                destination = select()
            except errors.ComputeHostUnavailable:  # the source is not cached yet
                context.claims.refresh_hosts([context.drivers.host_info(source_host)])
                destination = select()
        context.migrations.record_attempt(
            migration_id, destination, "chosen", destination=destination
        )
        LOG.info("migration %s: destination %s chosen", migration_id, destination)
        return destination


class ClaimDestination(FerryTask):
    """Hold the instance's vCPUs, RAM and disk on the destination (atomic conditional update).

    For a guest with pinned CPUs the claim also holds the exact pCPUs of one NUMA cell, in the
    same transaction (seed 003, seed 004); the instance's usage on the source is held until
    post-migration there. The destination's state is read from its driver first (one
    hypervisor), so the claim and its pinning are made on what the host has now plus what other
    migrations claimed. A host without room after the other claims fails its check (the
    reschedule moves on); so does one that anti-affinity (``not_with``) rules out once the claim
    is made (a race with another instance's schedule).
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
        now = context.claims.now()
        reports = [context.drivers.host_info(destination)]
        if request.get("destination"):
            # a forced host skipped the scheduler, which caches the source too
            reports.append(context.drivers.host_info(inst.host))
        context.claims.refresh_hosts(reports, reported_at=now)
        result = context.claims.claim_resources(migration_id, destination, inst, source=inst.host)
        if not result.ok:
            exc = errors.MigrationPreCheckError(destination, result.reason or NO_ROOM, "claim")
            host_rejected(context, migration_id, exc)
            raise exc
        # anti-affinity once more, now that this claim is visible to the others: two instances
        # kept apart that were scheduled at the same moment (or one suspended after its
        # schedule, waiting for a slot) cannot both hold the same host
        clash = avoided_hosts(context, request).get(destination)
        if clash is not None:
            context.claims.release(migration_id, destination)
            exc = errors.MigrationPreCheckError(destination, clash, "claim")
            host_rejected(context, migration_id, exc)
            raise exc
        if result.pinning is not None:
            LOG.info(
                "migration %s: pCPUs %s of NUMA cell %d claimed on %s",
                migration_id,
                list(result.pinning.vcpu_to_pcpu),
                result.pinning.cell,
                destination,
            )

    def revert(
        self, context: Context, migration_id: str, destination: str, result: Any, **kwargs: Any
    ) -> None:
        safe_revert(
            context,
            migration_id,
            f"release of the claim on {destination}",
            lambda: context.claims.release(migration_id, destination),
        )
