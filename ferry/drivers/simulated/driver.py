"""The simulated driver: a whole cluster whose state lives in ferry's database.

Hosts, instances, faults, check markers, per-host artifacts (guest definitions, instance
directories, volume connections, VIF plugs) and memory transfers are rows (see
:mod:`ferry.drivers.simulated.tables`). A transfer row holds only its parameters; its state is
computed with the pre-copy model (:mod:`ferry.drivers.simulated.precopy`) at the simulated
clock's current time, and the switchover (instance moved to the destination) is written the first
time anybody observes the transfer as completed (:mod:`.transfers`). So a process can be killed
at any point and a second process opening the same database sees the same cluster, the same
transfers in flight and the same time.

Every method runs in one short transaction (a couple of small queries), is safe to call twice,
and raises ferry's typed errors. An error caused by an injected fault is raised *after* its
transaction commits, so the fault's firing count (and any partial work) is persisted: the
modules doing the work (:mod:`.inventory`, :mod:`.checks`, :mod:`.prepost`, :mod:`.transfer`,
:mod:`.faults`, :mod:`.seeding`) return such an error and this class raises it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from ferry.drivers.base import Driver, InstanceLocation, TransferPolicy
from ferry.errors import FerryError
from ferry.model import Host, Instance, MigrateData, TransferProgress
from ferry.model.numa import Pinning
from ferry.persistence.db import Database
from ferry.transport import Transport

from . import checks, faults, inventory, prepost, seeding, transfer
from .clock import SimClock
from .cluster import load_cluster
from .tables import ensure_schema

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _raised(result: _T | FerryError) -> _T:
    """``result``, or raise it when it is the error a step returned (its transaction is
    committed by then)."""
    if isinstance(result, FerryError):
        raise result
    return result


class SimulatedDriver(Driver):
    """A simulated cluster persisted in ``db`` (see module doc).

    :param db: ferry's database; the simulated tables are created on first use if missing.
    :param cluster_file: TOML cluster description seeded into an empty database (the shipped
        ``demo_cluster.toml`` when ``None``). A database that already holds a cluster keeps it.
    :param speed: simulated seconds per wall second; ``0`` = stepped time for tests (see
        :class:`~ferry.drivers.simulated.clock.SimClock`).
    """

    name = "simulated"

    def __init__(
        self, db: Database, cluster_file: str | Path | None = None, speed: float = 1.0
    ) -> None:
        self.db = db
        self.cluster_file = (
            Path(cluster_file).expanduser().resolve() if cluster_file is not None else None
        )
        self.clock = SimClock(db, speed)
        self._ready = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ cluster state
    def ensure_seeded(self) -> bool:
        """Seed the cluster from the TOML file unless the database already holds one.

        Safe when processes race: the singleton meta row's primary key picks one winner; the
        others see its cluster. Returns whether this call seeded.

        :raises ConfigError: the cluster file is unreadable or invalid.
        """
        ensure_schema(self.db)
        self.clock.prepare()
        with self.db.connect() as conn:
            meta = seeding.meta(conn)
        if meta is not None:
            seeding.warn_if_other_cluster(meta, self.cluster_file)
            return False
        spec = load_cluster(self.cluster_file)
        with self.db.connect() as conn:
            won = seeding.claim(conn, spec)
            if won:
                seeding.seed(conn, spec, self.clock.now_in(conn))
        if won:
            log.info("seeded the simulated cluster %r from %s", spec.name, spec.path)
        return won

    def reset(self) -> None:
        """Wipe the simulated cluster (transfers, faults, markers, artifacts included) and seed it
        again from the cluster file: this driver's ``cluster_file``, else the file the database
        was seeded from, else the shipped demo cluster. The clock keeps running.

        :raises ConfigError: the cluster file is unreadable or invalid.
        """
        ensure_schema(self.db)
        self.clock.prepare()
        path: Path | None = self.cluster_file
        if path is None:
            with self.db.connect() as conn:
                meta = seeding.meta(conn)
            if meta is not None and not meta.builtin and meta.cluster_file:
                path = Path(meta.cluster_file)
        spec = load_cluster(path)
        with self.db.connect() as conn:
            seeding.replace(conn, spec)
            seeding.seed(conn, spec, self.clock.now_in(conn))
        with self._lock:
            self._ready = True

    def cluster_info(self) -> dict[str, Any]:
        """Which cluster the database holds: ``name``, ``file``, ``builtin``, ``seeded_at``."""
        with self._connect() as conn:
            return seeding.info(conn)

    # ------------------------------------------------------------------------ faults
    def inject_fault(
        self,
        host: str,
        phase: str,
        times: int = 0,
        at: float | None = None,
        message: str | None = None,
    ) -> int:
        """Make ``phase`` fail on ``host`` the next ``times`` times (0 = every time).

        ``host`` is the host the phase runs on (the source for ``check_source`` and
        ``post_at_source``, the destination otherwise). ``at`` (transfer only) is the fraction of
        the RAM sent when the transfer fails (default 0.5). Persisted, so a fault injected here
        fires in any process using the same database. Returns the fault's id.

        :raises HostNotFound: unknown host. :raises ValueError: bad phase, times or at.
        """
        faults.check_fault(phase, times, at)
        with self._connect() as conn:
            return faults.inject(conn, host, phase, times, at, message)

    def clear_faults(self, host: str | None = None, phase: str | None = None) -> int:
        """Remove injected faults (all, or those of ``host`` / ``phase``). Returns how many."""
        with self._connect() as conn:
            return faults.clear(conn, host, phase)

    def faults(self) -> list[dict[str, Any]]:
        """The faults in force, with how often each has fired."""
        with self._connect() as conn:
            return faults.listing(conn)

    # ------------------------------------------------------------------ test helpers
    def set_host_state(
        self, host: str, *, up: bool | None = None, enabled: bool | None = None
    ) -> None:
        """Bring a host up/down or enable/disable it. :raises HostNotFound:"""
        with self._connect() as conn:
            inventory.set_host_state(conn, host, up, enabled)

    def artifacts(
        self, host: str | None = None, instance_uuid: str | None = None
    ) -> list[dict[str, Any]]:
        """What instances have on hosts: ``{host, instance_uuid, name, origin, state}`` rows,
        ``name`` being ``guest``, ``instance_dir``, ``volume:<id>`` or ``vif:<id>``."""
        with self._connect() as conn:
            return inventory.artifacts(conn, self.clock.now_in(conn), host, instance_uuid)

    def check_markers(self, host: str | None = None) -> list[dict[str, Any]]:
        """Markers left by destination checks (removed by their cleanup)."""
        with self._connect() as conn:
            return checks.markers(conn, host)

    # --------------------------------------------------------------------- inventory
    def hosts(self) -> list[str]:
        """Names of the simulated hosts, sorted."""
        with self._connect() as conn:
            return inventory.host_names(conn)

    def host_info(self, host: str) -> Host:
        """Capacity, usage (the instances on it now), version and state. :raises HostNotFound:"""
        with self._connect() as conn:
            return inventory.host_info(conn, self.clock.now_in(conn), self.name, host)

    def host_infos(self, hosts: list[str]) -> list[Host]:
        """:meth:`host_info` of several hosts in one transaction (two queries)."""
        with self._connect() as conn:
            return inventory.host_infos(conn, self.clock.now_in(conn), self.name, hosts)

    def pinnings(self, host: str | None = None) -> dict[str, Pinning]:
        """Instance name -> where its vCPUs are pinned now (pinned instances, on ``host`` or on
        every host)."""
        with self._connect() as conn:
            return inventory.pinnings_by_name(conn, self.clock.now_in(conn), host)

    def list_instances(self, host: str | None = None) -> list[Instance]:
        """Instances on ``host`` (every host when ``None``; none for an unknown host)."""
        with self._connect() as conn:
            return inventory.list_instances(conn, self.clock.now_in(conn), host)

    def find_instance(self, ref: str) -> Instance | None:
        """The instance whose UUID (preferred) or name is ``ref``, or ``None``."""
        with self._connect() as conn:
            return inventory.find_instance(conn, self.clock.now_in(conn), ref)

    def locate(self, instance_uuid: str) -> InstanceLocation:
        """Where the instance runs now and whether a transfer of it is in flight.

        :raises InstanceNotFound:
        """
        with self._connect() as conn:
            return inventory.locate(conn, self.clock.now_in(conn), instance_uuid)

    # ------------------------------------------------------------------------ checks
    def check_can_live_migrate_destination(
        self,
        instance: Instance,
        destination: str,
        block_migration: bool | None,
        transport: Transport | None = None,
    ) -> MigrateData:
        """Check ``destination`` can take the instance: known, not the current host, up, same
        hypervisor type and a version not older than the source's, enough free vcpus, memory
        and (without shared storage) disk, and for a pinned guest one NUMA cell with enough free
        pCPUs and memory (its own pinning goes into ``MigrateData.pinning``; the flow
        replaces it with the scheduler's claim). Storage is shared iff both hosts are in the
        same storage group; ``block_migration=None`` becomes "not shared". Leaves a check marker
        on the destination (see :meth:`cleanup_live_migration_destination_check`).

        Fault phase ``check_destination`` (host = destination).

        :raises MigrationPreCheckError: with the destination as host and the reason.
        :raises InstanceNotFound:
        """
        with self._connect() as conn:
            result = checks.check_destination(
                conn, self.clock.now_in(conn), instance.uuid, destination, block_migration
            )
        return _raised(result)

    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        """Remove the check marker of this instance on ``destination`` (no-op when gone)."""
        with self._connect() as conn:
            checks.remove_marker(conn, data.instance_uuid, destination)

    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        """Check on the source: the instance is there and running or paused; block migration
        is refused on shared storage; without block migration and without shared storage the
        instance must not have a local disk (``disk_gb > 0`` or an unshared volume).

        Fault phase ``check_source`` (host = source).

        :raises MigrationPreCheckError: with the source as host (where the check ran).
        :raises InstanceNotFound:
        """
        with self._connect() as conn:
            result = checks.check_source(conn, self.clock.now_in(conn), instance.uuid, data)
        return _raised(result)

    # ----------------------------------------------------------------------- prepare
    def pre_live_migration(self, instance: Instance, data: MigrateData) -> MigrateData:
        """Create on the destination the instance directory (unless storage is shared), the
        volume connections and the VIF plugs (``bound``, activated after the switchover).
        Returns ``data`` with ``driver_data["pre_artifacts"]`` listing them. A second call finds
        them and returns the same list.

        Fault phase ``pre_live_migration`` (host = destination): the directory and volume
        connections are made (and committed) before the VIF plugging fails, so the rollback
        has something real to clean.

        :raises DriverError: destination unknown or down, or an injected fault.
        :raises InstanceNotFound:
        """
        with self._connect() as conn:
            result = prepost.pre_live_migration(conn, self.clock.now_in(conn), instance.uuid, data)
        return _raised(result)

    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Remove what pre_live_migration made on the destination (those listed in
        ``driver_data["pre_artifacts"]`` and any other it made before failing) plus a partial
        incoming guest; cancels a transfer to the destination still in flight. Idempotent.

        :raises DriverError: the switchover already happened (the instance runs on the
            destination): nothing is removed.
        """
        with self._connect() as conn:
            result = prepost.rollback_at_destination(conn, self.clock.now_in(conn), data)
        _raised(result)

    # ---------------------------------------------------------------------- transfer
    def start_transfer(self, instance: Instance, data: MigrateData, policy: TransferPolicy) -> None:
        """Start the memory transfer (a row; its progress is computed on observation).

        Bandwidth = min(source link, destination link, ``policy.bandwidth_mbps`` when > 0); the
        dirty rate is the instance's (0 when paused). Fault phases (host = destination):
        ``never_converge`` makes the guest dirty memory faster than the link; ``transfer`` fails
        the transfer when the fault's ``at`` fraction of the RAM has been sent (the instance keeps
        running on the source). No-op when a transfer of the instance is in flight, and when this
        migration's transfer (same check token in ``driver_data``) already exists in any state:
        a repeated call never starts it twice (a failed or cancelled one stays so). The policy is
        stored with the transfer; ``permit_post_copy`` decides the :meth:`force_complete` lever;
        ``permit_auto_converge`` is recorded but not modelled (no CPU throttling). A pinned
        guest takes the pinning in ``MigrateData.pinning`` (its own best fit when none
        is given): recorded with the transfer, the guest's pinning from the switchover on.

        :raises TransferFailed: the instance is not on the source or not running/paused, a
            host is down or unknown, or the pinning names pCPUs another guest pinned (or not of
            one cell with room). :raises InstanceNotFound:
        """
        with self._connect() as conn:
            result = transfer.start(conn, self.clock.now_in(conn), data, policy)
        _raised(result)

    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        """The transfer's state at the clock's current time (``none`` when this migration has
        no transfer). Observing its end materialises it (switchover when completed)."""
        with self._connect() as conn:
            return transfer.progress(conn, self.clock.now_in(conn), data)

    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        """Allow a longer switchover pause from now on (no-op when nothing is in flight).

        :raises ValueError: a negative downtime.
        """
        if downtime_ms < 0:
            raise ValueError("the max downtime must be >= 0 ms")
        with self._connect() as conn:
            transfer.set_max_downtime(conn, self.clock.now_in(conn), data, downtime_ms)

    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        """Finish the transfer now: ``post-copy`` (switch over at once) when the transfer's
        policy permits it, else ``pause`` (the guest stops dirtying memory; the rest is sent while
        it is paused). A second call returns the lever of the first; ``none`` when the transfer
        had already completed on its own.

        :raises DriverError: no transfer of this migration is in flight (never started, failed
            or cancelled).
        """
        with self._connect() as conn:
            result = transfer.force_complete(conn, self.clock.now_in(conn), data)
        return _raised(result)

    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        """Cancel the transfer in flight; the instance keeps running on the source (no-op when
        nothing is in flight). The partial guest stays on the destination until the rollback.

        :raises DriverError: the switchover already happened.
        """
        with self._connect() as conn:
            result = transfer.abort(conn, self.clock.now_in(conn), data)
        _raised(result)

    # -------------------------------------------------------------------------- post
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        """Remove what the instance had on the source: guest definition, instance directory
        (there only without shared storage), volume connections, VIF plugs. Idempotent.

        Fault phase ``post_at_source`` (host = source).

        :raises DriverError: the instance still runs on the source, or an injected fault.
        """
        with self._connect() as conn:
            result = prepost.post_at_source(conn, self.clock.now_in(conn), data)
        _raised(result)

    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Make the guest persistent on the destination and activate its VIF plugs; removes
        the destination's check marker. Idempotent.

        Fault phase ``post_at_destination`` (host = destination).

        :raises DriverError: the instance does not run on the destination, or an injected fault.
        """
        with self._connect() as conn:
            result = prepost.post_at_destination(conn, self.clock.now_in(conn), data)
        _raised(result)

    # ===================================================================== internals
    def _prepare(self) -> None:
        """Schema, clock row and seeded cluster, once per driver object."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self.ensure_seeded()
                self._ready = True

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """One transaction on the prepared cluster."""
        self._prepare()
        with self.db.connect() as conn:
            yield conn

    def __repr__(self) -> str:
        return f"SimulatedDriver({self.db!r}, speed={self.clock.speed:g})"
