"""The checks before a migration. Destination: reachable, not the source (host UUIDs differ),
same hypervisor type and a version >= the source's, the guest's CPU model accepted
(``compareHypervisorCPU``), free memory after ``reserved_host_memory_mb``, the guest's networks
present and active, a NUMA cell for a pinned guest (a new pinning is computed), the transport
(:mod:`.transport`: TLS certificates, an address in the migration network) and whether the
instances path is shared. Source: the domain is active and its disks fit the storage (block
migration for local disks, none for shared storage).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from ferry.drivers.libvirt import transport as transports
from ferry.drivers.libvirt.connection import Unreachable, error_code, libvirt_module, message
from ferry.drivers.libvirt.inventory import host_info
from ferry.drivers.libvirt.lookup import ACTIVE, Lookup, describe, state
from ferry.drivers.libvirt.storage import Storage
from ferry.drivers.libvirt.transfers import TransferBook
from ferry.drivers.libvirt.xml import GuestDescription
from ferry.errors import HostNotFound, InstanceNotFound, MigrationPreCheckError
from ferry.model import Instance, MigrateData
from ferry.model.numa import GuestRequest, Pinning
from ferry.transport import Transport

MIB = 1024 * 1024


def check_destination(
    lookup: Lookup,
    storage: Storage,
    book: TransferBook,
    instance: Instance,
    destination: str,
    block_migration: bool | None,
    transport: Transport | None = None,
) -> MigrateData:
    """``check_can_live_migrate_destination``: the migrate data, or MigrationPreCheckError."""
    if destination not in lookup.specs:
        raise HostNotFound(destination)
    source = instance.host

    def reject(reason: str) -> MigrationPreCheckError:
        return MigrationPreCheckError(destination, reason, "check_destination")

    dest = host_info(lookup, storage, destination)
    if not dest.up:
        raise reject("libvirtd cannot be reached")
    if not dest.enabled:
        raise reject("host is disabled")
    src_dom = lookup.domain(source, instance.uuid)
    if src_dom is None:
        raise InstanceNotFound(instance.uuid)
    desc = describe(src_dom.XMLDesc(0))
    # the source's identity, type and version: its static facts (no guest listing)
    src = lookup.read_facts(source)
    if dest.labels.get("host_uuid") and dest.labels.get("host_uuid") == src.host_uuid:
        raise reject(f"it is the same libvirt host as {source} ({dest.labels['host_uuid']})")
    if dest.hypervisor_type != src.hypervisor_type:
        raise reject(f"hypervisor {dest.hypervisor_type} differs from {src.hypervisor_type}")
    if dest.hypervisor_version < src.hypervisor_version:
        raise reject(
            f"hypervisor version {_version(dest.hypervisor_version)} is older than the "
            f"source's {_version(src.hypervisor_version)}"
        )
    if lookup.domain(destination, instance.uuid) is not None:
        raise reject(f"a domain with the UUID of {instance.name} is already defined there")
    # what is left after the reserve and the guests' allocations, and what the hypervisor
    # really has free (other processes use memory too): the smaller counts
    free = dest.free_memory_mb
    real_free = int(
        lookup.call(destination, "read free memory", lambda c: c.getFreeMemory()) // MIB
    )
    if min(free, real_free) < desc.memory_mb:
        raise reject(
            f"not enough free memory: {max(free, 0)} MiB unallocated "
            f"(reserved {lookup.specs[destination].reserved_host_memory_mb} MiB), "
            f"{real_free} MiB free on the host; {instance.name} needs {desc.memory_mb} MiB"
        )
    _check_cpu(lookup, destination, desc, reject)
    missing = missing_networks(lookup, destination, desc)
    if missing:
        raise reject("; ".join(missing))
    pinning: Pinning | None = None
    if desc.pinned:
        fitted = _fit_pinning(lookup, book, destination, desc)
        if isinstance(fitted, str):
            raise reject(fitted)
        pinning = fitted
    settled: dict[str, Any] = {}
    if transport is not None and not transport.plain:
        settled, why = transports.check(lookup, source, destination, transport)
        if why:
            raise reject(why)
    shared = storage.shared(instance.uuid, source, destination)
    block = (not shared) if block_migration is None else bool(block_migration)
    driver_data: dict[str, Any] = {
        "instances_path": lookup.specs[destination].instances_path,
        # names this attempt's transfer (a later attempt of the same move is another transfer)
        "transfer_id": uuidlib.uuid4().hex,
    }
    if settled:
        driver_data["transport"] = settled
    return MigrateData(
        instance_uuid=instance.uuid,
        source=source,
        destination=destination,
        block_migration=block,
        shared_storage=shared,
        driver_data=driver_data,
        pinning=pinning,
    )


def _check_cpu(
    lookup: Lookup,
    destination: str,
    desc: GuestDescription,
    reject: Callable[[str], MigrationPreCheckError],
) -> None:
    if desc.cpu_xml is None:
        return
    lv = libvirt_module()

    def compare(conn: Any) -> int:
        try:
            return int(
                conn.compareHypervisorCPU(
                    desc.emulator, desc.arch, desc.machine, desc.virt_type, desc.cpu_xml, 0
                )
            )
        except lv.libvirtError as exc:
            if error_code(exc) == lv.VIR_ERR_NO_SUPPORT:
                return int(conn.compareCPU(desc.cpu_xml, 0))
            raise

    try:
        result = lookup.conn(destination).call(compare)
    except lv.libvirtError as exc:
        raise reject(f"the guest's CPU is not accepted: {message(exc)}") from None
    except Unreachable as exc:
        raise reject(str(exc)) from None
    if result == lv.VIR_CPU_COMPARE_INCOMPATIBLE:
        raise reject("the guest's CPU model is not compatible with this host")


def missing_networks(lookup: Lookup, host: str, desc: GuestDescription) -> list[str]:
    """What of the guest's networks and bridges ``host`` lacks (empty: nothing)."""
    lv = libvirt_module()
    missing = []
    for iface in desc.interfaces:
        if iface.kind == "network" and iface.source:

            def active(conn: Any, name: str = iface.source) -> bool | None:
                try:
                    return bool(conn.networkLookupByName(name).isActive())
                except lv.libvirtError as exc:
                    if error_code(exc) == lv.VIR_ERR_NO_NETWORK:
                        return None
                    raise

            st = lookup.call(host, "look up a network", active)
            if st is None:
                missing.append(f"network {iface.source} does not exist")
            elif not st:
                missing.append(f"network {iface.source} is not active")
        elif iface.kind == "bridge" and iface.source:

            def bridge(conn: Any, name: str = iface.source) -> bool | None:
                try:
                    return bool(conn.interfaceLookupByName(name).isActive())
                except lv.libvirtError as exc:
                    if error_code(exc) == lv.VIR_ERR_NO_INTERFACE:
                        return False
                    return None  # no interface backend: cannot tell, do not block

            if lookup.call(host, "look up a bridge", bridge) is False:
                missing.append(f"bridge {iface.source} does not exist")
    return missing


