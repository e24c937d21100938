"""Starting a transfer: ``migrateToURI3`` with the flags and parameters the request and the
policy ask for, run in a thread of its own on a connection of its own, and the source's
job-completed event caught on that connection. A transfer already running on the source
(this process restarted meanwhile) is re-attached to instead of started again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ferry.drivers.base import TransferPolicy
from ferry.drivers.libvirt.connection import (
    Unreachable,
    error_code,
    event_loop,
    is_connection_error,
    libvirt_module,
    message,
)
from ferry.drivers.libvirt.lookup import Lookup, text
from ferry.drivers.libvirt.transfers import Transfer, TransferBook, completed_progress, key
from ferry.drivers.libvirt.transport import flags_and_params as transport_flags_and_params
from ferry.drivers.libvirt.xml import rewrite_pinning
from ferry.errors import TransferFailed
from ferry.model import Instance, MigrateData
from ferry.model.numa import Pinning

LOG = logging.getLogger(__name__)

#: how long a finished ``migrateToURI3`` call waits for the source's job-completed event
COMPLETED_EVENT_WAIT = 2.0


def start(
    lookup: Lookup,
    book: TransferBook,
    instance: Instance,
    data: MigrateData,
    policy: TransferPolicy,
) -> None:
    """Start the transfer ``data`` describes (see :meth:`LibvirtDriver.start_transfer`)."""
    name = key(data)
    known = book.get(data)
    if known is not None and known.outcome != "lost":
        return  # in flight, or finished (a failed transfer is not silently restarted)
    found = {f.host: f for f in lookup.find(instance.uuid, [data.source, data.destination])}
    src, dst = found.get(data.source), found.get(data.destination)
    if src is not None and src.outgoing:
        LOG.info("%s: re-attaching to the transfer running on %s", instance.name, data.source)
        book.register(
            Transfer(name, instance.uuid, data.source, data.destination, instance.memory_mb)
        )
        return
    if dst is not None and dst.active and not dst.incoming:
        LOG.info("%s: already switched over to %s", instance.name, data.destination)
        return
    if src is None or not src.active:
        raise TransferFailed(data.source, f"{instance.name} is not running on {data.source}")

    flags, params = _flags_and_params(lookup, data, policy)
    if data.pinning is not None:
        params.update(_pinned_xml(lookup, instance, data, data.pinning, src.dom))
    lv = libvirt_module()
    try:
        src.dom.migrateSetMaxDowntime(int(policy.initial_downtime_ms), 0)
    except lv.libvirtError as exc:
        LOG.debug("%s: initial max downtime not set: %s", instance.name, message(exc))

    t = Transfer(
        name,
        instance.uuid,
        data.source,
        data.destination,
        instance.memory_mb,
        post_copy=policy.permit_post_copy,
        pinning=data.pinning,
        downtime_ms=int(policy.initial_downtime_ms),
    )
    dest_spec = lookup.specs[data.destination]
    peer = dest_spec.peer_uri or dest_spec.uri
    events = event_loop()  # before the transfer's connection is opened
    t.thread = threading.Thread(
        target=_migrate,
        args=(lookup, t, peer, params, flags, events),
        name=f"ferry-migrate-{instance.name}",
        daemon=True,
    )
    book.register(t)
    t.thread.start()


def _flags_and_params(
    lookup: Lookup, data: MigrateData, policy: TransferPolicy
) -> tuple[int, dict[str, Any]]:
    """``migrateToURI3``'s flags and typed parameters for this request and policy."""
    lv = libvirt_module()
    flags = (
        lv.VIR_MIGRATE_LIVE
        | lv.VIR_MIGRATE_PEER2PEER
        | lv.VIR_MIGRATE_PERSIST_DEST
        | lv.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    params: dict[str, Any] = {}
    if data.shared_storage and data.driver_data.get("has_local_disks"):
        # ferry proved the instance path shared (the marker test); libvirt only trusts the
        # filesystems it knows (NFS, Ceph, GFS2, ...) and would refuse the move as unsafe
        flags |= lv.VIR_MIGRATE_UNSAFE
    if data.block_migration:
        flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
        disks = data.driver_data.get("migrate_disks")
        if disks:
            params[lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disks)
    if policy.permit_post_copy:
        flags |= lv.VIR_MIGRATE_POSTCOPY
    elif policy.permit_auto_converge:
        flags |= lv.VIR_MIGRATE_AUTO_CONVERGE
        if policy.auto_converge_initial:
            params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = policy.auto_converge_initial
        if policy.auto_converge_increment:
            params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = policy.auto_converge_increment
    if policy.bandwidth_mbps > 0:
        params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = max(1, int(policy.bandwidth_mbps))
    dest_spec = lookup.specs[data.destination]
    if dest_spec.migration_uri:
        params[lv.VIR_MIGRATE_PARAM_URI] = dest_spec.migration_uri
    # TLS, parallel connections, compression and the migration network's address (which
    # replaces migration_uri), as the destination check settled them
    extra_flags, extra = transport_flags_and_params(data.driver_data)
    return flags | extra_flags, {**params, **extra}


def _pinned_xml(
    lookup: Lookup, instance: Instance, data: MigrateData, pinning: Pinning, dom: Any
) -> dict[str, Any]:
    """The domain XML with the destination's pinning, for the destination and its persistent
    definition. The pinning was chosen at the check (or claimed by the scheduler); a guest
    started on the destination since then by anyone else may have taken some of those pCPUs:
    TransferFailed."""
    lv = libvirt_module()
    taken = set().union(*lookup.numa_state(data.destination).pinned_by_cell.values())
    if taken & pinning.pcpus:
        raise TransferFailed(
            data.destination,
            f"pCPUs {sorted(taken & pinning.pcpus)} chosen for {instance.name} have been "
            "pinned by another guest since the destination check",
        )
    xml = rewrite_pinning(dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE), pinning)
    return {lv.VIR_MIGRATE_PARAM_DEST_XML: xml, lv.VIR_MIGRATE_PARAM_PERSIST_XML: xml}


