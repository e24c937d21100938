"""Hosts and VMs as ferry sees them: :class:`~ferry.model.Host` from a pool's host records,
``host_metrics`` and default SR; :class:`~ferry.model.Instance` from a VM record."""

from __future__ import annotations

import logging

from ferry.model import Host, Instance

from .config import XenHost
from .faults import MIB, Redactor
from .lookup import Lookup
from .records import XAPI_PROBLEMS, Vm, power_state, to_int, version_number
from .session import NULL_REF, PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")
GIB = 1024 * MIB
DRIVER = "xenapi"
HYPERVISOR_TYPE = "xen"
#: without ``cpu_info.cpu_count`` XAPI tells no CPU count; Xen caps no vCPUs per host anyway
UNKNOWN_CPU_HEADROOM = 64


def host_infos(
    lookup: Lookup, pool: PoolSession, hosts: list[XenHost], redact: Redactor
) -> list[Host]:
    """``hosts`` of ``pool``: capacity (``host_metrics`` memory, ``cpu_info.cpu_count``, the
    pool's default SR), usage (memory in use; vCPUs of the resident VMs; the SR's
    utilisation), version, enabled, live. A pool that cannot be read gives down hosts."""
    try:
        records = pool.call("host.get_all_records")
        by_label = {r.get("name_label"): (ref, r) for ref, r in records.items()}
        vms = lookup.guest_vms(pool)
        sr = lookup.default_sr(pool)
    except XAPI_PROBLEMS as exc:
        reason = f"xenapi pool {pool.url}: {redact(str(exc))}"
        LOG.warning("%s (cannot read its hosts)", reason)
        return [down_host(h, reason) for h in hosts]
    out = []
    for h in hosts:
        found = by_label.get(h.label)
        if found is None:
            reason = f"xenapi pool {pool.url} has no host named {h.label!r}"
            LOG.warning("%s", reason)
            out.append(down_host(h, reason))
            continue
        ref, rec = found
        try:
            metrics = pool.call("host_metrics.get_record", rec.get("metrics", NULL_REF))
        except XAPI_PROBLEMS as exc:
            reason = f"cannot read its metrics: {redact(str(exc))}"
            LOG.warning("xenapi host %s: %s", h.name, reason)
            out.append(down_host(h, reason))
            continue
        resident = [vm for vm in vms if vm.live and vm.resident_on == ref]
        total = to_int(metrics.get("memory_total"))
        free = to_int(metrics.get("memory_free"))
        vcpus_used = sum(to_int(vm.rec.get("VCPUs_max")) for vm in resident)
        cpus = to_int((rec.get("cpu_info") or {}).get("cpu_count"))
        out.append(
            Host(
                name=h.name,
                driver=DRIVER,
                hypervisor_type=HYPERVISOR_TYPE,
                hypervisor_version=version_number(rec.get("software_version") or {}),
                vcpus=cpus or vcpus_used + UNKNOWN_CPU_HEADROOM,
                memory_mb=total // MIB,
                disk_gb=to_int(sr.get("physical_size")) // GIB,
                vcpus_used=vcpus_used,
                memory_mb_used=(total - free) // MIB,
                disk_gb_used=to_int(sr.get("physical_utilisation")) // GIB,
                up=bool(metrics.get("live", True)),
                enabled=bool(rec.get("enabled", True)),
                storage_group=f"xenapi:{pool.url}",
                labels=_labels(h),
            )
        )
    return out


def down_host(h: XenHost, reason: str) -> Host:
    """A host whose pool cannot be read, and why."""
    return Host(
        name=h.name,
        driver=DRIVER,
        hypervisor_type=HYPERVISOR_TYPE,
        hypervisor_version=0,
        vcpus=0,
        memory_mb=0,
        disk_gb=0,
        up=False,
        storage_group=f"xenapi:{h.pool.url}",
        labels=_labels(h),
        down_reason=reason,
    )


def _labels(h: XenHost) -> dict[str, str]:
    return {"xenapi_pool": h.pool.url, "xenapi_host": h.label}


def instance(lookup: Lookup, vm: Vm) -> Instance:
    """The VM as an :class:`Instance`: ``disk_gb`` counts the disks that are copied by a block
    migration (not the volumes); ``volumes`` and ``vifs`` name VDIs/SRs and VIF devices."""
    disks = lookup.disks(vm)
    vifs = lookup.vifs(vm)
    local = sum(d.size for d in disks if not d.volume)
    host = lookup.where(vm)
    if host is None:
        host = lookup.host_name(vm.pool, str(vm.rec.get("affinity") or NULL_REF)) or ""
    return Instance(
        uuid=vm.uuid,
        name=vm.name,
        host=host,
        power_state=power_state(vm.power),
        vcpus=to_int(vm.rec.get("VCPUs_max")) or 1,
        memory_mb=to_int(vm.rec.get("memory_static_max")) // MIB,
        disk_gb=-(-local // GIB),
        volumes=[
            {"id": d.vdi_uuid, "sr": d.sr_uuid, "device": d.userdevice, "shared": d.shared}
            for d in disks
            if d.volume
        ],
        vifs=[{"id": v.device, "network": v.network_name} for v in vifs],
        extra={"xenapi_pool": vm.pool.url},
    )
