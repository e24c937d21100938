""":class:`DrainService`: what the embedding API does with drains -- check the request, plan,
record (disabling the host in the same transaction), run, resume, abort, undrain.

Bad input raises before anything is recorded: HostNotFound (the host or ``to``),
HostDraining (a drain of the host is running), NoValidHost (no other host is up and enabled,
with each host's reason), ConfigError (``max_parallel`` < 1, ``to`` the drained host, ``to`` with
``to_group`` or ``not_together``, an unknown group or order, a ``not_together`` group of one),
InstanceNotFound (a ``not_together`` guest).
"""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferry import errors
from ferry.drain.planner import plan_drain
from ferry.drain.run import DrainRun
from ferry.model import MigrationRequest, MigrationStatus
from ferry.model.drain import ORDERS, Drain, DrainGuest, GuestState, PlanEntry
from ferry.persistence.drains import DrainRepository
from ferry.runner.runner import Runner
from ferry.scheduler.scheduler import HostScheduler
from ferry.tasks.scheduling import refresh_host_states


@dataclass(frozen=True)
class DrainOptions:
    """A drain request: ``max_parallel`` None = the per-source limit (``[limits]``)."""

    host: str
    max_parallel: int | None = None
    to: str | None = None
    to_group: str | None = None
    order: str = "smallest"
    reason: str | None = None
    submit: bool = False  # post the migrations to the job store (conductors run them)
    #: anti-affinity groups: the guests (names or UUIDs) of each are kept on different hosts
    not_together: tuple[tuple[str, ...], ...] = ()


class DrainHandle:
    """A drain running in a background thread (``Orchestrator.drain(..., wait=False)``)."""

    def __init__(
        self, service: DrainService, drain_id: str, future: concurrent.futures.Future[Drain]
    ) -> None:
        self.id = drain_id
        self._service = service
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Drain:
        """The finished drain (its report: each guest moved where, failed or skipped, why)."""
        return self._future.result(timeout)

    @property
    def drain(self) -> Drain:
        """The record as it is now."""
        return self._service.drains.get(self.id)

    def abort(self) -> Drain:
        """Stop the drain (see :meth:`DrainService.abort`) and wait for its end."""
        self._service.abort(self.id)
        return self.wait()