def _fit_pinning(
    lookup: Lookup, book: TransferBook, destination: str, desc: GuestDescription
) -> Pinning | str:
    """A pinning for the guest on ``destination``, counting the pinnings of transfers on
    their way there, or why there is none."""
    numa = lookup.numa_state(destination)
    for p in book.inbound_pinnings(destination):
        numa = numa.with_pinning(p)
    return numa.fit(GuestRequest(desc.vcpus, desc.memory_mb, pinned=True))


def check_source(lookup: Lookup, instance: Instance, data: MigrateData) -> MigrateData:
    """``check_can_live_migrate_source``: ``data`` with the guest's local disks."""
    dom = lookup.domain(data.source, instance.uuid)
    if dom is None:
        raise InstanceNotFound(instance.uuid)
    st, _reason = state(dom)
    if st not in ACTIVE:
        raise MigrationPreCheckError(
            data.source, f"{instance.name} is not active on {data.source}", "check_source"
        )
    desc = describe(dom.XMLDesc(0))
    path = lookup.specs[data.source].instances_path
    if data.block_migration and data.shared_storage:
        raise MigrationPreCheckError(
            data.destination,
            f"block migration requested but {path} is shared between {data.source} and "
            f"{data.destination}: migrate without --block-migrate",
            "check_source",
        )
    if not data.block_migration and not data.shared_storage and desc.local_disks:
        disks = ", ".join(d.target for d in desc.local_disks)
        raise MigrationPreCheckError(
            data.destination,
            f"{instance.name} has local disks ({disks}) and {path} is not shared with "
            f"{data.destination}: use block migration",
            "check_source",
        )
    if desc.local_disks:
        data = data.with_driver_data(has_local_disks=True)
    if data.block_migration and desc.local_disks:
        data = data.with_driver_data(
            migrate_disks=[d.target for d in desc.local_disks],
            disks=[
                {
                    "target": d.target,
                    "source": d.source,
                    "format": d.driver_type,
                    "bytes": int(dom.blockInfo(d.target)[0]),
                }
                for d in desc.local_disks
            ],
        )
    return data


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
