"""The libvirt driver: real QEMU guests moved between libvirt hosts with ``migrateToURI3``.

One :class:`LibvirtDriver` serves every ``driver = "libvirt"`` host of the config, with one
connection per host URI (:class:`~ferry.drivers.libvirt.connection.HostConnection`). The phases:

* **checks** -- destination: reachable, not the source (host UUIDs differ), same hypervisor type
  and a version >= the source's, the guest's CPU model accepted (``compareHypervisorCPU``), free
  memory after ``reserved_host_memory_mb``, the guest's networks present and active, and for a
  pinned guest one NUMA cell with enough free pCPUs and memory (a new pinning is computed).
  Shared storage is detected by writing a marker file into the destination's ``instances_path``
  (through a libvirt storage pool, so no shell access is needed) and looking for it from the
  source; block migration follows when the request leaves it open. Source: the domain is active,
  and block migration is refused for shared storage (and the other way round for local disks).
* **pre_live_migration** -- the instance directory (and, for a block migration, empty disk
  images of the right size) on the destination; its rollback removes exactly that and any partial
  domain the transfer left.
* **transfer** -- ``migrateToURI3`` with ``PEER2PEER | LIVE | PERSIST_DEST | UNDEFINE_SOURCE``
  (+ ``NON_SHARED_DISK``, ``POSTCOPY``, ``AUTO_CONVERGE`` as the request and policy say), run in
  a thread of its own on a connection of its own; with the ``[libvirt]`` transport the
  destination check settled (``TLS``, ``PARALLEL``, ``COMPRESSED``, the migration network's
  address: :mod:`.transport`); ferry's monitor polls :meth:`transfer_progress`
  (``jobStats``), raises the max downtime in steps, forces completion (post-copy or pause) or
  aborts (``abortJob``). Between two polls it waits in :meth:`wait_transfer_end`, which returns
  as soon as that call does, so the switchover is not seen up to a poll interval late.
* **crash reconciliation** -- a peer-to-peer migration runs inside the source libvirtd, which
  carries on when ferry dies. After a restart nothing is known in memory, so every question is
  put to libvirt: an outgoing job on the source -> the transfer is still running (the monitor
  re-attaches); the domain active on the destination and gone from the source -> done (roll
  forward); neither -> the transfer is reported as never started and the transfer task **starts
  it again** (the source guest is untouched, so a restart is safe and cheaper than a revert).

The modules, one reason to change each: :mod:`.connection` (a host's connection, libvirt-python
imported lazily), :mod:`.xml` (domain and capabilities XML), :mod:`.lookup` (finding a guest,
domain states, static host facts), :mod:`.storage` (``instances_path`` through storage pools),
:mod:`.inventory` (host info, instances, where a guest is), :mod:`.checks`, :mod:`.prepare`
(pre-migration and its rollback), :mod:`.transfers` (this process's transfers and their
progress), :mod:`.migrate` (starting one), :mod:`.monitor` (watching and steering one),
:mod:`.post`. This class reads as their table of contents.
"""

from __future__ import annotations

from collections.abc import Iterable

from ferry.config import HostConfig
from ferry.drivers.base import Driver, InstanceLocation, TransferPolicy
from ferry.drivers.libvirt import checks, inventory, migrate, monitor, post, prepare
from ferry.drivers.libvirt.connection import HostSpec, libvirt_module
from ferry.drivers.libvirt.lookup import Lookup
from ferry.drivers.libvirt.storage import Storage
from ferry.drivers.libvirt.transfers import TransferBook
from ferry.model import Host, Instance, MigrateData, TransferProgress
from ferry.transport import Transport


class LibvirtDriver(Driver):
    """Live migration between libvirt hosts (QEMU/KVM) through libvirt-python."""

    name = inventory.DRIVER

    #: how long an abort waits for libvirt to end the job (seconds)
    abort_timeout = 60.0
    #: how long an abort / force-complete right after the start waits for the job to show
    start_timeout = 10.0

    def __init__(self, hosts: Iterable[HostSpec]) -> None:
        self.specs: dict[str, HostSpec] = {}
        for spec in hosts:
            if spec.name in self.specs:
                raise ValueError(f"host {spec.name!r} given twice")
            self.specs[spec.name] = spec
        self._lookup = Lookup(self.specs)
        self._storage = Storage(self._lookup)
        self._book = TransferBook()
        libvirt_module()  # fail at construction with the extra's name when libvirt is missing

    @classmethod
    def from_host_configs(cls, configs: Iterable[HostConfig]) -> LibvirtDriver:
        return cls(HostSpec.from_options(c.name, dict(c.options)) for c in configs)

    # ---------------------------------------------------------------- inventory
    def hosts(self) -> list[str]:
        return sorted(self.specs)

    def host_info(self, host: str) -> Host:
        return inventory.host_info(self._lookup, self._storage, host)

    def host_status(self, host: str) -> Host:
        return inventory.host_status(self._lookup, host)

    def list_instances(self, host: str | None = None) -> list[Instance]:
        return inventory.list_instances(self._lookup, host)

    def find_instance(self, ref: str) -> Instance | None:
        return inventory.find_instance(self._lookup, ref)

    def locate(self, instance_uuid: str) -> InstanceLocation:
        return inventory.locate(self._book, instance_uuid, self._lookup.find(instance_uuid))

    def artifacts(self, host: str, instance_uuid: str) -> list[str]:
        """What ``instance_uuid`` has on ``host``: its domain definition, instance directory and
        check markers (tests use it to prove a rollback leaves nothing behind)."""
        return inventory.artifacts(self._lookup, self._storage, host, instance_uuid)

    # -------------------------------------------------------------------- checks
    def check_can_live_migrate_destination(
        self,
        instance: Instance,
        destination: str,
        block_migration: bool | None,
        transport: Transport | None = None,
    ) -> MigrateData:
        return checks.check_destination(
            self._lookup,
            self._storage,
            self._book,
            instance,
            destination,
            block_migration,
            transport,
        )

    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        self._storage.remove_markers(destination, data.instance_uuid)

    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        return checks.check_source(self._lookup, instance, data)

    # ------------------------------------------------------------------- prepare
    def pre_live_migration(self, instance: Instance, data: MigrateData) -> MigrateData:
        return prepare.pre_live_migration(self._lookup, self._storage, instance, data)

    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        prepare.rollback_at_destination(
            self._lookup, self._storage, self._book, instance, data, self.abort_transfer
        )

    # ------------------------------------------------------------------ transfer
    def start_transfer(self, instance: Instance, data: MigrateData, policy: TransferPolicy) -> None:
        migrate.start(self._lookup, self._book, instance, data, policy)

    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        return monitor.transfer_progress(self._lookup, self._book, instance, data)

    def wait_transfer_end(self, instance: Instance, data: MigrateData, timeout: float) -> bool:
        """Waits on the ``migrateToURI3`` call this process runs, so the switchover is seen at
        once; False when there is no such call to wait on (the monitor sleeps)."""
        return monitor.wait_transfer_end(self._book, data, timeout)

    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        monitor.set_max_downtime(self._lookup, self._book, data, downtime_ms, self.start_timeout)

    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        return monitor.force_complete(self._lookup, self._book, instance, data, self.start_timeout)

    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        monitor.abort(
            self._lookup,
            self._book,
            instance,
            data,
            abort_timeout=self.abort_timeout,
            start_timeout=self.start_timeout,
        )

    # ---------------------------------------------------------------------- post
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        post.at_source(self._lookup, self._storage, self._book, instance, data)

    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        post.at_destination(self._lookup, self._book, instance, data)

    def close(self) -> None:
        self._lookup.close()
