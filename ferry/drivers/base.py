"""The driver contract: what ferry asks of a hypervisor, phase by phase.

A driver object may serve several hosts (the simulated cluster serves all of its hosts; a libvirt
driver serves one URI per host). Every method names the host or instance it acts on, says what it
raises, and is **safe to call twice**: TaskFlow re-runs the atom that was running when a process
died, so a repeated call must find its own earlier work and carry on, never fail or duplicate it.

Raised errors are ferry's typed errors (:mod:`ferry.errors`):

* :class:`~ferry.errors.MigrationPreCheckError` -- a destination/source check failed for this
  host; the reschedule excludes the host and tries the next one.
* :class:`~ferry.errors.DriverError` (and :class:`~ferry.errors.TransferFailed`) -- an operation
  failed; the migration reverts.
* :class:`~ferry.errors.InstanceNotFound`, :class:`~ferry.errors.ComputeHostUnavailable`.

No method returns or stores a secret in :class:`~ferry.model.MigrateData`: drivers keep
credentials and session material in process memory and obtain them again after a restart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ferry.model import Host, Instance, MigrateData, TransferProgress
from ferry.transport import Transport


@dataclass
class InstanceLocation:
    """Where an instance runs right now, and whether a transfer of it is in flight."""

    instance_uuid: str
    host: str | None
    power_state: str
    transfer_in_flight: bool = False
    transfer_destination: str | None = None


@dataclass
class TransferPolicy:
    """Knobs the monitor hands to the driver when starting a transfer (Nova's names)."""

    bandwidth_mbps: float = 0.0  # 0 = unlimited
    initial_downtime_ms: int = 50
    permit_auto_converge: bool = False
    auto_converge_initial: int = 0  # % CPU throttle at the first step; 0 = the hypervisor's
    auto_converge_increment: int = 0  # % added at each further step; 0 = the hypervisor's
    permit_post_copy: bool = False


class Driver(abc.ABC):
    """One hypervisor technology (simulated, libvirt, XenAPI)."""

    #: short name used in config files and host listings
    name: str = "abstract"

    # ---------------------------------------------------------------- inventory
    @abc.abstractmethod
    def hosts(self) -> list[str]:
        """Names of the hosts this driver serves. Raises nothing."""

    @abc.abstractmethod
    def host_info(self, host: str) -> Host:
        """Capacity, usage, hypervisor type/version and up/enabled state of ``host``.

        A host that cannot be reached is returned with ``up=False`` (not raised).
        Raises :class:`~ferry.errors.HostNotFound` when the driver does not serve ``host``.
        """

    def host_status(self, host: str) -> Host:
        """Up/enabled state and hypervisor type/version of ``host``, read now; capacity and
        usage may be left out (zeros). For checks that need nothing else (the source is up, the
        destination's hypervisor matches). Drivers override it when that is cheaper than
        :meth:`host_info`; same errors."""
        return self.host_info(host)

    def host_infos(self, hosts: list[str]) -> list[Host]:
        """:meth:`host_info` of several hosts; drivers override it to read them in one go.
        Hosts whose info cannot be read are left out."""
        return [self.host_info(h) for h in hosts]

    @abc.abstractmethod
    def list_instances(self, host: str | None = None) -> list[Instance]:
        """Instances on ``host`` (all served hosts when ``None``). Raises nothing for down hosts."""

    @abc.abstractmethod
    def find_instance(self, ref: str) -> Instance | None:
        """The instance whose UUID or name is ``ref``, or ``None``.

        Raises :class:`~ferry.errors.DriverError` only when a host or pool that may hold it cannot
        be asked (unreachable, authentication failed), saying which and why."""

    @abc.abstractmethod
    def locate(self, instance_uuid: str) -> InstanceLocation:
        """Where the instance runs now and whether a transfer is in flight.

        The basis of reconciliation on resume. Raises :class:`~ferry.errors.InstanceNotFound`.
        """

    # ------------------------------------------------------------------ checks
    @abc.abstractmethod
    def check_can_live_migrate_destination(
        self,
        instance: Instance,
        destination: str,
        block_migration: bool | None,
        transport: Transport | None = None,
    ) -> MigrateData:
        """Run on the destination: room, storage, networks. Decides block migration when
        ``block_migration`` is ``None`` (block migration iff storage is not shared).
        ``transport`` (the ``[libvirt]`` options; None = plain) is checked by the drivers that
        use it (libvirt: TLS certificates, an address in the migration network) and travels in
        the migrate data to the transfer; the others ignore it.

        Raises :class:`~ferry.errors.MigrationPreCheckError` (host excluded, next one tried).
        """

    @abc.abstractmethod
    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        """Undo whatever the destination check left behind (markers, reservations).

        Never raises for work already undone.
        """

    @abc.abstractmethod
    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        """Run on the source against the destination's data (e.g. block migration refused when a
        disk is on shared storage). Raises :class:`~ferry.errors.MigrationPreCheckError`.
        """

    # ----------------------------------------------------------------- prepare
    @abc.abstractmethod
    def pre_live_migration(self, instance: Instance, data: MigrateData) -> MigrateData:
        """Prepare the destination: instance directory, volumes, networks.

        Raises :class:`~ferry.errors.DriverError`. Calling it again after success is a no-op.
        """

    @abc.abstractmethod
    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Remove everything pre_live_migration (or a partial transfer) left on the destination.

        Safe when nothing was created. Raises :class:`~ferry.errors.DriverError` only when the
        destination could not be cleaned (the caller records it as a leftover).
        """

    # ---------------------------------------------------------------- transfer
    @abc.abstractmethod
    def start_transfer(self, instance: Instance, data: MigrateData, policy: TransferPolicy) -> None:
        """Start the live transfer and return at once (the monitor polls progress).

        A transfer of this instance already in flight is left alone (no-op).
        Raises :class:`~ferry.errors.TransferFailed`.
        """

    @abc.abstractmethod
    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        """The transfer's current state (``none`` when no transfer is known). Raises nothing for a
        finished transfer: it reports ``completed``, ``failed`` (with ``error``) or ``cancelled``.
        """

    def wait_transfer_end(self, instance: Instance, data: MigrateData, timeout: float) -> bool:
        """The monitor's pause between two polls: wait up to ``timeout`` seconds of real time,
        returning early when the transfer ends, and return True; or return False at once when
        this driver cannot wait on the transfer (the monitor then sleeps on its own clock).

        The default returns False: drivers whose time is not wall time (the simulated cluster)
        must never block here. Raises nothing."""
        return False

    @abc.abstractmethod
    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        """Raise the allowed switchover pause of the transfer in flight (downtime steps)."""

    @abc.abstractmethod
    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        """Make the transfer finish now (post-copy when permitted, else pause the guest).

        Returns the lever used (``post-copy`` or ``pause``).
        Raises :class:`~ferry.errors.DriverError`.
        """

    @abc.abstractmethod
    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        """Abort the transfer in flight; the guest keeps running on the source.

        No-op when nothing is in flight. Raises :class:`~ferry.errors.DriverError` when the
        switchover already happened (the transfer can no longer be aborted).
        """

    # -------------------------------------------------------------------- post
    @abc.abstractmethod
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        """Clean the source after the switchover (domain undefined, local files removed unless
        storage is shared, volumes disconnected). Raises :class:`~ferry.errors.DriverError`, also
        when the guest has not switched over yet (the source copy must never be destroyed first).
        """

    @abc.abstractmethod
    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        """Finish on the destination (guest persistent and running, networks plugged).

        Raises :class:`~ferry.errors.DriverError`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Default: nothing to release."""
