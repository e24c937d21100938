"""The steps on either side of the transfer, on the pools: pre_live_migration (volume SRs
connected and, across pools, networks for the VIFs on the destination), its undoing by the
rollback, and the clean-ups after the switchover at the source and the destination.

Each raises :class:`.records.Refused` or a XAPI problem; the driver turns either into a
:class:`~ferry.errors.DriverError` of the step.
"""

from __future__ import annotations

from ferry.model import MigrateData

from . import networks, storage
from .lookup import Lookup
from .records import Refused, Vm


def prepare_destination(lookup: Lookup, data: MigrateData) -> MigrateData:
    """See :meth:`XenAPIDriver.pre_live_migration`."""
    dpool = lookup.pool_of(data.destination)
    vm = lookup.require_vm(data.instance_uuid)
    if vm.pool is dpool and lookup.where(vm) == data.destination:
        return data  # replayed after the switchover
    dest_ref = lookup.host_ref(dpool, lookup.hosts[data.destination])
    connected = sorted({d.sr_uuid for d in lookup.disks(vm) if d.volume})
    for sr_uuid in connected:
        storage.connect_volume_sr(lookup, vm, dpool, dest_ref, sr_uuid)
    chosen: dict[str, str] = {}
    if not data.driver_data.get("same_pool"):
        for vif in lookup.vifs(vm):
            chosen[vif.device] = networks.destination_network(
                lookup, dpool, data.instance_uuid, vif
            )
    return data.with_driver_data(interim_networks=chosen, connected_srs=connected)


def undo_prepare(lookup: Lookup, data: MigrateData) -> None:
    """Disconnect the volume SRs pre_live_migration connected on the destination pool and
    destroy the instance's interim networks there; refused after the switchover (nothing
    removed)."""
    dpool = lookup.pool_of(data.destination)
    vm = lookup.vm(data.instance_uuid)
    if vm is not None and vm.pool is dpool and lookup.where(vm) == data.destination:
        raise Refused(
            f"the instance already runs on {data.destination} (switchover happened); "
            "nothing removed"
        )
    volume_srs, devices = volumes_and_vifs(lookup, data, vm)
    for sr_uuid in volume_srs:
        storage.disconnect_volume_sr(lookup, dpool, sr_uuid, data.instance_uuid)
    if dpool is not lookup.pool_of(data.source):
        for device in devices:
            networks.destroy_interim_network(lookup, dpool, data.instance_uuid, device)


def clean_source(lookup: Lookup, data: MigrateData) -> None:
    """See :meth:`XenAPIDriver.post_live_migration_at_source`."""
    vm = lookup.vm(data.instance_uuid)
    where = lookup.where(vm)
    if where == data.source:
        raise Refused("the instance still runs on the source")
    if where != data.destination:
        raise Refused(f"the instance runs on {where or 'no host'}, not on {data.destination}")
    spool = lookup.pool_of(data.source)
    if spool is lookup.pool_of(data.destination):
        return
    volume_srs, devices = volumes_and_vifs(lookup, data, vm)
    for sr_uuid in volume_srs:
        storage.forget_unused_sr(lookup, spool, sr_uuid)
    for device in devices:
        networks.destroy_interim_network(lookup, spool, data.instance_uuid, device)


def clean_destination_disks(lookup: Lookup, data: MigrateData) -> None:
    """Remove the ``base_mirror`` key storage motion leaves in the sm_config of the VDIs of the
    VM on the destination; refused when the VM does not run there."""
    dpool = lookup.pool_of(data.destination)
    vm = lookup.vm_in(dpool, data.instance_uuid)
    if vm is None or lookup.where(vm) != data.destination:
        raise Refused(f"the instance does not run on {data.destination}")
    for disk in lookup.disks(vm):
        if "base_mirror" in disk.sm_config:
            dpool.call("VDI.remove_from_sm_config", disk.vdi, "base_mirror")


def volumes_and_vifs(
    lookup: Lookup, data: MigrateData, vm: Vm | None
) -> tuple[list[str], list[str]]:
    """Volume SR uuids and VIF devices of the instance: from ``driver_data`` (the source
    check sets them), else from the VM as it is now."""
    srs = data.driver_data.get("volume_srs")
    devices = data.driver_data.get("vif_devices")
    if vm is not None and srs is None:
        srs = sorted({d.sr_uuid for d in lookup.disks(vm) if d.volume})
    if vm is not None and devices is None:
        devices = [v.device for v in lookup.vifs(vm)]
    return [str(s) for s in srs or []], [str(d) for d in devices or []]
