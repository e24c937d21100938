"""Volume SRs that move with a VM (Nova's ``volumeops``): connected on the destination before
the transfer, disconnected there by a rollback, forgotten on the source after the switchover.

What ferry creates is tagged: its PBDs carry ``other_config[ferry_instance]``. An SR whose only
PBDs are ferry's (or that has none) was introduced by ferry and is forgotten by the rollback; an
SR the destination pool had before keeps everything but ferry's PBDs.
"""

from __future__ import annotations

import logging
from typing import Any

from .lookup import Lookup
from .records import TAG_INSTANCE, Refused, Vm, tags_of
from .session import PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")


def connect_volume_sr(
    lookup: Lookup, vm: Vm, pool: PoolSession, host_ref: str, sr_uuid: str
) -> None:
    """Make volume SR ``sr_uuid`` of ``vm`` visible on ``host_ref`` of ``pool``: introduce it
    when the pool lacks it (``SR.introduce`` with the source SR's type and sm_config), create
    and plug a PBD with the source PBD's device_config when the host has none, plug an
    unplugged one, and ``SR.scan`` when anything changed. Safe to call again."""
    sr = lookup.sr_by_uuid(pool, sr_uuid)
    src_sr = lookup.sr_by_uuid(vm.pool, sr_uuid)
    changed = False
    if sr is None:
        if src_sr is None:
            raise Refused(f"volume SR {sr_uuid} is in neither pool")
        rec = vm.pool.call("SR.get_record", src_sr)
        sr = str(
            pool.call(
                "SR.introduce",
                sr_uuid,
                rec.get("name_label", ""),
                rec.get("name_description", ""),
                rec.get("type", ""),
                rec.get("content_type", ""),
                bool(rec.get("shared")),
                dict(rec.get("sm_config") or {}),
            )
        )
        changed = True
        LOG.info("xenapi pool %s: volume SR %s introduced", pool.url, sr_uuid)
    here = _pbds_on(pool, sr, host_ref)
    if not here:
        if src_sr is None:
            raise Refused(f"volume SR {sr_uuid}: no PBD to copy the device config from")
        pbd = pool.call(
            "PBD.create",
            {
                "host": host_ref,
                "SR": sr,
                # may hold CHAP credentials: passed on, never kept, logged or returned
                "device_config": _source_device_config(vm, src_sr),
                "other_config": {TAG_INSTANCE: vm.uuid},
            },
        )
        here = {str(pbd): {"currently_attached": False}}
        changed = True
    for ref, rec in here.items():
        if not rec.get("currently_attached"):
            pool.call("PBD.plug", ref)
            changed = True
    if changed:
        pool.call("SR.scan", sr)


def attached_sr(lookup: Lookup, pool: PoolSession, sr_uuid: str, host_ref: str) -> str | None:
    """The ref of SR ``sr_uuid`` in ``pool`` when a plugged PBD attaches it to ``host_ref``,
    else ``None`` (the pool lacks the SR, or knows it without this host seeing it yet)."""
    sr = lookup.sr_by_uuid(pool, sr_uuid)
    if sr is None:
        return None
    here = _pbds_on(pool, sr, host_ref)
    return sr if any(rec.get("currently_attached") for rec in here.values()) else None


def _pbds(pool: PoolSession, sr: str) -> dict[str, dict[str, Any]]:
    """SR ``sr``'s PBDs: ref -> record."""
    return {p: pool.call("PBD.get_record", p) for p in pool.call("SR.get_PBDs", sr)}


def _pbds_on(pool: PoolSession, sr: str, host_ref: str) -> dict[str, dict[str, Any]]:
    """SR ``sr``'s PBDs on ``host_ref``: ref -> record."""
    return {ref: rec for ref, rec in _pbds(pool, sr).items() if rec.get("host") == host_ref}


def _source_device_config(vm: Vm, src_sr: str) -> dict[str, str]:
    pbds = list(_pbds(vm.pool, src_sr).values())
    mine = [p for p in pbds if p.get("host") == vm.resident_on] or pbds
    if not mine:
        raise Refused("the source volume SR has no PBD")
    return dict(mine[0].get("device_config") or {})


def disconnect_volume_sr(
    lookup: Lookup, pool: PoolSession, sr_uuid: str, instance_uuid: str
) -> None:
    """Undo :func:`connect_volume_sr` in ``pool``: ferry's PBDs for the instance unplugged; the
    SR forgotten when only ferry's PBDs attach it, else ferry's PBDs destroyed. Safe again."""
    sr = lookup.sr_by_uuid(pool, sr_uuid)
    if sr is None:
        return
    pbds = _pbds(pool, sr)
    mine = {p: r for p, r in pbds.items() if tags_of(r).get(TAG_INSTANCE) == instance_uuid}
    if pbds and not mine:
        return  # the pool had this SR before: not ferry's to touch
    for ref, rec in mine.items():
        if rec.get("currently_attached"):
            pool.call("PBD.unplug", ref)
    if len(mine) == len(pbds):
        pool.call("SR.forget", sr)
        LOG.info("xenapi pool %s: volume SR %s forgotten", pool.url, sr_uuid)
        return
    for ref in mine:
        pool.call("PBD.destroy", ref)


def forget_unused_sr(lookup: Lookup, pool: PoolSession, sr_uuid: str) -> None:
    """Forget volume SR ``sr_uuid`` the VM left behind in ``pool`` (PBDs unplugged,
    ``SR.forget``), unless a VBD in that pool still uses one of its VDIs. Safe again."""
    sr = lookup.sr_by_uuid(pool, sr_uuid)
    if sr is None:
        return
    for vdi in pool.call("SR.get_VDIs", sr):
        if pool.call("VDI.get_VBDs", vdi):
            LOG.info("xenapi pool %s: volume SR %s is still in use; kept", pool.url, sr_uuid)
            return
    for pbd in pool.call("SR.get_PBDs", sr):
        if pool.call("PBD.get_currently_attached", pbd):
            pool.call("PBD.unplug", pbd)
    pool.call("SR.forget", sr)
    LOG.info("xenapi pool %s: volume SR %s forgotten", pool.url, sr_uuid)
