"""The XenAPI driver: ferry's phases on XenServer / XCP-ng pools, the way Nova's driver did them.

* **Destination check** -- same pool as the source (the source host's uuid is among the
  destination pool's hosts) and every disk on a shared SR or a volume: ``VM.pool_migrate``
  later, no block migration, ``VM.assert_can_boot_here`` checks the host. Otherwise block
  migration (across pools, or a host-local disk within the pool): the destination's management
  network (``PIF.get_all_records_where``), ``host.migrate_receive`` for the migrate-send data
  and the pool's default SR for the disks (:mod:`.checks`, :mod:`.sendargs`).
* **Source check** -- ``VM.assert_can_migrate`` with every non-CD VDI mapped to an SR and,
  across pools, every VIF mapped to a network.
* **pre_live_migration** -- on the destination pool: the VM's volume SRs connected
  (:mod:`.storage`) and, across pools, a network for every VIF (:mod:`.networks`). Rollback
  undoes exactly that (:mod:`.prepost`, as are the post steps).
* **Transfer** -- ``Async.VM.migrate_send`` or ``Async.VM.pool_migrate``, the task tagged so that
  a restarted ferry finds it (:mod:`.tasks`); progress is the task's; abort is ``task.cancel``.
* **Post** -- at the source (only after the switchover): the volume SRs and interim networks the
  VM left there; at the destination: ``VDI.remove_from_sm_config(base_mirror)``.

Secrets -- the password and every session ref, ours and the one in the migrate-send data
(:mod:`.receive`) -- stay in process memory; ``driver_data`` holds uuids, names and a token, and
every message passes a redactor. XAPI problems become ferry's typed errors at this edge
(:mod:`.guards`; ``raise ... from None``: no chained XAPI exception reaches TaskFlow's
persisted failures).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ferry.clock import Clock, SystemClock
from ferry.config import HostConfig
from ferry.drivers.base import Driver, InstanceLocation, TransferPolicy
from ferry.errors import (
    DriverError,
    InstanceNotFound,
    MigrationPreCheckError,
    TransferFailed,
)
from ferry.model import Host, Instance, MigrateData, TransferProgress
from ferry.transport import Transport

from . import checks, inventory, prepost, sendargs
from .config import XenHost, parse_hosts
from .faults import Redactor
from .guards import failing, precheck
from .lookup import Lookup
from .receive import ReceiveStore
from .records import (
    IN_FLIGHT,
    TAG_DESTINATION,
    TAG_TOKEN,
    XAPI_PROBLEMS,
    Refused,
    Task,
    epoch,
    looks_like_uuid,
    pick,
    power_state,
)
from .session import PoolSession, load_sdk
from .tasks import TaskBook

LOG = logging.getLogger("ferry.drivers.xenapi")


class XenAPIDriver(Driver):
    """Serves the ``[[hosts]]`` with ``driver = "xenapi"``; one session per pool master.

    :param hosts: the validated hosts (:func:`~ferry.drivers.xenapi.config.parse_hosts`).
    :param clock: ferry's clock (the orchestrator uses the driver's); the system clock by
        default.
    :param sdk: the ``XenAPI`` module; imported when ``None``.
    :raises ConfigError: the XenAPI SDK is not installed.
    """

    name = "xenapi"

    def __init__(
        self, hosts: Sequence[XenHost], *, clock: Clock | None = None, sdk: Any = None
    ) -> None:
        sdk = sdk if sdk is not None else load_sdk()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._redact = Redactor()
        pools: dict[str, PoolSession] = {}
        for h in hosts:
            pools.setdefault(h.pool.url, PoolSession(h.pool, sdk, self._redact))
        self._lookup = Lookup(hosts, pools)
        self._tasks = TaskBook(self._lookup, self._redact)
        self._receive = ReceiveStore(self._redact)

    @classmethod
    def from_host_configs(
        cls,
        configs: Iterable[HostConfig],
        *,
        base_dir: str | Path | None = None,
        clock: Clock | None = None,
    ) -> XenAPIDriver:
        """One driver for every ``driver = "xenapi"`` host of the config (hosts naming the same
        ``url`` share a session). ``base_dir`` (the config file's directory) resolves relative
        ``password_file`` / ``ca_file`` paths.

        :raises ConfigError: invalid host entries, or the XenAPI SDK is missing.
        """
        hosts = parse_hosts(configs, Path(base_dir) if base_dir is not None else None)
        return cls(hosts, clock=clock)

    # ================================================================== inventory
    def hosts(self) -> list[str]:
        """The configured xenapi hosts, sorted."""
        return sorted(self._lookup.hosts)

    def host_info(self, host: str) -> Host:
        """Capacity, usage, version and state of ``host`` (see :func:`.inventory.host_infos`);
        ``up=False`` when its pool master cannot be reached or the pool has no such host.

        :raises HostNotFound:
        """
        xh = self._lookup.host(host)
        pool = self._lookup.pools[xh.pool.url]
        return inventory.host_infos(self._lookup, pool, [xh], self._redact)[0]

    def host_infos(self, hosts: list[str]) -> list[Host]:
        """:meth:`host_info` of several hosts, a few calls per pool; hosts this driver does not
        serve are left out."""
        wanted = [self._lookup.hosts[h] for h in hosts if h in self._lookup.hosts]
        out: list[Host] = []
        for url, pool in self._lookup.pools.items():
            mine = [h for h in wanted if h.pool.url == url]
            if mine:
                out.extend(inventory.host_infos(self._lookup, pool, mine, self._redact))
        return sorted(out, key=lambda h: h.name)

    def list_instances(self, host: str | None = None) -> list[Instance]:
        """VMs resident on ``host`` (on every served host when ``None``; control domains,
        templates and snapshots left out). A pool that cannot be read is skipped (logged)."""
        if host is not None and host not in self._lookup.hosts:
            return []
        urls = [self._lookup.hosts[host].pool.url] if host else list(self._lookup.pools)
        out: list[Instance] = []
        for url in urls:
            pool = self._lookup.pools[url]
            try:
                for vm in self._lookup.guest_vms(pool):
                    where = self._lookup.where(vm)
                    if where in self._lookup.hosts and (host is None or where == host):
                        out.append(inventory.instance(self._lookup, vm))
            except XAPI_PROBLEMS as exc:
                LOG.warning("xenapi pool %s: cannot list VMs: %s", url, self._say(exc))
        return sorted(out, key=lambda i: (i.host, i.name))

    def find_instance(self, ref: str) -> Instance | None:
        """The VM whose uuid (preferred) or name_label is ``ref``, or ``None``. Of two copies
        (mid-migration), the running one.

        :raises DriverError: a pool cannot be asked (unreachable, authentication failed)."""
        try:
            copies = self._lookup.vm_copies(ref) if looks_like_uuid(ref) else []
            vm = pick(copies or self._lookup.vms_named(ref))
            return inventory.instance(self._lookup, vm) if vm is not None else None
        except XAPI_PROBLEMS as exc:
            reason = self._say(exc)
            LOG.warning("xenapi: cannot look up instance %r: %s", ref, reason)
            raise DriverError("xenapi", "find instance", reason) from None

    def locate(self, instance_uuid: str) -> InstanceLocation:
        """Where the VM is resident now (``resident_on`` in whichever pool holds it: the source
        pool, or the destination pool with a new ref after a cross-pool switchover), and whether
        a migrate task of it (tagged, or in its ``current_operations``) is still in flight.

        :raises InstanceNotFound: no pool has the VM.
        :raises DriverError: a pool cannot be asked (ferry cannot tell where the VM is).
        """
        with failing(self._redact, "xenapi", "locate"):
            copies = self._lookup.vm_copies(instance_uuid)
            vm = pick(copies)
            if vm is None:
                raise InstanceNotFound(instance_uuid)
            tasks = self._tasks.of_instance(instance_uuid, copies)
            task = next((t for t in tasks if t.status in IN_FLIGHT), None)
            return InstanceLocation(
                instance_uuid=vm.uuid,
                host=self._lookup.where(vm),
                power_state=power_state(vm.power),
                transfer_in_flight=task is not None,
                transfer_destination=task.tags.get(TAG_DESTINATION) if task else None,
            )

    # ===================================================================== checks
    def check_can_live_migrate_destination(
        self,
        instance: Instance,
        destination: str,
        block_migration: bool | None,
        transport: Transport | None = None,
    ) -> MigrateData:
        """Same pool with every disk on a shared SR (or a volume) -> no block migration
        (``pool_migrate``), checked with ``VM.assert_can_boot_here``; otherwise block
        migration: management network, ``host.migrate_receive`` (its data kept in memory only),
        the pool's default SR (:func:`.checks.check_destination`). ``block_migration=None``
        decides as described.

        :raises MigrationPreCheckError: (host = ``destination``) with the reason: an unknown or
            disabled host, a host short of memory (HOST_NOT_ENOUGH_FREE_MEMORY from
            ``VM.assert_can_boot_here``; with block migration real XAPI reports it only in the
            source check's ``VM.assert_can_migrate``), no management IP, no default SR, an
            unreachable pool master...
        :raises InstanceNotFound:
        """
        phase = "check_destination"
        if destination not in self._lookup.hosts:
            raise MigrationPreCheckError(destination, "not a host of the xenapi driver", phase)
        with precheck(self._redact, destination, phase):
            return checks.check_destination(
                self._lookup, self._receive, instance.uuid, destination, block_migration
            )

    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        """Forget the check's migrate-send data and log its destination session out (best
        effort; the transfer asks ``host.migrate_receive`` again). Never raises."""
        self._receive.drop(data.driver_data.get("token"))

    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        """On the source pool: the VM runs on ``data.source``; Nova's shared-storage rules;
        with block migration ``VM.assert_can_migrate`` with every non-CD VDI and, across pools,
        every VIF mapped (:func:`.checks.check_source`). Adds ``volume_srs`` and
        ``vif_devices`` to ``driver_data``.

        :raises MigrationPreCheckError: (host = the source) with the reason.
        :raises InstanceNotFound:
        """
        with precheck(self._redact, data.source, "check_source"):
            return checks.check_source(self._lookup, self._receive, data)

    # ==================================================================== prepare
    def pre_live_migration(self, instance: Instance, data: MigrateData) -> MigrateData:
        """On the destination pool: every volume SR of the VM visible on the destination host
        (:func:`.storage.connect_volume_sr`: ``SR.introduce``, ``PBD.create`` + ``PBD.plug``,
        ``SR.scan`` as needed) and, across pools, a network for every VIF: its network's
        namesake there, else an interim network (:func:`.networks.destination_network`).
        Returns ``data`` with ``connected_srs`` and ``interim_networks`` (VIF device -> network
        name); a second call finds what the first made and returns the same.

        :raises DriverError: (host = destination) with the reason.
        """
        with failing(self._redact, data.destination, "pre_live_migration"):
            return prepost.prepare_destination(self._lookup, data)

    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Undo pre_live_migration on the destination pool: this migration's task is cancelled
        if still in flight (and then destroyed); volume SRs are disconnected
        (:func:`.storage.disconnect_volume_sr`: ferry's PBDs unplugged, an SR ferry introduced
        forgotten); the instance's interim networks are destroyed. The VM is left to XAPI (a
        failed cross-pool migration destroys its half-made copy). Idempotent.

        :raises DriverError: the switchover already happened (nothing removed), or the
            destination could not be cleaned.
        """
        with failing(self._redact, data.destination, "rollback_live_migration_at_destination"):
            task = self._own_task(data)
            if task is not None and task.status in IN_FLIGHT:
                task = self._tasks.cancel_and_wait(task, self.clock)
            prepost.undo_prepare(self._lookup, data)
            if task is not None:
                self._tasks.forget(data, task)
            self._receive.drop(data.driver_data.get("token"))

    # =================================================================== transfer
    def start_transfer(self, instance: Instance, data: MigrateData, policy: TransferPolicy) -> None:
        """Start ``Async.VM.pool_migrate`` (no block migration) or ``Async.VM.migrate_send``
        (every non-CD VDI to the destination SR or its volume's SR; across pools every VIF to
        the network pre_live_migration chose), with fresh migrate-send data, and tag the task
        (:class:`.tasks.TaskBook`). XAPI has no bandwidth or downtime knobs: ``policy`` is not
        used.

        No-op when this migration's task exists (in any state: never started twice), when a
        migrate task of the instance is in flight (an untagged one, started just before a
        crash, is adopted), or when the VM already runs on the destination.

        :raises TransferFailed: the VM is not running on the source, or XAPI refused.
        """
        with failing(self._redact, data.source, "transfer", TransferFailed):
            if self._tasks.find(data) is not None:
                return
            copies = self._lookup.vm_copies(data.instance_uuid)
            running = [
                t
                for t in self._tasks.of_instance(data.instance_uuid, copies)
                if t.status in IN_FLIGHT
            ]
            for task in running:
                if TAG_TOKEN not in task.tags:
                    self._tasks.adopt(task, data)
            if running:
                return
            vm = pick(copies)
            if vm is None:
                raise InstanceNotFound(data.instance_uuid)
            here = self._lookup.where(vm)
            if here == data.destination:
                return
            if here != data.source:
                raise Refused(f"the instance runs on {here or 'no host'}, not on {data.source}")
            if vm.power != "running":
                raise Refused(f"the instance is {vm.power}; XAPI live-migrates running VMs only")
            dpool = self._lookup.pool_of(data.destination)
            if data.block_migration:
                dest = sendargs.receive_data(self._lookup, self._receive, data, fresh=True)
                vdi_map, vif_map = sendargs.transfer_maps(self._lookup, vm, dpool, data)
                args: tuple[Any, ...] = (vm.ref, dest, True, vdi_map, vif_map, {})
                method = "Async.VM.migrate_send"
            else:
                dest_ref = self._lookup.host_ref(dpool, self._lookup.hosts[data.destination])
                args = (vm.ref, dest_ref, {"live": "true"})
                method = "Async.VM.pool_migrate"
            ref = self._tasks.start(vm.pool, method, *args, data=data)
            LOG.info("xenapi: %s: %s to %s (task %s)", instance.name, method, data.destination, ref)

    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        """This migration's task as a :class:`TransferProgress`: ``pending``/``cancelling`` ->
        ``running``, ``success`` -> ``completed``, ``failure`` -> ``failed`` (error: the XAPI
        error code as a sentence), ``cancelled``. XAPI's progress (the storage copy, then the
        memory) is reported against the VM's memory. Without a task: ``completed`` when the VM
        runs on the destination, else ``none``. Never raises: a pool that cannot be asked is
        reported ``running`` with a warning (the monitor asks again; its timeout applies).
        """
        total = float(instance.memory_mb)
        try:
            task = self._tasks.find(data)
            if task is None:
                if self._lookup.where(self._lookup.vm(data.instance_uuid)) == data.destination:
                    return TransferProgress("completed", total, total, 0.0, iteration=1)
                return TransferProgress(state="none")
        except XAPI_PROBLEMS as exc:
            LOG.warning("xenapi: %s: cannot read the transfer: %s", instance.name, self._say(exc))
            return TransferProgress("running", total, 0.0, total)
        status = task.status
        fraction = min(max(float(task.rec.get("progress") or 0.0), 0.0), 1.0)
        created, finished = epoch(task.rec.get("created")), epoch(task.rec.get("finished"))
        end = finished if status not in IN_FLIGHT and finished else self.clock.now()
        elapsed = max(0.0, end - created) if created else 0.0
        if status == "success":
            return TransferProgress("completed", total, total, 0.0, iteration=1, elapsed_s=elapsed)
        done = total * fraction
        progress = TransferProgress(
            "running", total, done, total - done, iteration=int(fraction > 0), elapsed_s=elapsed
        )
        if status == "cancelled":
            progress.state, progress.error = "cancelled", "the XAPI task was cancelled"
        elif status == "failure":
            progress.state, progress.error = "failed", self._tasks.error(task)
        return progress

    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        """No-op: XAPI (xenopsd) decides the switchover pause itself and has no knob for it."""
        if downtime_ms < 0:
            raise ValueError("the max downtime must be >= 0 ms")
        LOG.debug("xenapi: %s: XAPI has no max-downtime setting; ignored", instance.name)

    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        """Not supported: XAPI can neither switch a live migration to post-copy nor pause the
        guest mid-migration.

        :raises DriverError: always (use ``live_migration_timeout_action = "abort"``).
        """
        raise DriverError(
            data.source,
            "force_complete",
            "XAPI cannot force a live migration to complete (no post-copy, no pause); "
            'use live_migration_timeout_action = "abort" for XenAPI hosts',
        )

    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        """``task.cancel`` of this migration's task, then wait (on the driver's clock) until the
        task stopped: the VM stays on the source. No-op when nothing is in flight.

        :raises DriverError: the switchover already happened (the task succeeded, or XAPI no
            longer allowed the cancel and it then succeeded), or the task did not stop.
        """
        with failing(self._redact, data.source, "abort_transfer"):
            task = self._own_task(data)
            if task is None:
                if self._lookup.where(self._lookup.vm(data.instance_uuid)) == data.destination:
                    raise self._too_late(data)
                return
            if task.status in IN_FLIGHT:
                task = self._tasks.cancel_and_wait(task, self.clock)
            if task.status == "success":
                raise self._too_late(data)

    # ======================================================================= post
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        """After the switchover only. Across pools: the source pool's volume SRs of the VM are
        forgotten unless another VM there uses them (:func:`.storage.forget_unused_sr`) and its
        interim networks there (from an earlier migration into that pool) destroyed. Within a
        pool nothing is left behind. Idempotent.

        :raises DriverError: the VM still runs on the source (nothing touched), or XAPI refused.
        """
        with failing(self._redact, data.source, "post_live_migration_at_source"):
            prepost.clean_source(self._lookup, data)

    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """After the switchover: the ``base_mirror`` key storage motion leaves in the VDIs'
        sm_config is removed (Nova's CA-98606 clean-up), this migration's finished task
        destroyed and its migrate-send data forgotten. ferry records the new host itself (the
        driver reports ``resident_on``). Idempotent.

        :raises DriverError: the VM does not run on the destination.
        """
        with failing(self._redact, data.destination, "post_live_migration_at_destination"):
            prepost.clean_destination_disks(self._lookup, data)
            task = self._tasks.find(data)
            if task is not None:
                self._tasks.forget(data, task)
            self._receive.drop(data.driver_data.get("token"))

    def close(self) -> None:
        """Forget every migrate-send data (logging its sessions out) and log out of the pools."""
        self._receive.drop_all()
        for pool in self._lookup.pools.values():
            pool.close()

    # ================================================================== internals
    def _own_task(self, data: MigrateData) -> Task | None:
        """This migration's task; else an untagged migrate task of the instance in flight,
        adopted: started by this migration when its reply or its tagging was lost (a crash, a
        dropped connection), since the instance lock admits one ferry migration at a time."""
        task = self._tasks.find(data)
        if task is not None:
            return task
        copies = self._lookup.vm_copies(data.instance_uuid)
        for t in self._tasks.of_instance(data.instance_uuid, copies):
            if t.status in IN_FLIGHT and TAG_TOKEN not in t.tags:
                self._tasks.adopt(t, data)
                return t
        return None

    def _say(self, exc: BaseException) -> str:
        return self._redact(str(exc))

    @staticmethod
    def _too_late(data: MigrateData) -> DriverError:
        return DriverError(
            data.destination,
            "abort_transfer",
            f"the switchover already happened: the instance runs on {data.destination}",
        )

    def __repr__(self) -> str:
        return f"XenAPIDriver(hosts={self.hosts()!r})"
