""":class:`DrainRun`: drives a drain's migrations, at most ``max_parallel`` in flight.

Each guest's migration is an ordinary migration record, created by the embedding API's
``create`` (validation, record, instance lock, logbook) and run by the one
:class:`~ferry.runner.runner.Runner`; the drain links it from its guest. The drain itself has a
lease (the runner's lease rows, keyed by the drain id), so one process drives it and a dead
one's drain is taken over by ``resume``.

Resume: guests whose migration is in flight are run again through the runner (its own resume
and reconciliation); a queued guest whose instance is locked by a migration from the drained host
(a crash between creating the migration and linking it) gets that migration. Abort: no new
migration starts; the ones in flight are asked to abort (those past their switchover complete);
the drain ends ``cancelled``. One guest failing never stops the others. Guests that appear on the
host during the drain are added and moved too; one still locked by another migration (it was
arriving when the drain began) waits until that migration ends.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ferry import errors
from ferry.context import Event
from ferry.drain.planner import drain_status, not_running_reason, ordered
from ferry.jobs.limits import (
    WAITING_STATUSES,
    SlotRepository,
    unsuspend,
    wait_queued,
    watch_destination,
)
from ferry.model import Instance, MigrationRequest, MigrationStatus
from ferry.model.drain import Drain, DrainGuest, DrainStatus, GuestState
from ferry.persistence.drains import DrainRepository
from ferry.runner.runner import FINISHED_FLOW_STATES, Runner

LOG = logging.getLogger(__name__)

#: how long the driver waits for a migration to end before it looks again (abort, new guests)
POLL_SECONDS = 0.2


class DrainRun:
    """Drives drains (see the module doc). ``create``: makes a migration of a request and
    returns its id without running it (``Orchestrator.create``); ``submit``: makes it and posts
    it to the job store (``Orchestrator.submit``), for drains with the ``submit`` option: their
    migrations are run by conductors, and this driver only starts them (at most
    ``max_parallel`` unfinished) and follows their records."""

    def __init__(
        self,
        runner: Runner,
        drains: DrainRepository,
        create: Callable[[MigrationRequest], str],
        *,
        submit: Callable[[MigrationRequest], str] | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.runner = runner
        self.context = runner.context
        self.drains = drains
        self.create = create
        self.submit = submit
        self.poll = poll
        self.slots = SlotRepository(self.context.db, self.context.settings.limits)
        self._idle = threading.Event()  # never set: the driver's pause between looks
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()

    def guests_on(self, host: str) -> list[Instance]:
        return [i for i in self.context.drivers.list_instances() if i.host == host]

    def run(self, drain_id: str, stopping: threading.Event | None = None) -> Drain:
        """Drive the drain until it ends (or continue one whose process died). Raises
        MigrationInProgress while another live process (or thread of this one) drives it.
        ``stopping`` (a server shutting down): once set, no new migration starts; when the ones
        in flight have ended the drain is left ``running`` for the next :meth:`run`."""
        with self._driving_lock:
            if drain_id in self._driving:
                raise errors.MigrationInProgress(f"drain {drain_id} is being run by this process")
            self._driving.add(drain_id)
        try:
            lease = self.runner.lease(drain_id)
            if not lease.take():
                raise errors.MigrationInProgress(
                    f"drain {drain_id} is being run by {lease.holder()}"
                )
            beat = self.runner.heartbeat(lease.ttl)
            beat.add(lease)
            try:
                self._drive(drain_id, stopping or threading.Event())
            finally:
                beat.remove(lease)
                lease.end()
        finally:
            with self._driving_lock:
                self._driving.discard(drain_id)
        return self.drains.get(drain_id)

    # ------------------------------------------------------------------ driving
    def _drive(self, drain_id: str, stopping: threading.Event) -> None:
        drain = self.drains.get(drain_id)
        if drain.done:
            return
        limit = max(1, int(drain.options.get("max_parallel") or 1))
        aborting = self.drains.abort_requested(drain_id)
        inflight: dict[cf.Future[None], DrainGuest] = {}
        with cf.ThreadPoolExecutor(limit, thread_name_prefix="ferry-drain") as pool:
            for guest in self._adoptable(drain):
                if aborting:
                    self._abort_migration(guest)
                inflight[pool.submit(self._run_one, guest, drain, limit)] = guest
            while True:
                if not aborting and self.drains.abort_requested(drain_id):
                    aborting = True
                    for guest in inflight.values():
                        self._abort_migration(guest)
                drain = self.drains.get(drain_id)
                if not aborting:
                    self._discover(drain)
                    drain = self.drains.get(drain_id)
                queued = [g for g in drain.guests if g.state == GuestState.QUEUED.value]
                locks = self.context.migrations.locks()
                waiting = [g for g in queued if g.instance_uuid in locks]  # arriving still
                queued = [g for g in queued if g.instance_uuid not in locks]
                halting = stopping.is_set()
                while not (aborting or halting) and queued and len(inflight) < limit:
                    started = self._start(drain, queued.pop(0))
                    if started is not None:
                        inflight[pool.submit(self._run_one, started, drain, limit)] = started
                if not inflight:
                    if halting and not aborting:
                        LOG.info("drain %s suspended: the process is stopping", drain_id)
                        return
                    if aborting or not (queued or waiting):
                        break
                    if not queued:
                        self._idle.wait(self.poll)  # until the other migration lets go
                    continue
                done, _ = cf.wait(inflight, timeout=self.poll, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    self._finish(drain_id, inflight.pop(future), future)
        drain = self.drains.get(drain_id)
        if aborting:
            for guest in drain.guests:
                if guest.state == GuestState.QUEUED.value:
                    self._set(drain_id, guest, GuestState.SKIPPED, reason="drain cancelled")
            drain = self.drains.get(drain_id)
        status = DrainStatus(drain_status((g.state for g in drain.guests), aborted=aborting))
        self.drains.set_status(drain_id, status)
        self.context.events.emit(
            Event(kind="drain", migration_id="", status=status.value, data={"drain": drain_id})
        )

    def _adoptable(self, drain: Drain) -> list[DrainGuest]:
        """The guests whose migration was in flight when the drain's process died."""
        locks = self.context.migrations.locks()
        out = []
        for guest in drain.guests:
            if guest.state == GuestState.RUNNING.value and guest.migration:
                out.append(guest)
            elif guest.state == GuestState.QUEUED.value and guest.instance_uuid in locks:
                mid = locks[guest.instance_uuid]
                if self.context.migrations.field(mid, "source") != drain.host:
                    continue
                self._set(drain.id, guest, GuestState.RUNNING, migration=mid)
                guest.migration, guest.state = mid, GuestState.RUNNING.value
                out.append(guest)
        return out

    def _discover(self, drain: Drain) -> None:
        """Add the guests that appeared on the host since the drain was planned."""
        known = {g.instance_uuid for g in drain.guests}
        position = max((g.position for g in drain.guests), default=-1) + 1
        for inst in ordered(self.guests_on(drain.host), str(drain.options.get("order", "name"))):
            if inst.uuid in known:
                continue
            skipped = not_running_reason(inst)
            guest = DrainGuest(
                inst.uuid,
                inst.name,
                state=(GuestState.SKIPPED if skipped else GuestState.QUEUED).value,
                reason=skipped,
                position=position,
            )
            if self.drains.add_guest(drain.id, guest):
                LOG.info("drain %s: %s appeared on %s", drain.id, inst.name, drain.host)
                self._emit(drain.id, guest)
                position += 1

    def _start(self, drain: Drain, guest: DrainGuest) -> DrainGuest | None:
        """Create the guest's migration (None when it cannot be: the guest is marked why)."""
        try:
            inst = self.context.drivers.find_instance(guest.instance_uuid)
        except errors.InstanceNotFound:
            self._set(drain.id, guest, GuestState.SKIPPED, reason="no longer exists")
            return None
        if inst.host != drain.host:
            self._set(drain.id, guest, GuestState.SKIPPED, reason=f"now runs on {inst.host}")
            return None
        skipped = not_running_reason(inst)
        if skipped is not None:
            self._set(drain.id, guest, GuestState.SKIPPED, reason=skipped)
            return None
        apart = {
            m
            for group in drain.options.get("not_together") or ()
            if inst.uuid in group
            for m in group
            if m != inst.uuid
        }
        request = MigrationRequest(
            instance=inst.uuid,
            destination=drain.options.get("to"),
            to_group=drain.options.get("to_group"),
            not_with=sorted(apart),
        )
        make = self.create
        if drain.options.get("submit"):
            if self.submit is None:
                raise errors.ConfigError(f"drain {drain.id} posts to the job store: none here")
            make = self.submit
        try:
            migration_id = make(request)
        except errors.FerryError as exc:
            self._set(drain.id, guest, GuestState.FAILED, reason=str(exc))
            return None
        self._set(drain.id, guest, GuestState.RUNNING, migration=migration_id, destination=None)
        guest.migration, guest.state = migration_id, GuestState.RUNNING.value
        return guest

    def _run_one(self, guest: DrainGuest, drain: Drain, limit: int) -> None:
        """Run the guest's migration within the limits: the job store's slots (``total``,
        ``source:HOST`` at the drain's ``max_parallel``, and ``destination:HOST`` once the
        scheduler has chosen it), taken and waited for as a conductor does (the migration is
        ``queued`` meanwhile, with the full limit as its detail). An aborted one runs at once
        (to revert). A posted one (``submit``) is run by a conductor: its record is followed."""
        migrations = self.context.migrations
        mid = str(guest.migration)
        host = drain.host
        if drain.options.get("submit"):
            while not migrations.get(mid).done:
                if migrations.field(mid, "abort_requested"):
                    # aborted: no conductor may ever run it (none is running, or none took it
                    # yet), so revert it here; one that holds its lease keeps it
                    # (MigrationInProgress) and reverts it at its next step
                    with contextlib.suppress(errors.FerryError):
                        self.runner.run(mid)
                    if migrations.get(mid).done:
                        break
                self._idle.wait(self.poll)
            return
        while True:
            record = migrations.get(mid)
            if record.done and self.runner.flow_state(mid) in (*FINISHED_FLOW_STATES, None):
                return
            waiting: list[Any] = []
            hook = None
            if not record.abort_requested:
                needed = self.slots.needed(host, record.destination, limit)
                blocked = self.slots.acquire(mid, needed)
                if blocked is not None and record.status in WAITING_STATUSES:
                    wait_queued(migrations, mid, record.status, blocked)
                    self._idle.wait(self.poll)
                    continue
                if blocked is not None:  # past its transfer's start: it goes on (as a conductor)
                    LOG.warning(
                        "migration %s is %s past its limits: %s", mid, record.status, blocked
                    )
                unsuspend(migrations, record, f"drain {guest.instance}")
                hook = watch_destination(self.slots, migrations, mid, host, waiting, limit)
            self.runner.run(mid, on_engine=hook)
            if not waiting:
                return
            wait_queued(migrations, mid, MigrationStatus.PREPARING.value, waiting[0])
            self.slots.release(mid)

    def _finish(self, drain_id: str, guest: DrainGuest, future: cf.Future[None]) -> None:
        migration_id = str(guest.migration)
        failure = future.exception()
        record = self.context.migrations.get(migration_id)
        if record.done:
            self.slots.release(migration_id)
        if record.status == MigrationStatus.COMPLETED:
            self._set(drain_id, guest, GuestState.COMPLETED, destination=record.destination)
        elif record.status == MigrationStatus.CANCELLED:
            self._set(drain_id, guest, GuestState.SKIPPED, reason="migration cancelled")
        elif record.done:
            self._set(drain_id, guest, GuestState.FAILED, reason=record.error or f"{record.status}")
        else:
            why = str(failure) if failure is not None else f"its run stopped ({record.status})"
            self._set(drain_id, guest, GuestState.FAILED, reason=why)

    def _abort_migration(self, guest: DrainGuest) -> None:
        if guest.migration:
            self.context.migrations.request_abort(guest.migration)

    # ---------------------------------------------------------------- records
    def _set(self, drain_id: str, guest: DrainGuest, state: GuestState, **fields: object) -> None:
        self.drains.update_guest(drain_id, guest.instance_uuid, state=state.value, **fields)
        guest.state = state.value
        for key, value in fields.items():
            setattr(guest, key, value)
        self._emit(drain_id, guest)

    def _emit(self, drain_id: str, guest: DrainGuest) -> None:
        self.context.events.emit(
            Event(
                kind="drain",
                migration_id=guest.migration or "",
                status=guest.state,
                detail=guest.reason,
                data={"drain": drain_id, **guest.to_dict()},
            )
        )
