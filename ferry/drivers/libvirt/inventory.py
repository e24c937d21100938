"""What the hosts hold: each host's capacity and use (:func:`host_info`), its state alone
(:func:`host_status`), the instances running on it, and where an instance is right now
(:func:`locate`: its home, not the copy a migration is building or leaving behind).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from ferry.drivers.base import InstanceLocation
from ferry.drivers.libvirt.connection import Unreachable, error_code, libvirt_module, message
from ferry.drivers.libvirt.lookup import (
    ACTIVE,
    OP_MIGRATION_IN,
    PAUSED,
    PAUSED_MIGRATION,
    PAUSED_STARTING_UP,
    POWER,
    Found,
    Lookup,
    describe,
    describe_all,
    job,
    state,
    text,
)
from ferry.drivers.libvirt.storage import GIB, Storage
from ferry.drivers.libvirt.transfers import TransferBook
from ferry.drivers.libvirt.xml import GuestDescription, numa_state
from ferry.errors import DriverError, HostNotFound, InstanceNotFound
from ferry.model import Host, Instance, PowerState

LOG = logging.getLogger(__name__)

DRIVER = "libvirt"


def host_info(lookup: Lookup, storage: Storage, host: str) -> Host:
    """Capacity and use of ``host`` (its guests listed); down when libvirtd cannot be
    reached."""
    return _read_host(lookup, host, lambda h, conn: _host_info(lookup, storage, h, conn))


def host_status(lookup: Lookup, host: str) -> Host:
    """One round trip (free memory: the daemon answers) and the connection's static facts;
    no guest listing."""

    def status(host: str, conn: Any) -> Host:
        conn.getFreeMemory()
        facts = lookup.facts(host, conn)
        return Host(
            name=host,
            driver=DRIVER,
            hypervisor_type=facts.hypervisor_type,
            hypervisor_version=facts.hypervisor_version,
            vcpus=facts.vcpus,
            memory_mb=facts.memory_mb,
            disk_gb=0,
            up=True,
            enabled=lookup.specs[host].enabled,
            labels={"host_uuid": facts.host_uuid},
        )

    return _read_host(lookup, host, status)


def _read_host(lookup: Lookup, host: str, read: Callable[[str, Any], Host]) -> Host:
    """``read(host, conn)``; a host whose libvirtd cannot be reached is returned down."""
    lv = libvirt_module()
    spec = lookup.specs.get(host)
    if spec is None:
        raise HostNotFound(host)
    try:
        return lookup.conn(host).call(lambda conn: read(host, conn))
    except (Unreachable, lv.libvirtError, DriverError) as exc:
        reason = text(exc)
        LOG.info("host %s is down: %s", host, reason)
    except Exception as exc:  # a host is reported, never raised: loudly, with the traceback
        reason = text(exc)
        LOG.warning("host %s is reported down: %s", host, reason, exc_info=True)
    return Host(
        name=host,
        driver=DRIVER,
        hypervisor_type="qemu",
        hypervisor_version=0,
        vcpus=0,
        memory_mb=0,
        disk_gb=0,
        up=False,
        enabled=spec.enabled,
        down_reason=reason,
    )


def _host_info(lookup: Lookup, storage: Storage, host: str, conn: Any) -> Host:
    spec = lookup.specs[host]
    facts = lookup.facts(host, conn)
    memory_mb, vcpus = facts.memory_mb, facts.vcpus
    used_mb, used_vcpus = spec.reserved_host_memory_mb, 0
    doms = conn.listAllDomains(1)  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
    for dom in doms:
        _state, max_kib, _mem, ncpu, _t = dom.info()
        used_mb += int(max_kib) // 1024
        used_vcpus += int(ncpu)
    numa = numa_state(facts.topology, describe_all(host, doms)) if facts.topology.cells else None
    disk_gb, disk_used = storage.usage(host)
    return Host(
        name=host,
        driver=DRIVER,
        hypervisor_type=facts.hypervisor_type,
        hypervisor_version=facts.hypervisor_version,
        vcpus=vcpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
        vcpus_used=used_vcpus,
        memory_mb_used=min(used_mb, memory_mb),
        disk_gb_used=disk_used,
        up=True,
        enabled=spec.enabled,
        labels={"host_uuid": facts.host_uuid},
        numa=numa,
    )


def list_instances(lookup: Lookup, host: str | None = None) -> list[Instance]:
    lv = libvirt_module()
    hosts = [host] if host is not None else sorted(lookup.specs)
    if host is not None and host not in lookup.specs:
        raise HostNotFound(host)
    out: list[Instance] = []
    for h in hosts:
        try:
            doms = lookup.call(h, "list domains", lambda c: c.listAllDomains(1))
        except DriverError as exc:
            LOG.info("host %s: cannot list instances: %s", h, exc)
            continue
        for dom in doms:
            try:
                inst = _instance(h, dom)
            except lv.libvirtError as exc:
                LOG.debug("host %s: skipping domain %s: %s", h, dom.name(), message(exc))
                continue
            if inst is not None:
                out.append(inst)
    return sorted(out, key=lambda i: (i.host, i.name))


def _instance(host: str, dom: Any) -> Instance | None:
    """The instance a domain on ``host`` is, or None for a copy that is not the guest's home
    (the incoming side of a migration, the old side of a post-copy one)."""
    st, reason = state(dom)
    if st not in ACTIVE:
        return None
    found = Found(host, dom, st, reason)
    if st == PAUSED and reason in (PAUSED_MIGRATION, PAUSED_STARTING_UP):
        found.job_op = job(dom).get("operation")
    if found.incoming or found.postcopy_source:
        return None
    return _to_instance(host, describe(dom.XMLDesc(0)), st, dom)


def _to_instance(host: str, desc: GuestDescription, st: int, dom: Any) -> Instance:
    lv = libvirt_module()
    disk_bytes = 0
    for disk in desc.local_disks:
        try:
            disk_bytes += int(dom.blockInfo(disk.target)[0])
        except lv.libvirtError as exc:
            LOG.debug(
                "host %s: domain %s: size of %s not counted: %s",
                host,
                desc.name,
                disk.target,
                message(exc),
            )
    extra: dict[str, Any] = {"virt_type": desc.virt_type}
    if desc.pinned:
        extra.update(pinned=True, cpu_policy="dedicated", pinned_pcpus=sorted(desc.pinned_pcpus))
    return Instance(
        uuid=desc.uuid,
        name=desc.name,
        host=host,
        power_state=POWER.get(st, PowerState.NOSTATE).value,
        vcpus=desc.vcpus,
        memory_mb=desc.memory_mb,
        disk_gb=math.ceil(disk_bytes / GIB),
        vifs=[{"type": i.kind, "source": i.source} for i in desc.interfaces],
        extra=extra,
    )


def find_instance(lookup: Lookup, ref: str) -> Instance | None:
    """The instance named or identified by ``ref`` on the first host that has it."""
    lv = libvirt_module()
    for host in sorted(lookup.specs):

        def by_ref(conn: Any, ref: str = ref) -> Any:
            for fn in (conn.lookupByUUIDString, conn.lookupByName):
                try:
                    return fn(ref)
                except lv.libvirtError as exc:
                    if error_code(exc) not in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_INVALID_ARG):
                        raise
            return None

        try:
            dom = lookup.call(host, "look up the domain", by_ref)
            inst = _instance(host, dom) if dom is not None else None
        except (DriverError, lv.libvirtError) as exc:
            LOG.debug("host %s: %s not looked up: %s", host, ref, text(exc))
            continue
        if inst is not None:
            return inst
    return None


def locate(book: TransferBook, instance_uuid: str, found: list[Found]) -> InstanceLocation:
    """Where the guest is, from its domains ``found`` on the hosts."""
    if not found:
        raise InstanceNotFound(instance_uuid)
    active = [f for f in found if f.active]
    home = next((f for f in active if f.switched_over), None)
    if home is None:
        home = next((f for f in active if f.outgoing), None)
    if home is None:
        home = next((f for f in active if not f.incoming and not f.postcopy_source), None)
    if home is None:
        home = active[0] if active else found[0]
    outgoing = next((f for f in active if f.outgoing), None)
    incoming = next((f for f in active if f.job_op == OP_MIGRATION_IN), None)
    destination = incoming.host if incoming else None
    if outgoing is not None and destination is None:
        destination = book.running_to(instance_uuid)
    power = POWER.get(home.state, PowerState.NOSTATE).value
    if home.state == PAUSED and home.outgoing and home.reason == PAUSED_MIGRATION:
        power = PowerState.RUNNING.value  # the stop-and-copy pause of a live guest
    return InstanceLocation(
        instance_uuid=instance_uuid,
        host=home.host,
        power_state=power,
        transfer_in_flight=outgoing is not None,
        transfer_destination=destination if outgoing is not None else None,
    )


def artifacts(lookup: Lookup, storage: Storage, host: str, instance_uuid: str) -> list[str]:
    """What ``instance_uuid`` has on ``host``: its domain definition, instance directory and
    check markers."""
    out = []
    dom = lookup.domain(host, instance_uuid)
    if dom is not None:
        out.append(f"domain {dom.name()}")
    if storage.has_instance_dir(host, instance_uuid):
        out.append(f"dir {storage.instance_dir(host, instance_uuid)}")
    out.extend(f"marker {m}" for m in storage.markers(host, instance_uuid))
    return out
