"""After the switchover: the source forgets the guest (the stale side of a post-copy
migration destroyed, its definition and instance directories removed) and the destination
keeps it (a persistent definition, a guest paused to force completion resumed).
"""

from __future__ import annotations

from ferry.drivers.libvirt.connection import error_code, libvirt_module, message
from ferry.drivers.libvirt.inventory import locate
from ferry.drivers.libvirt.lookup import OP_MIGRATION_IN, PAUSED, Lookup, job, state
from ferry.drivers.libvirt.storage import Storage
from ferry.drivers.libvirt.transfers import TransferBook
from ferry.errors import DriverError
from ferry.model import Instance, MigrateData, PowerState


def at_source(
    lookup: Lookup, storage: Storage, book: TransferBook, instance: Instance, data: MigrateData
) -> None:
    lv = libvirt_module()
    # where it runs now, as seen by the two hosts of this migration (the guest cannot be
    # on a third one: it left the source for the destination, nowhere else)
    loc = locate(book, instance.uuid, lookup.find(instance.uuid, [data.source, data.destination]))
    if loc.host != data.destination or loc.transfer_in_flight:
        raise DriverError(
            data.source,
            "post_live_migration_at_source",
            f"{instance.name} has not switched over to {data.destination} "
            f"(it runs on {loc.host}"
            f"{', transfer in flight' if loc.transfer_in_flight else ''})",
        )
    # asked again, not taken from the lookup above: find skips a host it cannot reach, and an
    # unreachable source must fail this step (the roll-forward retries it), not pass it
    dom = lookup.domain(data.source, instance.uuid)
    if dom is not None:
        try:
            if dom.isActive():
                dom.destroy()  # the stale side of a finished post-copy migration
            if dom.isPersistent():
                dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
        except lv.libvirtError as exc:
            if error_code(exc) != lv.VIR_ERR_NO_DOMAIN:
                raise DriverError(data.source, "undefine the source domain", message(exc)) from None
    if not data.shared_storage:
        for name in storage.instance_dirs(instance.uuid, data):
            storage.remove_instance_dir(data.source, name)


def at_destination(
    lookup: Lookup, book: TransferBook, instance: Instance, data: MigrateData
) -> None:
    lv = libvirt_module()
    dom = lookup.domain(data.destination, instance.uuid)
    if dom is None or not dom.isActive():
        raise DriverError(
            data.destination,
            "post_live_migration_at_destination",
            f"{instance.name} is not running on {data.destination}",
        )
    try:
        if not dom.isPersistent():
            conn = dom.connect()
            conn.defineXML(dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE))
        st, _reason = state(dom)
        if (
            st == PAUSED
            and instance.power_state == PowerState.RUNNING
            and job(dom).get("operation") != OP_MIGRATION_IN
        ):
            dom.resume()  # paused to force completion: the guest was running
    except lv.libvirtError as exc:
        raise DriverError(
            data.destination, "post_live_migration_at_destination", message(exc)
        ) from None
    book.release_pinning(data)