class DrainService:
    def __init__(
        self,
        runner: Runner,
        create: Callable[[MigrationRequest], str],
        submit: Callable[[MigrationRequest], str] | None = None,
    ) -> None:
        self.runner = runner
        self.context = runner.context
        self.drains = DrainRepository(self.context.db)
        self.run_ = DrainRun(runner, self.drains, create, submit=submit)

    # ----------------------------------------------------------------- planning
    def plan(self, options: DrainOptions) -> list[PlanEntry]:
        """Check ``options`` and plan the drain; nothing is recorded."""
        self._check(options)
        refresh_host_states(self.context, force=True)
        scheduler = HostScheduler(self.context.db, self.context.settings.scheduler)
        states = self.context.claims.host_states()
        others = {
            s.host.name: ("host is down" if not s.host.up else "host is disabled")
            for s in states
            if s.host.name != options.host and not (s.host.up and s.host.enabled)
        }
        if len(others) == len(states) - 1:
            raise errors.NoValidHost(
                others or {options.host: "the only host: there is nowhere to drain it to"}
            )
        if options.to_group and not scheduler.group_known(options.to_group):
            raise errors.ConfigError(f"unknown host group {options.to_group!r}")
        drivers = self.context.drivers
        apart = [[drivers.find_instance(ref) for ref in group] for group in options.not_together]
        return plan_drain(
            self.run_.guests_on(options.host),
            states,
            options.host,
            to=options.to,
            filters=scheduler.filters(options.to_group),
            weighers=scheduler.weighers,
            order=options.order,
            apart=apart,
        )

    def _check(self, o: DrainOptions) -> None:
        drivers = self.context.drivers
        if not drivers.has_host(o.host):
            raise errors.HostNotFound(o.host)
        if o.max_parallel is not None and o.max_parallel < 1:
            raise errors.ConfigError(f"--max-parallel must be >= 1, got {o.max_parallel}")
        if o.order not in ORDERS:
            raise errors.ConfigError(f"order must be one of {', '.join(ORDERS)}, got {o.order!r}")
        if o.to is not None:
            if o.to_group:
                raise errors.ConfigError("--to and --to-group cannot be combined")
            if o.to == o.host:
                raise errors.ConfigError(f"--to {o.to} is the host being drained")
            if not drivers.has_host(o.to):
                raise errors.HostNotFound(o.to)
        for group in o.not_together:
            if len(set(group)) < 2:
                raise errors.ConfigError(f"--not-together {','.join(group)}: name 2 guests or more")
            if o.to is not None:
                raise errors.ConfigError("--to and --not-together cannot be combined")
            for ref in group:
                drivers.find_instance(ref)  # InstanceNotFound
        busy = self.drains.active(o.host)
        if busy is not None:
            raise errors.HostDraining(f"host {o.host!r} is already being drained (drain {busy})")

    # ------------------------------------------------------------------ running
    def start(self, options: DrainOptions) -> str:
        """Plan and record the drain (its host disabled for scheduling in the same transaction);
        returns its id. Nothing runs yet (:meth:`run`)."""
        plan = self.plan(options)
        queued = sum(1 for e in plan if e.destination)
        limit = options.max_parallel
        if limit is None:
            limit = self.context.settings.limits.per_source or max(1, queued)
        guests = [
            DrainGuest(
                e.instance_uuid,
                e.instance,
                state=(GuestState.QUEUED if e.destination else GuestState.SKIPPED).value,
                destination=e.destination,
                reason=_skip_reason(e),
                position=i,
            )
            for i, e in enumerate(plan)
        ]
        drain_id = str(uuid.uuid4())
        opts: dict[str, Any] = {
            "max_parallel": limit,
            "to": options.to,
            "to_group": options.to_group,
            "order": options.order,
            "submit": options.submit,
            "not_together": [
                sorted({self.context.drivers.find_instance(r).uuid for r in group})
                for group in options.not_together
            ],
        }
        self.drains.create(
            drain_id, options.host, reason=options.reason, options=opts, guests=guests
        )
        return drain_id

    def run(self, drain_id: str, stopping: threading.Event | None = None) -> Drain:
        """Drive the drain to its end (also: continue one whose process died); ``stopping``:
        see :meth:`DrainRun.run`."""
        return self.run_.run(drain_id, stopping)

    def abort(self, drain_id: str) -> Drain:
        """No new migrations; the ones in flight abort before their switchover. A drain whose
        process is gone is finished here; a live one's process does it within one poll."""
        drain = self.drains.get(drain_id)
        if drain.done:
            return drain
        self.drains.request_abort(drain_id)
        for guest in drain.guests:  # at once, not at the driver's next poll
            if guest.state == GuestState.RUNNING.value and guest.migration:
                record = self.context.migrations.get(guest.migration)
                if not record.done and record.status != MigrationStatus.POST_MIGRATING:
                    self.context.migrations.request_abort(guest.migration)
        try:
            return self.run_.run(drain_id)
        except errors.MigrationInProgress:
            return self.drains.get(drain_id)

    def disable_host(self, host: str, reason: str | None) -> None:
        """Disable ``host`` for scheduling (no drain); HostDraining while one runs."""
        if not self.context.drivers.has_host(host):
            raise errors.HostNotFound(host)
        self.drains.disable(host, reason)

    def enable_host(self, host: str) -> str | None:
        """Enable ``host`` again, however it was disabled; returns the drain that disabled it.
        HostDraining while a drain of ``host`` is running."""
        if not self.context.drivers.has_host(host):
            raise errors.HostNotFound(host)
        return self.drains.enable(host)


def _skip_reason(e: PlanEntry) -> str | None:
    if e.skipped and e.reasons:
        return f"{e.skipped}: " + "; ".join(f"{h}: {r}" for h, r in sorted(e.reasons.items()))
    return e.skipped
