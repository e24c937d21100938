"""The destination before the transfer: the instance directory (and, for a block migration,
empty disk images of the right size); and its undo, the rollback, which removes exactly that
and any partial domain the transfer left -- never a copy the guest already runs as.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.drivers.libvirt.checks import missing_networks
from ferry.drivers.libvirt.connection import error_code, libvirt_module, message
from ferry.drivers.libvirt.lookup import Lookup, describe
from ferry.drivers.libvirt.storage import Storage
from ferry.drivers.libvirt.transfers import TransferBook
from ferry.errors import DriverError, InstanceNotFound
from ferry.model import Instance, MigrateData


def pre_live_migration(
    lookup: Lookup, storage: Storage, instance: Instance, data: MigrateData
) -> MigrateData:
    dom = lookup.domain(data.source, instance.uuid)
    if dom is None:
        raise InstanceNotFound(instance.uuid)
    desc = describe(dom.XMLDesc(0))
    missing = missing_networks(lookup, data.destination, desc)
    if missing:
        raise DriverError(data.destination, "pre_live_migration", "; ".join(missing))
    if not data.shared_storage:
        for name in storage.instance_dirs(instance.uuid, data):
            storage.make_instance_dir(data.destination, name)
        for disk in data.driver_data.get("disks", []):
            storage.precreate_disk(data.destination, disk)
    return data


def rollback_at_destination(
    lookup: Lookup,
    storage: Storage,
    book: TransferBook,
    instance: Instance,
    data: MigrateData,
    abort: Callable[[Instance, MigrateData], None],
) -> None:
    """Undo :func:`pre_live_migration` and the transfer on the destination; ``abort`` ends a
    transfer still running."""
    lv = libvirt_module()
    t = book.get(data)
    if t is not None and t.outcome is None:
        abort(instance, data)
    found = {f.host: f for f in lookup.find(instance.uuid, [data.source, data.destination])}
    src, dst = found.get(data.source), found.get(data.destination)
    if dst is not None:
        if dst.active and not dst.incoming and not (src is not None and src.active):
            raise DriverError(
                data.destination,
                "rollback at destination",
                f"{instance.name} switched over to {data.destination} already; "
                "its only copy is not destroyed",
            )
        if dst.outgoing or (src is not None and src.outgoing):
            abort(instance, data)
        try:
            if dst.active:
                dst.dom.destroy()
            if dst.dom.isPersistent():
                dst.dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
        except lv.libvirtError as exc:
            if error_code(exc) != lv.VIR_ERR_NO_DOMAIN:
                raise DriverError(
                    data.destination, "remove the partial domain", message(exc)
                ) from None
    if not data.shared_storage:
        for name in storage.instance_dirs(instance.uuid, data):
            storage.remove_instance_dir(data.destination, name)
    storage.remove_markers(data.destination, data.instance_uuid)
