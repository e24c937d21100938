"""The XenAPI pre-checks (Nova's ``check_can_live_migrate_destination`` / ``_source``).

Both raise :class:`.records.Refused` or a XAPI problem; the driver turns either into a
:class:`~ferry.errors.MigrationPreCheckError` on the host where the check ran.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from ferry.errors import InstanceNotFound
from ferry.model import MigrateData

from . import networks, storage
from .lookup import Lookup
from .receive import ReceiveStore
from .records import Refused
from .sendargs import default_sr_uuid, destination_sr, receive_data

#: Nova's message (InvalidSharedStorage) for a live migration without block migration or
#: shared storage of an instance with a local disk
NO_SHARED_STORAGE_REASON = (
    "live migration can not be used without shared storage except a booted from volume VM "
    "which does not have a local disk"
)


def check_destination(
    lookup: Lookup,
    receive: ReceiveStore,
    instance_uuid: str,
    destination: str,
    block_migration: bool | None,
) -> MigrateData:
    """Same pool as the source (the source host's uuid is among the destination pool's hosts)
    with every disk on a shared SR (or a volume) -> no block migration (``pool_migrate``),
    checked with ``VM.assert_can_boot_here``; otherwise block migration: the destination's
    management network, ``host.migrate_receive`` (its data kept in ``receive`` only), the
    pool's default SR. ``block_migration=None`` decides as described.

    :raises InstanceNotFound:
    """
    dest = lookup.hosts[destination]
    vm = lookup.require_vm(instance_uuid)
    source = lookup.where(vm)
    if source is None:
        raise Refused(f"the instance is {vm.power}; it must be running or paused")
    if source == destination:
        raise Refused("the instance already runs on this host")
    dpool = lookup.pools[dest.pool.url]
    dest_ref = lookup.host_ref(dpool, dest)
    dest_rec = dpool.call("host.get_record", dest_ref)
    if not dest_rec.get("enabled", True):
        raise Refused("host is disabled")
    source_uuid = vm.pool.call("host.get_uuid", vm.resident_on)
    hosts = dpool.call("host.get_all_records").values()
    same_pool = any(r.get("uuid") == source_uuid for r in hosts)
    # volumes are connected on the destination host by pre_live_migration
    disks = lookup.disks(vm)
    shared = same_pool and all(d.shared or d.volume for d in disks)
    block = (not shared) if block_migration is None else bool(block_migration)
    token = uuidlib.uuid4().hex
    driver_data: dict[str, Any] = {
        "token": token,
        "same_pool": same_pool,
        "destination_host_uuid": dest_rec.get("uuid"),
        "migration_network": None,
        "destination_sr": None,
    }
    if block:
        network, network_uuid = networks.migration_network(dpool, dest_ref)
        receive.receive(token, dpool, dest_ref, network)
        driver_data["migration_network"] = network_uuid
        driver_data["destination_sr"] = default_sr_uuid(lookup, dpool)
    else:
        vm.pool.call("VM.assert_can_boot_here", vm.ref, dest_ref)
    return MigrateData(
        instance_uuid=vm.uuid,
        source=source,
        destination=destination,
        block_migration=block,
        shared_storage=shared,
        driver_data=driver_data,
    )


def check_source(lookup: Lookup, receive: ReceiveStore, data: MigrateData) -> MigrateData:
    """On the source pool: the VM runs on ``data.source``; block migration on shared storage,
    and live migration of a local disk without block migration, are refused (Nova's rules).
    With block migration, ``VM.assert_can_migrate`` with every non-CD VDI mapped (to the
    destination SR; a volume to its SR when the destination host sees it already -- a plugged
    PBD there --, else the destination SR stands in until pre_live_migration connects it: Nova
    left such VDIs out and ignored the VDI_NOT_IN_MAP, which skips XAPI's later checks) and,
    across pools, every VIF mapped to the destination's management network (the interim
    networks do not exist yet).

    Adds ``volume_srs`` and ``vif_devices`` to ``driver_data``.

    :raises InstanceNotFound:
    """
    spool = lookup.pool_of(data.source)
    vm = lookup.vm_in(spool, data.instance_uuid)
    if vm is None:
        raise InstanceNotFound(data.instance_uuid)
    here = lookup.where(vm)
    if here != data.source:
        raise Refused(f"the instance runs on {here or 'no host'}, not on {data.source}")
    if data.block_migration and data.shared_storage:
        raise Refused("cannot block-migrate an instance on shared storage")
    if not data.block_migration and not data.shared_storage:
        raise Refused(NO_SHARED_STORAGE_REASON)
    disks = lookup.disks(vm)
    vifs = lookup.vifs(vm)
    if data.block_migration:
        dpool = lookup.pool_of(data.destination)
        dest = receive_data(lookup, receive, data)
        dest_sr = destination_sr(lookup, dpool, data)
        dest_ref = lookup.host_ref(dpool, lookup.hosts[data.destination])
        vdi_map = {
            d.vdi: (storage.attached_sr(lookup, dpool, d.sr_uuid, dest_ref) if d.volume else None)
            or dest_sr
            for d in disks
        }
        vif_map: dict[str, str] = {}
        if not data.driver_data.get("same_pool"):
            network_uuid = str(data.driver_data.get("migration_network"))
            network = lookup.network_by_uuid(dpool, network_uuid)
            vif_map = {v.ref: network for v in vifs}
        spool.call("VM.assert_can_migrate", vm.ref, dest, True, vdi_map, vif_map, {})
    return data.with_driver_data(
        volume_srs=sorted({d.sr_uuid for d in disks if d.volume}),
        vif_devices=[v.device for v in vifs],
    )