def _migrate(
    lookup: Lookup, t: Transfer, peer: str, params: dict[str, Any], flags: int, events: bool
) -> None:
    """The blocking ``migrateToURI3`` call, on a connection of its own (the thread's body:
    every way it ends is written into ``t``)."""
    lv = libvirt_module()
    conn = None
    watching: int | None = None
    try:
        conn = lookup.conn(t.source).open_new()
        dom = conn.lookupByUUIDString(t.instance_uuid)
        watching = _watch_completion(conn, dom, t) if events else None
        dom.migrateToURI3(peer, params, flags)
        if watching is not None:
            # libvirtd sends the event around the time the call returns, not before it
            waited = time.monotonic()
            if not t.completed_seen.wait(COMPLETED_EVENT_WAIT):
                LOG.warning(
                    "%s: no job-completed event from %s within %.0f s",
                    t.instance_uuid,
                    t.source,
                    COMPLETED_EVENT_WAIT,
                )
            LOG.debug(
                "%s: job-completed event %.1f ms after the call returned",
                t.instance_uuid,
                (time.monotonic() - waited) * 1000,
            )
        t.final = completed_progress(lookup, t)
        t.outcome = "completed"
    except Unreachable as exc:
        t.outcome, t.error = "failed", str(exc)
    except lv.libvirtError as exc:
        if error_code(exc) == lv.VIR_ERR_OPERATION_ABORTED:
            t.outcome = "cancelled"
        elif is_connection_error(exc):
            LOG.warning(
                "transfer of %s: lost the connection to %s (%s); asking libvirt",
                t.instance_uuid,
                t.source,
                message(exc),
            )
            t.outcome = "lost"
        else:
            t.outcome, t.error = "failed", message(exc)
    except Exception as exc:  # the thread's last word: the transfer fails, the monitor sees it
        LOG.warning(
            "transfer of %s from %s failed: %s", t.instance_uuid, t.source, text(exc), exc_info=True
        )
        t.outcome, t.error = "failed", text(exc)
    finally:
        if conn is not None:
            _close(conn, watching, t)
        t.done.set()


def _close(conn: Any, watching: int | None, t: Transfer) -> None:
    """Close the transfer's own connection. A registered callback holds a reference on the
    connection: without the deregistration close() leaves the socket open."""
    lv = libvirt_module()
    if watching is not None:
        try:
            conn.domainEventDeregisterAny(watching)
        except lv.libvirtError as exc:
            LOG.debug("host %s: event callback of %s: %s", t.source, t.instance_uuid, message(exc))
    try:
        conn.close()
    except lv.libvirtError as exc:
        LOG.debug("host %s: transfer connection of %s: %s", t.source, t.instance_uuid, message(exc))


def _watch_completion(conn: Any, dom: Any, t: Transfer) -> int | None:
    """Have the source's job-completed event land in ``t.completed``: the callback's id
    (for ``domainEventDeregisterAny``), or None if it cannot."""
    lv = libvirt_module()

    def completed(_conn: Any, _dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        t.completed = dict(params)
        t.completed_seen.set()

    try:
        return int(
            conn.domainEventRegisterAny(dom, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, completed, None)
        )
    except lv.libvirtError as exc:
        LOG.debug("no job-completed event for %s: %s", t.instance_uuid, message(exc))
        return None
