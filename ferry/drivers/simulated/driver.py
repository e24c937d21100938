"""The simulated driver: a whole cluster whose state lives in ferry's database.

Hosts, instances, faults, check markers, per-host artifacts (guest definitions, instance
directories, volume connections, VIF plugs) and memory transfers are rows (see
:mod:`ferry.drivers.simulated.tables`). A transfer row holds only its parameters; its state is
computed with the pre-copy model (:mod:`ferry.drivers.simulated.precopy`) at the simulated
clock's current time, and the switchover (instance moved to the destination) is written the first
time anybody observes the transfer as completed. So a process can be killed at any point and a
second process opening the same database sees the same cluster, the same transfers in flight and
the same time.

Every method runs in one short transaction (a couple of small queries), is safe to call twice,
and raises ferry's typed errors. An error caused by an injected fault is raised *after* its
transaction commits, so the fault's firing count (and any partial work) is persisted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ferry.drivers.base import Driver, InstanceLocation, TransferPolicy
from ferry.errors import (
    DriverError,
    FerryError,
    HostNotFound,
    InstanceNotFound,
    MigrationPreCheckError,
    TransferFailed,
)
from ferry.model import Host, Instance, MigrateData, PowerState, TransferProgress
from ferry.model.numa import GuestRequest, HostNumaState, NumaCell, NumaTopology, Pinning
from ferry.persistence.db import Database

from . import precopy
from .clock import SimClock
from .cluster import DEFAULT_FAIL_AT, DEMO_CLUSTER, PHASES, ClusterSpec, load_cluster
from .tables import (
    ARTIFACTS,
    CLUSTER_TABLES,
    FAULTS,
    HOSTS,
    INSTANCES,
    MARKERS,
    META,
    TRANSFERS,
    ensure_schema,
    insert_ignore,
)

log = logging.getLogger(__name__)

Row = sa.Row[Any]

MIGRATABLE_STATES = frozenset({PowerState.RUNNING.value, PowerState.PAUSED.value})
#: a ``never_converge`` fault makes the guest dirty memory this many times faster than the link
NEVER_CONVERGE_FACTOR = 2.0
#: Nova's message (InvalidSharedStorage) for a live migration without block migration or shared
#: storage of an instance with a local disk
NO_SHARED_STORAGE_REASON = (
    "live migration can not be used without shared storage except a booted from volume VM "
    "which does not have a local disk"
)

# artifact origins: "live" belongs to the instance where it runs; "pre" was made by
# pre_live_migration for an incoming migration; "transfer" is the incoming (partial) guest
LIVE, PRE, INCOMING = "live", "pre", "transfer"


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
            meta = conn.execute(sa.select(META)).first()
        if meta is not None:
            self._warn_if_other_cluster(meta)
            return False
        spec = load_cluster(self.cluster_file)
        with self.db.connect() as conn:
            won = insert_ignore(conn, META, [self._meta_values(spec)]) == 1
            if won:
                self._seed(conn, spec, self.clock.now_in(conn))
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
                meta = conn.execute(sa.select(META)).first()
            if meta is not None and not meta.builtin and meta.cluster_file:
                path = Path(meta.cluster_file)
        spec = load_cluster(path)
        with self.db.connect() as conn:
            for table in CLUSTER_TABLES:
                conn.execute(table.delete())
            conn.execute(META.insert().values(**self._meta_values(spec)))
            self._seed(conn, spec, self.clock.now_in(conn))
        with self._lock:
            self._ready = True

    def cluster_info(self) -> dict[str, Any]:
        """Which cluster the database holds: ``name``, ``file``, ``builtin``, ``seeded_at``."""
        self._prepare()
        with self.db.connect() as conn:
            meta = conn.execute(sa.select(META)).one()
        return {
            "name": meta.cluster_name,
            "file": meta.cluster_file,
            "builtin": bool(meta.builtin),
            "seeded_at": meta.seeded_at,
        }

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
        if phase not in PHASES:
            raise ValueError(f"unknown fault phase {phase!r} (expected one of {', '.join(PHASES)})")
        if times < 0:
            raise ValueError("times must be >= 0 (0 = every time)")
        if at is not None and (phase != "transfer" or not 0 <= at < 1):
            raise ValueError("at only applies to phase 'transfer' and must be in [0, 1)")
        self._prepare()
        with self.db.connect() as conn:
            self._host_row(conn, host, required=True)
            result = conn.execute(
                FAULTS.insert().values(
                    host=host,
                    phase=phase,
                    times=times,
                    fired=0,
                    at=at,
                    message=message,
                    created_at=time.time(),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def clear_faults(self, host: str | None = None, phase: str | None = None) -> int:
        """Remove injected faults (all, or those of ``host`` / ``phase``). Returns how many."""
        self._prepare()
        stmt = FAULTS.delete()
        if host is not None:
            stmt = stmt.where(FAULTS.c.host == host)
        if phase is not None:
            stmt = stmt.where(FAULTS.c.phase == phase)
        with self.db.connect() as conn:
            return conn.execute(stmt).rowcount or 0

    def faults(self) -> list[dict[str, Any]]:
        """The faults in force, with how often each has fired."""
        self._prepare()
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(FAULTS).order_by(FAULTS.c.id)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ test helpers
    def set_host_state(
        self, host: str, *, up: bool | None = None, enabled: bool | None = None
    ) -> None:
        """Bring a host up/down or enable/disable it. :raises HostNotFound:"""
        self._prepare()
        values: dict[str, Any] = {}
        if up is not None:
            values["up"] = up
        if enabled is not None:
            values["enabled"] = enabled
        with self.db.connect() as conn:
            self._host_row(conn, host, required=True)
            if values:
                conn.execute(sa.update(HOSTS).where(HOSTS.c.name == host).values(**values))

    def artifacts(
        self, host: str | None = None, instance_uuid: str | None = None
    ) -> list[dict[str, Any]]:
        """What instances have on hosts: ``{host, instance_uuid, name, origin, state}`` rows,
        ``name`` being ``guest``, ``instance_dir``, ``volume:<id>`` or ``vif:<id>``."""
        self._prepare()
        stmt = sa.select(
            ARTIFACTS.c.host,
            ARTIFACTS.c.instance_uuid,
            ARTIFACTS.c.name,
            ARTIFACTS.c.origin,
            ARTIFACTS.c.state,
        ).order_by(ARTIFACTS.c.host, ARTIFACTS.c.instance_uuid, ARTIFACTS.c.name)
        if host is not None:
            stmt = stmt.where(ARTIFACTS.c.host == host)
        if instance_uuid is not None:
            stmt = stmt.where(ARTIFACTS.c.instance_uuid == instance_uuid)
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def check_markers(self, host: str | None = None) -> list[dict[str, Any]]:
        """Markers left by destination checks (removed by their cleanup)."""
        self._prepare()
        stmt = sa.select(MARKERS).order_by(MARKERS.c.host, MARKERS.c.instance_uuid)
        if host is not None:
            stmt = stmt.where(MARKERS.c.host == host)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # --------------------------------------------------------------------- inventory
    def hosts(self) -> list[str]:
        """Names of the simulated hosts, sorted."""
        self._prepare()
        with self.db.connect() as conn:
            return list(conn.execute(sa.select(HOSTS.c.name).order_by(HOSTS.c.name)).scalars())

    def host_info(self, host: str) -> Host:
        """Capacity, usage (the instances on it now), version and state. :raises HostNotFound:"""
        self._prepare()
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            row = self._host_row(conn, host, required=True)
            assert row is not None
            return self._host(row, self._usage(conn, host), self._pinnings(conn, host))

    def host_infos(self, hosts: list[str]) -> list[Host]:
        """:meth:`host_info` of several hosts in one transaction (two queries)."""
        self._prepare()
        wanted = set(hosts)
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            usage = {
                r[0]: (int(r[1]), int(r[2]), int(r[3]))
                for r in conn.execute(
                    sa.select(
                        INSTANCES.c.host,
                        sa.func.sum(INSTANCES.c.vcpus),
                        sa.func.sum(INSTANCES.c.memory_mb),
                        sa.func.sum(INSTANCES.c.disk_gb),
                    ).group_by(INSTANCES.c.host)
                )
            }
            rows = conn.execute(sa.select(HOSTS).order_by(HOSTS.c.name)).all()
            pins = self._pinnings(conn)
        return [
            self._host(r, usage.get(r.name, (0, 0, 0)), pins.get(r.name, []))
            for r in rows
            if r.name in wanted
        ]

    def pinnings(self, host: str | None = None) -> dict[str, Pinning]:
        """Instance name -> where its vCPUs are pinned now (pinned instances, on ``host`` or on
        every host)."""
        self._prepare()
        stmt = sa.select(INSTANCES.c.name, INSTANCES.c.numa_pinning).where(
            INSTANCES.c.numa_pinning.is_not(None)
        )
        if host is not None:
            stmt = stmt.where(INSTANCES.c.host == host)
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            rows = conn.execute(stmt).all()
        return {r.name: Pinning.from_dict(r.numa_pinning) for r in rows if r.numa_pinning}

    def list_instances(self, host: str | None = None) -> list[Instance]:
        """Instances on ``host`` (every host when ``None``; none for an unknown host)."""
        self._prepare()
        stmt = sa.select(INSTANCES).order_by(INSTANCES.c.name)
        if host is not None:
            stmt = stmt.where(INSTANCES.c.host == host)
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            return [self._instance(r) for r in conn.execute(stmt)]

    def find_instance(self, ref: str) -> Instance | None:
        """The instance whose UUID (preferred) or name is ``ref``, or ``None``."""
        self._prepare()
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            row = self._instance_row(conn, ref)
            if row is None:
                row = conn.execute(sa.select(INSTANCES).where(INSTANCES.c.name == ref)).first()
            return self._instance(row) if row is not None else None

    def locate(self, instance_uuid: str) -> InstanceLocation:
        """Where the instance runs now and whether a transfer of it is in flight.

        :raises InstanceNotFound:
        """
        self._prepare()
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, instance_uuid)
            progress = self._observe(conn, latest, now) if latest is not None else None
            row = self._instance_row(conn, instance_uuid)
            if row is None:
                raise InstanceNotFound(instance_uuid)
            in_flight = progress is not None and progress.state == precopy.RUNNING
            return InstanceLocation(
                instance_uuid=row.uuid,
                host=row.host,
                power_state=row.power_state,
                transfer_in_flight=in_flight,
                transfer_destination=latest.destination if in_flight and latest else None,
            )

    # ------------------------------------------------------------------------ checks
    def check_can_live_migrate_destination(
        self, instance: Instance, destination: str, block_migration: bool | None
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
        self._prepare()
        error: FerryError | None = None
        data: MigrateData | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            self._settle(conn, now)
            inst = self._require_instance(conn, instance.uuid)
            fault = self._fire(conn, destination, "check_destination")
            if fault is not None:
                error = self._fault_error(fault, MigrationPreCheckError, destination)
            else:
                source = self._host_row(conn, inst.host, required=True)
                assert source is not None
                dest = self._host_row(conn, destination)
                shared = bool(
                    dest is not None
                    and source.storage_group
                    and source.storage_group == dest.storage_group
                )
                reason = self._destination_problem(conn, inst, source, dest, shared)
                fitted: Pinning | str | None = None
                if reason is None and dest is not None and inst.cpu_policy == "dedicated":
                    fitted = self._fit(conn, inst, dest)
                    reason = fitted if isinstance(fitted, str) else None
                if reason is not None:
                    error = MigrationPreCheckError(destination, reason, "check_destination")
                else:
                    assert dest is not None
                    insert_ignore(
                        conn,
                        MARKERS,
                        [
                            {
                                "instance_uuid": inst.uuid,
                                "host": destination,
                                "source": inst.host,
                                "created_at": now,
                            }
                        ],
                    )
                    block = (not shared) if block_migration is None else block_migration
                    data = MigrateData(
                        instance_uuid=inst.uuid,
                        source=inst.host,
                        destination=destination,
                        block_migration=block,
                        shared_storage=shared,
                        driver_data={
                            "token": uuidlib.uuid4().hex,
                            "check_marker": True,
                            "source_storage_group": source.storage_group,
                            "destination_storage_group": dest.storage_group,
                            "destination_hypervisor_version": int(dest.hypervisor_version),
                            "bandwidth_mbps": min(source.bandwidth_mbps, dest.bandwidth_mbps),
                        },
                    )
                    if isinstance(fitted, Pinning):
                        data = data.with_pinning(fitted)
        if error is not None:
            raise error
        assert data is not None
        return data

    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        """Remove the check marker of this instance on ``destination`` (no-op when gone)."""
        self._prepare()
        with self.db.connect() as conn:
            conn.execute(
                MARKERS.delete().where(
                    MARKERS.c.instance_uuid == data.instance_uuid, MARKERS.c.host == destination
                )
            )

    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        """Check on the source: the instance is there and running or paused; block migration
        is refused on shared storage; without block migration and without shared storage the
        instance must not have a local disk (``disk_gb > 0`` or an unshared volume).

        Fault phase ``check_source`` (host = source).

        :raises MigrationPreCheckError: with the source as host (where the check ran).
        :raises InstanceNotFound:
        """
        self._prepare()
        error: FerryError | None = None
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            inst = self._require_instance(conn, instance.uuid)
            local_disk = inst.disk_gb > 0 or any(not v.get("shared", True) for v in inst.volumes)
            fault = self._fire(conn, data.source, "check_source")
            reason: str | None = None
            if fault is not None:
                error = self._fault_error(fault, MigrationPreCheckError, data.source)
            elif inst.host != data.source:
                reason = f"the instance runs on {inst.host}, not on {data.source}"
            elif inst.power_state not in MIGRATABLE_STATES:
                reason = f"the instance is {inst.power_state}; it must be running or paused"
            elif data.block_migration and data.shared_storage:
                reason = "cannot block-migrate an instance on shared storage"
            elif not data.block_migration and not data.shared_storage and local_disk:
                reason = NO_SHARED_STORAGE_REASON
            if reason is not None:
                error = MigrationPreCheckError(data.source, reason, "check_source")
        if error is not None:
            raise error
        return data.with_driver_data(source_checked=True, has_local_disk=local_disk)

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
        self._prepare()
        op = "pre_live_migration"
        dest = data.destination
        error: FerryError | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            self._settle(conn, now)
            inst = self._require_instance(conn, instance.uuid)
            host = self._host_row(conn, dest)
            wanted = self._pre_artifact_states(inst, data)
            if host is None:
                error = DriverError(dest, op, "host is not part of the simulated cluster")
            elif not host.up:
                error = DriverError(dest, op, "host is down")
            elif inst.host != dest:
                fault = self._fire(conn, dest, "pre_live_migration")
                if fault is not None:
                    wanted = {k: v for k, v in wanted.items() if not k.startswith("vif:")}
                    error = self._fault_error(fault, DriverError, dest, op)
                self._put_artifacts(conn, dest, inst.uuid, PRE, wanted, now)
            made = conn.execute(
                sa.select(ARTIFACTS.c.name).where(
                    ARTIFACTS.c.host == dest,
                    ARTIFACTS.c.instance_uuid == inst.uuid,
                    ARTIFACTS.c.origin == PRE,
                )
            ).scalars()
            listed = sorted(set(made))
        if error is not None:
            raise error
        return data.with_driver_data(pre_artifacts=listed)

    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Remove what pre_live_migration made on the destination (those listed in
        ``driver_data["pre_artifacts"]`` and any other it made before failing) plus a partial
        incoming guest; cancels a transfer to the destination still in flight. Idempotent.

        :raises DriverError: the switchover already happened (the instance runs on the
            destination): nothing is removed.
        """
        self._prepare()
        dest = data.destination
        error: FerryError | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid, for_update=True)
            if latest is not None and self._matches(latest, data):
                progress = self._observe(conn, latest, now)
                if progress.state == precopy.RUNNING:
                    self._cancel(conn, latest, progress, now)
            inst = self._instance_row(conn, data.instance_uuid)
            if inst is not None and inst.host == dest:
                error = DriverError(
                    dest,
                    "rollback_live_migration_at_destination",
                    f"the instance already runs on {dest} (switchover happened); nothing removed",
                )
            else:
                listed = [str(n) for n in data.driver_data.get("pre_artifacts", [])]
                ours = sa.or_(ARTIFACTS.c.origin.in_((PRE, INCOMING)), ARTIFACTS.c.name.in_(listed))
                conn.execute(
                    ARTIFACTS.delete().where(
                        ARTIFACTS.c.host == dest,
                        ARTIFACTS.c.instance_uuid == data.instance_uuid,
                        ours,
                    )
                )
        if error is not None:
            raise error

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
        self._prepare()
        error: FerryError | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid, for_update=True)
            token = data.driver_data.get("token")
            if latest is not None and token is not None and latest.token == token:
                self._observe(conn, latest, now)  # this migration's transfer: never twice
                return
            if latest is not None and latest.state == precopy.RUNNING:
                if self._observe(conn, latest, now).state == precopy.RUNNING:
                    return
                latest = self._latest_transfer(conn, data.instance_uuid)
            inst = self._require_instance(conn, data.instance_uuid)
            if (
                latest is not None
                and latest.state == precopy.COMPLETED
                and self._matches(latest, data)
                and inst.host == data.destination
            ):
                return
            source = self._host_row(conn, data.source)
            dest = self._host_row(conn, data.destination)
            if inst.host != data.source:
                error = TransferFailed(
                    data.source, f"the instance runs on {inst.host}, not on {data.source}"
                )
            elif inst.power_state not in MIGRATABLE_STATES:
                error = TransferFailed(data.source, f"the instance is {inst.power_state}")
            elif source is None or not source.up:
                error = TransferFailed(data.source, "the source host is down")
            elif dest is None or not dest.up:
                error = TransferFailed(data.destination, "the destination host is down")
            else:
                pinning = self._transfer_pinning(conn, inst, dest, data)
                if isinstance(pinning, str):
                    error = TransferFailed(data.destination, pinning)
                else:
                    self._insert_transfer(conn, inst, source, dest, data, policy, now, pinning)
        if error is not None:
            raise error

    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        """The transfer's state at the clock's current time (``none`` when this migration has
        no transfer). Observing its end materialises it (switchover when completed)."""
        self._prepare()
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid)
            if latest is None or not self._matches(latest, data):
                return TransferProgress(state="none")
            return self._observe(conn, latest, now)

    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        """Allow a longer switchover pause from now on (no-op when nothing is in flight).

        :raises ValueError: a negative downtime.
        """
        if downtime_ms < 0:
            raise ValueError("the max downtime must be >= 0 ms")
        self._prepare()
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid, for_update=True)
            if latest is None or not self._matches(latest, data):
                return
            if self._observe(conn, latest, now).state != precopy.RUNNING:
                return
            history = [list(e) for e in latest.downtime_history]
            at = max(now, max((float(t) for t, _ in history), default=now))
            history.append([at, int(downtime_ms)])
            conn.execute(
                sa.update(TRANSFERS)
                .where(TRANSFERS.c.id == latest.id)
                .values(downtime_history=history)
            )

    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        """Finish the transfer now: ``post-copy`` (switch over at once) when the transfer's
        policy permits it, else ``pause`` (the guest stops dirtying memory; the rest is sent while
        it is paused). A second call returns the lever of the first; ``none`` when the transfer
        had already completed on its own.

        :raises DriverError: no transfer of this migration is in flight (never started, failed
            or cancelled).
        """
        self._prepare()
        error: FerryError | None = None
        lever = "none"
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid, for_update=True)
            progress = None
            if latest is not None and self._matches(latest, data):
                progress = self._observe(conn, latest, now)
            if latest is None or progress is None:
                error = DriverError(data.source, "force_complete", "no transfer is in flight")
            elif progress.state == precopy.COMPLETED:
                lever = latest.force_lever or "none"
            elif progress.state != precopy.RUNNING:
                error = DriverError(data.source, "force_complete", f"the transfer {progress.state}")
            elif latest.force_lever:
                lever = latest.force_lever
            else:
                lever = "post-copy" if (latest.policy or {}).get("permit_post_copy") else "pause"
                conn.execute(
                    sa.update(TRANSFERS)
                    .where(TRANSFERS.c.id == latest.id)
                    .values(force_at=now, force_lever=lever)
                )
        if error is not None:
            raise error
        return lever

    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        """Cancel the transfer in flight; the instance keeps running on the source (no-op when
        nothing is in flight). The partial guest stays on the destination until the rollback.

        :raises DriverError: the switchover already happened.
        """
        self._prepare()
        error: FerryError | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            latest = self._latest_transfer(conn, data.instance_uuid, for_update=True)
            if latest is None or not self._matches(latest, data):
                return
            progress = self._observe(conn, latest, now)
            if progress.state == precopy.RUNNING:
                self._cancel(conn, latest, progress, now)
            elif progress.state == precopy.COMPLETED:
                error = DriverError(
                    data.destination,
                    "abort_transfer",
                    f"the switchover already happened: the instance runs on {data.destination}",
                )
        if error is not None:
            raise error

    # -------------------------------------------------------------------------- post
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        """Remove what the instance had on the source: guest definition, instance directory
        (there only without shared storage), volume connections, VIF plugs. Idempotent.

        Fault phase ``post_at_source`` (host = source).

        :raises DriverError: the instance still runs on the source, or an injected fault.
        """
        self._prepare()
        op = "post_live_migration_at_source"
        error: FerryError | None = None
        with self.db.connect() as conn:
            self._settle(conn, self.clock.now_in(conn))
            inst = self._require_instance(conn, data.instance_uuid)
            fault = self._fire(conn, data.source, "post_at_source")
            if fault is not None:
                error = self._fault_error(fault, DriverError, data.source, op)
            elif inst.host == data.source:
                error = DriverError(data.source, op, "the instance still runs on the source")
            else:
                conn.execute(
                    ARTIFACTS.delete().where(
                        ARTIFACTS.c.host == data.source,
                        ARTIFACTS.c.instance_uuid == inst.uuid,
                    )
                )
        if error is not None:
            raise error

    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Make the guest persistent on the destination and activate its VIF plugs; removes
        the destination's check marker. Idempotent.

        Fault phase ``post_at_destination`` (host = destination).

        :raises DriverError: the instance does not run on the destination, or an injected fault.
        """
        self._prepare()
        op = "post_live_migration_at_destination"
        dest = data.destination
        error: FerryError | None = None
        with self.db.connect() as conn:
            now = self.clock.now_in(conn)
            self._settle(conn, now)
            inst = self._require_instance(conn, data.instance_uuid)
            fault = self._fire(conn, dest, "post_at_destination")
            if fault is not None:
                error = self._fault_error(fault, DriverError, dest, op)
            elif inst.host != dest:
                error = DriverError(dest, op, f"the instance does not run on {dest}")
            else:
                wanted = {"guest": "persistent"}
                wanted.update({f"vif:{v['id']}": "plugged" for v in inst.vifs})
                self._put_artifacts(conn, dest, inst.uuid, LIVE, wanted, now)
                conn.execute(
                    sa.update(ARTIFACTS)
                    .where(
                        ARTIFACTS.c.host == dest,
                        ARTIFACTS.c.instance_uuid == inst.uuid,
                        ARTIFACTS.c.name.in_(list(wanted)),
                    )
                    .values(
                        state=sa.case((ARTIFACTS.c.name == "guest", "persistent"), else_="plugged"),
                        origin=LIVE,
                    )
                )
                conn.execute(
                    MARKERS.delete().where(
                        MARKERS.c.instance_uuid == inst.uuid, MARKERS.c.host == dest
                    )
                )
        if error is not None:
            raise error

    # ===================================================================== internals
    def _prepare(self) -> None:
        """Schema, clock row and seeded cluster, once per driver object."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self.ensure_seeded()
                self._ready = True

    def _meta_values(self, spec: ClusterSpec) -> dict[str, Any]:
        builtin = Path(spec.path) == DEMO_CLUSTER.resolve()
        return {
            "id": 1,
            "cluster_name": spec.name,
            "cluster_file": spec.path,
            "builtin": builtin,
            "seeded_at": time.time(),
        }

    def _warn_if_other_cluster(self, meta: Row) -> None:
        if self.cluster_file is not None and meta.cluster_file != str(self.cluster_file):
            log.warning(
                "the database already holds the simulated cluster %r seeded from %s; ignoring %s "
                "(reset the simulated cluster to load it)",
                meta.cluster_name,
                meta.cluster_file,
                self.cluster_file,
            )

    def _seed(self, conn: sa.Connection, spec: ClusterSpec, now: float) -> None:
        conn.execute(
            HOSTS.insert(),
            [
                {
                    "name": h.name,
                    "hypervisor_type": h.hypervisor_type,
                    "hypervisor_version": h.hypervisor_version,
                    "vcpus": h.vcpus,
                    "memory_mb": h.memory_mb,
                    "disk_gb": h.disk_gb,
                    "bandwidth_mbps": h.bandwidth_mbps,
                    "up": h.up,
                    "enabled": h.enabled,
                    "storage_group": h.storage_group,
                    "labels": dict(h.labels),
                    "numa_cells": h.numa_cells,
                }
                for h in spec.hosts
            ],
        )
        groups = {h.name: h.storage_group for h in spec.hosts}
        if spec.instances:
            conn.execute(
                INSTANCES.insert(),
                [dataclasses.asdict(i) for i in spec.instances],
            )
            artifacts = []
            for i in spec.instances:
                states = {"guest": "persistent"}
                if not groups[i.host]:
                    states["instance_dir"] = "present"
                states.update({f"volume:{v['id']}": "connected" for v in i.volumes})
                states.update({f"vif:{v['id']}": "plugged" for v in i.vifs})
                artifacts += [
                    {
                        "host": i.host,
                        "instance_uuid": i.uuid,
                        "name": name,
                        "origin": LIVE,
                        "state": state,
                        "created_at": now,
                    }
                    for name, state in states.items()
                ]
            conn.execute(ARTIFACTS.insert(), artifacts)
        if spec.faults:
            conn.execute(
                FAULTS.insert(),
                [
                    {
                        "host": f.host,
                        "phase": f.phase,
                        "times": f.times,
                        "fired": 0,
                        "at": f.at,
                        "message": f.message,
                        "created_at": time.time(),
                    }
                    for f in spec.faults
                ],
            )

    # ------------------------------------------------------------------- row helpers
    @staticmethod
    def _host_row(conn: sa.Connection, host: str, *, required: bool = False) -> Row | None:
        row = conn.execute(sa.select(HOSTS).where(HOSTS.c.name == host)).first()
        if row is None and required:
            raise HostNotFound(host)
        return row

    @staticmethod
    def _instance_row(conn: sa.Connection, instance_uuid: str) -> Row | None:
        return conn.execute(sa.select(INSTANCES).where(INSTANCES.c.uuid == instance_uuid)).first()

    def _require_instance(self, conn: sa.Connection, instance_uuid: str) -> Row:
        row = self._instance_row(conn, instance_uuid)
        if row is None:
            raise InstanceNotFound(instance_uuid)
        return row

    @staticmethod
    def _usage(conn: sa.Connection, host: str) -> tuple[int, int, int]:
        row = conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(INSTANCES.c.vcpus), 0),
                sa.func.coalesce(sa.func.sum(INSTANCES.c.memory_mb), 0),
                sa.func.coalesce(sa.func.sum(INSTANCES.c.disk_gb), 0),
            ).where(INSTANCES.c.host == host)
        ).one()
        return int(row[0]), int(row[1]), int(row[2])

    @staticmethod
    def _pinnings(conn: sa.Connection, host: str | None = None) -> Any:
        """What pinned guests hold per host: the instances there and the transfers in flight
        into it (an incoming guest already holds its pCPUs, as libvirt's incoming domain does).
        A list of pinnings for one ``host``; host -> list when ``host`` is None."""
        inst = sa.select(INSTANCES.c.host, INSTANCES.c.numa_pinning).where(
            INSTANCES.c.numa_pinning.is_not(None)
        )
        moving = sa.select(TRANSFERS.c.destination, TRANSFERS.c.numa_pinning).where(
            TRANSFERS.c.state == precopy.RUNNING, TRANSFERS.c.numa_pinning.is_not(None)
        )
        if host is not None:
            inst = inst.where(INSTANCES.c.host == host)
            moving = moving.where(TRANSFERS.c.destination == host)
        out: dict[str, list[Pinning]] = {}
        for h, data in [*conn.execute(inst).all(), *conn.execute(moving).all()]:
            if data:
                out.setdefault(h, []).append(Pinning.from_dict(data))
        return out.get(host, []) if host is not None else out

    @staticmethod
    def _numa_state(row: Row, pinnings: list[Pinning]) -> HostNumaState | None:
        if not row.numa_cells:
            return None
        topology = NumaTopology(
            tuple(NumaCell(c["id"], frozenset(c["cpus"]), c["memory_mb"]) for c in row.numa_cells)
        )
        state = HostNumaState(topology)
        for p in pinnings:
            state = state.with_pinning(p)
        return state

    def _host(self, row: Row, usage: tuple[int, int, int], pinnings: list[Pinning]) -> Host:
        labels = dict(row.labels or {})
        return Host(
            name=row.name,
            driver=self.name,
            hypervisor_type=row.hypervisor_type,
            hypervisor_version=int(row.hypervisor_version),
            vcpus=int(row.vcpus),
            memory_mb=int(row.memory_mb),
            disk_gb=int(row.disk_gb),
            vcpus_used=usage[0],
            memory_mb_used=usage[1],
            disk_gb_used=usage[2],
            up=bool(row.up),
            enabled=bool(row.enabled),
            storage_group=row.storage_group,
            labels=labels,
            numa=self._numa_state(row, pinnings),
        )

    @staticmethod
    def _instance(row: Row) -> Instance:
        extra: dict[str, Any] = {"dirty_rate_mbps": float(row.dirty_rate_mbps)}
        if row.cpu_policy:
            extra["cpu_policy"] = row.cpu_policy
        if row.numa_pinning:
            extra["numa_pinning"] = dict(row.numa_pinning)
            extra["pinned_pcpus"] = sorted(Pinning.from_dict(row.numa_pinning).pcpus)
        return Instance(
            uuid=row.uuid,
            name=row.name,
            host=row.host,
            power_state=row.power_state,
            vcpus=int(row.vcpus),
            memory_mb=int(row.memory_mb),
            disk_gb=int(row.disk_gb),
            volumes=[dict(v) for v in row.volumes or []],
            vifs=[dict(v) for v in row.vifs or []],
            extra=extra,
        )

    def _destination_problem(
        self, conn: sa.Connection, inst: Row, source: Row, dest: Row | None, shared: bool
    ) -> str | None:
        if dest is None:
            return "host is not part of the simulated cluster"
        if dest.name == inst.host:
            return "the instance already runs on this host"
        if not dest.up:
            return "host is down"
        if dest.hypervisor_type != source.hypervisor_type:
            return (
                f"hypervisor type {dest.hypervisor_type} differs from the source's "
                f"{source.hypervisor_type}"
            )
        if dest.hypervisor_version < source.hypervisor_version:
            return (
                f"hypervisor version {dest.hypervisor_version} is older than the source's "
                f"{source.hypervisor_version}"
            )
        vcpus, memory, disk = self._usage(conn, dest.name)
        if dest.memory_mb - memory < inst.memory_mb:
            return (
                f"not enough free memory: {dest.memory_mb - memory} MiB free, "
                f"{inst.memory_mb} MiB needed"
            )
        if dest.vcpus - vcpus < inst.vcpus:
            return f"not enough free vcpus: {dest.vcpus - vcpus} free, {inst.vcpus} needed"
        if not shared and dest.disk_gb - disk < inst.disk_gb:
            return (
                f"not enough free disk: {dest.disk_gb - disk} GiB free, {inst.disk_gb} GiB needed"
            )
        return None

    def _fit(self, conn: sa.Connection, inst: Row, dest: Row) -> Pinning | str:
        """The best-fit pinning of a pinned guest on ``dest`` now, or why none fits."""
        state = self._numa_state(dest, self._pinnings(conn, dest.name))
        if state is None:
            return "the host has no NUMA cells; a guest with pinned CPUs needs them"
        return state.fit(GuestRequest(int(inst.vcpus), int(inst.memory_mb), pinned=True))

    def _transfer_pinning(
        self, conn: sa.Connection, inst: Row, dest: Row, data: MigrateData
    ) -> Pinning | str | None:
        """The pinning a transfer of ``inst`` to ``dest`` uses (None: not pinned), or why the
        one handed in ``data.pinning`` cannot be used."""
        if inst.cpu_policy != "dedicated":
            return None
        pinning = data.pinning
        if pinning is None:
            return self._fit(conn, inst, dest)
        state = self._numa_state(dest, self._pinnings(conn, dest.name))
        cell = (
            next((c for c in state.topology.cells if c.id == pinning.cell), None) if state else None
        )
        if state is None or cell is None:
            return f"{dest.name} has no NUMA cell {pinning.cell}"
        if not pinning.pcpus <= cell.cpus:
            return f"pCPUs {sorted(pinning.pcpus - cell.cpus)} are not in NUMA cell {cell.id}"
        taken = set().union(*state.pinned_by_cell.values()) & pinning.pcpus
        if taken:
            return f"pCPUs {sorted(taken)} of {dest.name} are already pinned by another guest"
        free = next(c for c in state.free if c.cell == cell.id)
        if free.free_mb < pinning.memory_mb:
            return f"NUMA cell {cell.id} of {dest.name} has only {free.free_mb} MiB free"
        return pinning

    @staticmethod
    def _pre_artifact_states(inst: Row, data: MigrateData) -> dict[str, str]:
        states: dict[str, str] = {}
        if not data.shared_storage:
            states["instance_dir"] = "present"
        states.update({f"volume:{v['id']}": "connected" for v in inst.volumes or []})
        states.update({f"vif:{v['id']}": "bound" for v in inst.vifs or []})
        return states

    @staticmethod
    def _put_artifacts(
        conn: sa.Connection,
        host: str,
        instance_uuid: str,
        origin: str,
        states: dict[str, str],
        now: float,
    ) -> None:
        insert_ignore(
            conn,
            ARTIFACTS,
            [
                {
                    "host": host,
                    "instance_uuid": instance_uuid,
                    "name": name,
                    "origin": origin,
                    "state": state,
                    "created_at": now,
                }
                for name, state in states.items()
            ],
        )

    # ------------------------------------------------------------------------ faults
    @staticmethod
    def _fire(conn: sa.Connection, host: str, phase: str) -> Row | None:
        """Take one firing of a live fault for (host, phase), atomically; None when none."""
        live = sa.or_(FAULTS.c.times == 0, FAULTS.c.fired < FAULTS.c.times)
        rows = conn.execute(
            sa.select(FAULTS)
            .where(FAULTS.c.host == host, FAULTS.c.phase == phase, live)
            .order_by(FAULTS.c.id)
        ).all()
        for row in rows:
            taken = conn.execute(
                sa.update(FAULTS)
                .where(FAULTS.c.id == row.id, live)
                .values(fired=FAULTS.c.fired + 1)
            ).rowcount
            if taken:
                return row
        return None

    @staticmethod
    def _fault_error(
        fault: Row, kind: type[FerryError], host: str, operation: str | None = None
    ) -> FerryError:
        message = fault.message or f"simulated {fault.phase} fault on {host}"
        if kind is MigrationPreCheckError:
            return MigrationPreCheckError(host, message, fault.phase)
        return DriverError(host, operation or fault.phase, message)

    # --------------------------------------------------------------------- transfers
    @staticmethod
    def _latest_transfer(
        conn: sa.Connection, instance_uuid: str, *, for_update: bool = False
    ) -> Row | None:
        stmt = (
            sa.select(TRANSFERS)
            .where(TRANSFERS.c.instance_uuid == instance_uuid)
            .order_by(TRANSFERS.c.id.desc())
            .limit(1)
        )
        if for_update:
            stmt = stmt.with_for_update()
        return conn.execute(stmt).first()

    @staticmethod
    def _matches(row: Row, data: MigrateData) -> bool:
        """Whether the transfer row belongs to the migration ``data`` describes."""
        if row.source != data.source or row.destination != data.destination:
            return False
        token = data.driver_data.get("token")
        return token is None or row.token is None or row.token == token

    def _insert_transfer(
        self,
        conn: sa.Connection,
        inst: Row,
        source: Row,
        dest: Row,
        data: MigrateData,
        policy: TransferPolicy,
        now: float,
        pinning: Pinning | None = None,
    ) -> None:
        bandwidth = min(float(source.bandwidth_mbps), float(dest.bandwidth_mbps))
        if policy.bandwidth_mbps > 0:
            bandwidth = min(bandwidth, float(policy.bandwidth_mbps))
        dirty = float(inst.dirty_rate_mbps) if inst.power_state == PowerState.RUNNING else 0.0
        values = {
            "instance_uuid": inst.uuid,
            "active_key": inst.uuid,
            "source": data.source,
            "destination": data.destination,
            "state": precopy.RUNNING,
            "started_at": now,
            "ended_at": None,
            "memory_mb": int(inst.memory_mb),
            "dirty_rate_mbps": dirty,
            "bandwidth_mbps": bandwidth,
            "downtime_history": [[now, int(policy.initial_downtime_ms)]],
            "force_at": None,
            "force_lever": None,
            "fail_at": None,
            "fail_message": None,
            "token": data.driver_data.get("token"),
            "policy": dataclasses.asdict(policy),
            "result": None,
            "numa_pinning": pinning.to_dict() if pinning is not None else None,
        }
        if not insert_ignore(conn, TRANSFERS, [values]):
            return  # another process started it a moment ago
        updates: dict[str, Any] = {}
        if self._fire(conn, dest.name, "never_converge") is not None:
            updates["dirty_rate_mbps"] = max(dirty, bandwidth * NEVER_CONVERGE_FACTOR)
        fault = self._fire(conn, dest.name, "transfer")
        if fault is not None:
            updates["fail_at"] = fault.at if fault.at is not None else DEFAULT_FAIL_AT
            updates["fail_message"] = fault.message or f"simulated transfer fault on {dest.name}"
        if updates:
            conn.execute(
                sa.update(TRANSFERS).where(TRANSFERS.c.active_key == inst.uuid).values(**updates)
            )
        self._put_artifacts(conn, dest.name, inst.uuid, INCOMING, {"guest": "incoming"}, now)

    @staticmethod
    def _compute(row: Row, now: float) -> TransferProgress:
        started = float(row.started_at)
        return precopy.simulate(
            memory_mb=float(row.memory_mb),
            dirty_rate_mbps=float(row.dirty_rate_mbps),
            bandwidth_mbps=float(row.bandwidth_mbps),
            downtime_history=[(float(t) - started, float(ms)) for t, ms in row.downtime_history],
            elapsed_s=now - started,
            force_at=None if row.force_at is None else float(row.force_at) - started,
            post_copy=row.force_lever == "post-copy",
            fail_fraction=row.fail_at,
            fail_message=row.fail_message,
        )

    def _observe(self, conn: sa.Connection, row: Row, now: float) -> TransferProgress:
        """The transfer's state now; its end is materialised the first time it is seen."""
        if row.state != precopy.RUNNING:
            if row.result:
                return TransferProgress.from_dict(row.result)
            return TransferProgress(state=row.state)
        progress = self._compute(row, now)
        if progress.state != precopy.RUNNING:
            self._finish(conn, row, progress)
        return progress

    def _settle(self, conn: sa.Connection, now: float) -> None:
        """Materialise every transfer that has ended by ``now`` (one query when none runs)."""
        rows = conn.execute(sa.select(TRANSFERS).where(TRANSFERS.c.state == precopy.RUNNING)).all()
        for row in rows:
            self._observe(conn, row, now)

    def _finish(self, conn: sa.Connection, row: Row, progress: TransferProgress) -> None:
        """Write a transfer's end once (conditional UPDATE); on completion, the switchover."""
        done = conn.execute(
            sa.update(TRANSFERS)
            .where(TRANSFERS.c.id == row.id, TRANSFERS.c.state == precopy.RUNNING)
            .values(
                state=progress.state,
                active_key=None,
                ended_at=float(row.started_at) + progress.elapsed_s,
                result=progress.to_dict(),
            )
        ).rowcount
        if not done or progress.state != precopy.COMPLETED:
            return
        uuid, src, dest = row.instance_uuid, row.source, row.destination
        moved: dict[str, Any] = {"host": dest}
        if row.numa_pinning:  # the guest runs pinned as the transfer was told
            moved["numa_pinning"] = row.numa_pinning
        conn.execute(
            sa.update(INSTANCES)
            .where(INSTANCES.c.uuid == uuid, INSTANCES.c.host == src)
            .values(**moved)
        )
        self._put_artifacts(conn, dest, uuid, LIVE, {"guest": "running"}, float(row.started_at))
        conn.execute(
            sa.update(ARTIFACTS)
            .where(ARTIFACTS.c.host == dest, ARTIFACTS.c.instance_uuid == uuid)
            .values(origin=LIVE)
        )
        conn.execute(
            sa.update(ARTIFACTS)
            .where(ARTIFACTS.c.instance_uuid == uuid, ARTIFACTS.c.name == "guest")
            .values(state=sa.case((ARTIFACTS.c.host == dest, "running"), else_="migrated"))
        )
        log.info("simulated switchover of %s from %s to %s", uuid, src, dest)

    def _cancel(
        self, conn: sa.Connection, row: Row, progress: TransferProgress, now: float
    ) -> None:
        result = dataclasses.replace(progress, state="cancelled", error="aborted by request")
        conn.execute(
            sa.update(TRANSFERS)
            .where(TRANSFERS.c.id == row.id, TRANSFERS.c.state == precopy.RUNNING)
            .values(state="cancelled", active_key=None, ended_at=now, result=result.to_dict())
        )

    def __repr__(self) -> str:
        return f"SimulatedDriver({self.db!r}, speed={self.clock.speed:g})"
