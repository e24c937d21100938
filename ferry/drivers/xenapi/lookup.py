"""Finding things in the pools: hosts by name, VMs by uuid or name (in whichever pool holds
them), a VM's disks and VIFs, SRs and networks. Read-only XAPI calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ferry.errors import HostNotFound, InstanceNotFound

from .config import XenHost
from .faults import XapiError
from .records import XAPI_PROBLEMS, Disk, Refused, Vif, Vm, is_guest, pick, quote, to_int
from .session import NULL_REF, PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")


class Lookup:
    """The configured hosts and their pools' sessions, and what can be looked up in them."""

    def __init__(self, hosts: Sequence[XenHost], pools: dict[str, PoolSession]) -> None:
        self.hosts: dict[str, XenHost] = {h.name: h for h in hosts}
        self.pools = pools
        # (pool url, XAPI name_label) -> ferry host name
        self._names = {(h.pool.url, h.label): h.name for h in hosts}
        self._labels: dict[tuple[str, str], str] = {}  # (pool url, host ref) -> name_label
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- hosts
    def host(self, name: str) -> XenHost:
        """:raises HostNotFound: not a host of this driver."""
        try:
            return self.hosts[name]
        except KeyError:
            raise HostNotFound(name) from None

    def pool_of(self, host: str) -> PoolSession:
        return self.pools[self.host(host).pool.url]

    def host_ref(self, pool: PoolSession, host: XenHost) -> str:
        refs = pool.call("host.get_by_name_label", host.label)
        if len(refs) != 1:
            raise Refused(
                f"the pool at {pool.url} has {len(refs)} hosts named {host.label!r} (expected 1)"
            )
        return str(refs[0])

    def host_name(self, pool: PoolSession, host_ref: str) -> str | None:
        """ferry's name of the XAPI host ``host_ref`` (its name_label when not configured)."""
        if not host_ref or host_ref == NULL_REF:
            return None
        key = (pool.url, host_ref)
        with self._lock:
            label = self._labels.get(key)
        if label is None:  # a host ref lives as long as the host is in the pool: cached
            label = str(pool.call("host.get_name_label", host_ref))
            with self._lock:
                self._labels[key] = label
        return self._names.get((pool.url, label), label)

    def where(self, vm: Vm | None) -> str | None:
        """ferry's name of the host ``vm`` runs on; ``None`` when it does not run."""
        if vm is None or not vm.live:
            return None
        return self.host_name(vm.pool, vm.resident_on)

    # ---------------------------------------------------------------------------- VMs
    def vm_in(self, pool: PoolSession, vm_uuid: str) -> Vm | None:
        try:
            ref = pool.call("VM.get_by_uuid", vm_uuid)
        except XapiError as exc:
            if exc.code == "UUID_INVALID":
                return None
            raise
        return Vm(pool, str(ref), pool.call("VM.get_record", ref))

    def vm_copies(self, vm_uuid: str) -> list[Vm]:
        """The VM's records in every pool (two while a real XAPI migrates it across pools).

        A pool that cannot be asked is skipped when another pool has the VM (logged); when none
        has it, that pool's error is raised (the VM may be there: not "not found").
        """
        return self._each_pool(lambda pool: self._guest(self.vm_in(pool, vm_uuid)), vm_uuid)

    def _each_pool(self, find: Callable[[PoolSession], list[Vm]], what: str) -> list[Vm]:
        out: list[Vm] = []
        errors: list[Exception] = []
        for pool in self.pools.values():
            try:
                out.extend(find(pool))
            except XAPI_PROBLEMS as exc:
                errors.append(exc)
        if errors and not out:
            raise errors[0]
        for error in errors:
            LOG.info("xenapi: looking for %r, a pool could not be asked: %s", what, error)
        return out

    @staticmethod
    def _guest(vm: Vm | None) -> list[Vm]:
        return [vm] if vm is not None and is_guest(vm.rec) else []

    def vm(self, vm_uuid: str) -> Vm | None:
        """The running copy of the VM (see :func:`~.records.pick`), or ``None``."""
        return pick(self.vm_copies(vm_uuid))

    def require_vm(self, vm_uuid: str) -> Vm:
        """:raises InstanceNotFound:"""
        vm = self.vm(vm_uuid)
        if vm is None:
            raise InstanceNotFound(vm_uuid)
        return vm

    def vms_named(self, name: str) -> list[Vm]:
        """VMs called ``name`` in every pool (unreachable pools as in :meth:`vm_copies`)."""

        def named(pool: PoolSession) -> list[Vm]:
            refs = pool.call("VM.get_by_name_label", name)
            return [
                vm for r in refs for vm in self._guest(Vm(pool, r, pool.call("VM.get_record", r)))
            ]

        return self._each_pool(named, name)

    def guest_vms(self, pool: PoolSession) -> list[Vm]:
        where = (
            'field "is_control_domain"="false" and field "is_a_template"="false" '
            'and field "is_a_snapshot"="false"'
        )
        records = pool.call("VM.get_all_records_where", where)
        return [Vm(pool, ref, rec) for ref, rec in records.items() if is_guest(rec)]

    def disks(self, vm: Vm) -> list[Disk]:
        """The VM's disks (CDs and empty drives left out) with their VDI and SR."""
        out = []
        srs: dict[str, dict[str, Any]] = {}
        for vbd in vm.rec.get("VBDs", []):
            rec = vm.pool.call("VBD.get_record", vbd)
            vdi = rec.get("VDI", NULL_REF)
            if rec.get("type") == "CD" or rec.get("empty") or vdi == NULL_REF:
                continue
            vdi_rec = vm.pool.call("VDI.get_record", vdi)
            sr = vdi_rec["SR"]
            if sr not in srs:
                srs[sr] = vm.pool.call("SR.get_record", sr)
            sr_rec = srs[sr]
            out.append(
                Disk(
                    vbd=vbd,
                    userdevice=str(rec.get("userdevice", "")),
                    vdi=vdi,
                    vdi_uuid=str(vdi_rec.get("uuid", "")),
                    size=to_int(vdi_rec.get("virtual_size")),
                    sm_config=dict(vdi_rec.get("sm_config") or {}),
                    sr=sr,
                    sr_uuid=str(sr_rec.get("uuid", "")),
                    sr_type=str(sr_rec.get("type", "")),
                    sr_content_type=str(sr_rec.get("content_type", "")),
                    shared=bool(sr_rec.get("shared")),
                )
            )
        return out

    def vifs(self, vm: Vm) -> list[Vif]:
        """The VM's VIFs with their network's name, by device."""
        out = []
        for vif in vm.rec.get("VIFs", []):
            rec = vm.pool.call("VIF.get_record", vif)
            net = rec.get("network", NULL_REF)
            net_rec = vm.pool.call("network.get_record", net) if net != NULL_REF else {}
            out.append(
                Vif(
                    ref=vif,
                    device=str(rec.get("device", "")),
                    network=net,
                    network_name=str(net_rec.get("name_label", "")),
                    mtu=str(rec.get("MTU") or net_rec.get("MTU") or "1500"),
                )
            )
        return sorted(out, key=lambda v: v.device)

    # -------------------------------------------------------------- storage, networks
    @staticmethod
    def sr_by_uuid(pool: PoolSession, sr_uuid: str) -> str | None:
        try:
            return str(pool.call("SR.get_by_uuid", sr_uuid))
        except XapiError as exc:
            if exc.code == "UUID_INVALID":
                return None
            raise

    @staticmethod
    def default_sr(pool: PoolSession) -> dict[str, Any]:
        """The pool's default SR record (``{}`` when it has none)."""
        pool_ref = pool.call("pool.get_all")[0]
        sr = pool.call("pool.get_default_SR", pool_ref)
        return dict(pool.call("SR.get_record", sr)) if sr != NULL_REF else {}

    @staticmethod
    def network_by_uuid(pool: PoolSession, net_uuid: str) -> str:
        return str(pool.call("network.get_by_uuid", net_uuid))

    @staticmethod
    def networks_named(pool: PoolSession, name: str) -> dict[str, dict[str, Any]]:
        where = f'field "name__label"="{quote(name)}"'
        return dict(pool.call("network.get_all_records_where", where))
