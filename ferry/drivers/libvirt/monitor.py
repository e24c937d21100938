"""A running transfer as ferry's monitor sees and steers it: its progress (``jobStats``), the
wait for its end, the max downtime, forcing completion (post-copy or pause) and the abort
(``abortJob``). Without a record of the transfer in this process (after a restart, or when the
call lost its connection) the answer comes from libvirt alone: an outgoing job on the source,
or the domain active on the destination and gone from the source.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ferry.drivers.libvirt.connection import error_code, libvirt_module, message
from ferry.drivers.libvirt.lookup import OP_MIGRATION_OUT, PAUSED, Lookup, job, state
from ferry.drivers.libvirt.transfers import (
    Transfer,
    TransferBook,
    completed_progress,
    final,
    progress,
)
from ferry.errors import DriverError
from ferry.model import Instance, MigrateData, PowerState, TransferProgress

LOG = logging.getLogger(__name__)


def transfer_progress(
    lookup: Lookup, book: TransferBook, instance: Instance, data: MigrateData
) -> TransferProgress:
    t = book.get(data)
    if t is not None and t.outcome is None:
        src = _source_domain(lookup, t)
        stats = job(src) if src is not None else {}
        if stats.get("operation") in (None, OP_MIGRATION_OUT) and stats:
            t.last = progress("running", stats)
            return t.last
        # no job (yet, or any more): give a running call a moment to report its outcome
        if t.thread is not None and not t.done.wait(0.5):
            return t.placeholder()
    if t is not None and t.outcome in ("completed", "failed", "cancelled"):
        return final(lookup, t)
    return _ask_libvirt(lookup, instance, data, t)


def wait_transfer_end(book: TransferBook, data: MigrateData, timeout: float) -> bool:
    """Waits on the ``migrateToURI3`` call this process runs, so the switchover is seen at
    once. Without such a call (re-attached after a restart, or the call lost its connection
    and libvirt is asked instead) there is nothing to wait on: False, the monitor sleeps."""
    t = book.get(data)
    if t is None or t.thread is None or t.outcome == "lost":
        return False
    t.done.wait(timeout)
    return True


def _source_domain(lookup: Lookup, t: Transfer) -> Any | None:
    try:
        return lookup.domain(t.source, t.instance_uuid)
    except DriverError as exc:
        LOG.debug("host %s: domain %s not looked up: %s", t.source, t.instance_uuid, exc)
        return None


def _ask_libvirt(
    lookup: Lookup, instance: Instance, data: MigrateData, t: Transfer | None
) -> TransferProgress:
    """The transfer's state from libvirt alone (after a restart, or a lost connection)."""
    found = {f.host: f for f in lookup.find(instance.uuid, [data.source, data.destination])}
    src, dst = found.get(data.source), found.get(data.destination)
    if src is not None and src.outgoing:
        stats = job(src.dom)
        if stats:
            p = progress("running", stats)
            if t is not None:
                t.last = p
            return p
    if dst is not None and dst.active and not dst.incoming and not (src and src.active):
        probe = t or Transfer("", instance.uuid, data.source, data.destination, 0)
        probe.memory_mb = probe.memory_mb or instance.memory_mb
        p = completed_progress(lookup, probe)
        if t is not None:
            t.outcome, t.final = "completed", p
        return p
    if t is not None:
        # we watched it (or re-attached to it) and it ended without a switchover
        t.outcome = "failed"
        t.error = t.error or "the transfer ended without a switchover"
        return final(lookup, t)
    return TransferProgress(state="none")


def _await_job(lookup: Lookup, t: Transfer | None, timeout: float) -> None:
    """Between ``start_transfer`` returning and libvirt showing the migration job there is
    a short window (the call is on its way to libvirtd): wait until the job is visible on
    the source or the call has ended, so an abort or force-complete in that window acts on
    the transfer instead of finding nothing in flight."""
    if t is None or t.thread is None or t.outcome is not None:
        return
    deadline = time.monotonic() + timeout
    while not t.done.is_set() and time.monotonic() < deadline:
        src = _source_domain(lookup, t)
        if src is None or job(src):
            return
        t.done.wait(0.02)  # libvirt offers no wait for a job to begin without events


def set_max_downtime(
    lookup: Lookup, book: TransferBook, data: MigrateData, downtime_ms: int, start_timeout: float
) -> None:
    lv = libvirt_module()
    t = book.get(data)
    _await_job(lookup, t, start_timeout)
    if t is None or t.outcome is not None:
        return
    src = _source_domain(lookup, t)
    if src is None:
        return
    try:
        src.migrateSetMaxDowntime(int(downtime_ms), 0)
        t.downtime_ms = int(downtime_ms)
    except lv.libvirtError as exc:
        if error_code(exc) != lv.VIR_ERR_OPERATION_INVALID:  # the job just ended
            raise DriverError(data.source, "set the max downtime", message(exc)) from None


def force_complete(
    lookup: Lookup, book: TransferBook, instance: Instance, data: MigrateData, start_timeout: float
) -> str:
    lv = libvirt_module()
    t = book.get(data)
    _await_job(lookup, t, start_timeout)
    if t is not None and t.lever is not None:
        return t.lever
    src = _source_domain(lookup, t) if t is not None else lookup.domain(data.source, instance.uuid)
    if src is None or not job(src) or (t is not None and t.outcome is not None):
        raise DriverError(data.source, "force complete", "no transfer is in flight")
    lever = "pause"
    try:
        if t is None or t.post_copy:
            try:
                src.migrateStartPostCopy(0)
                lever = "post-copy"
            except lv.libvirtError as exc:
                if t is not None:
                    raise
                LOG.info("post-copy unavailable (%s); pausing the guest", message(exc))
        if lever == "pause":
            st, _ = state(src)
            if st != PAUSED:
                src.suspend()
    except lv.libvirtError as exc:
        raise DriverError(data.source, "force complete", message(exc)) from None
    if t is not None:
        t.lever = lever
    LOG.info("%s: forced to complete by %s", instance.name, lever)
    return lever


def abort(
    lookup: Lookup,
    book: TransferBook,
    instance: Instance,
    data: MigrateData,
    *,
    abort_timeout: float,
    start_timeout: float,
) -> None:
    lv = libvirt_module()
    t = book.get(data)
    _await_job(lookup, t, start_timeout)
    found = {f.host: f for f in lookup.find(instance.uuid, [data.source, data.destination])}
    src, dst = found.get(data.source), found.get(data.destination)
    in_flight = src is not None and src.outgoing
    if not in_flight:
        if t is not None and t.outcome is None and t.thread is not None:
            t.done.wait(abort_timeout)  # finishing right now: see how it ended
        if dst is not None and dst.active and not dst.incoming:
            raise DriverError(
                data.source,
                "abort the transfer",
                f"{instance.name} switched over to {data.destination} already",
            )
        if t is not None and t.outcome == "completed":
            raise DriverError(
                data.source,
                "abort the transfer",
                f"{instance.name} switched over to {data.destination} already",
            )
        return
    assert src is not None
    if dst is not None and dst.switched_over:
        raise DriverError(
            data.source,
            "abort the transfer",
            f"{instance.name} runs on {data.destination} in post-copy: too late to abort",
        )
    try:
        src.dom.abortJob()
    except lv.libvirtError as exc:
        if job(src.dom):
            raise DriverError(data.source, "abort the transfer", message(exc)) from None
    _wait_job_end(src.dom, t, abort_timeout)
    if t is not None and t.outcome is None:
        t.outcome = "cancelled"
    if t is not None and t.outcome == "completed":
        raise DriverError(
            data.source,
            "abort the transfer",
            f"{instance.name} switched over to {data.destination} before the abort",
        )
    if t is not None and t.lever == "pause" and instance.power_state == PowerState.RUNNING:
        try:
            if state(src.dom)[0] == PAUSED:
                src.dom.resume()
        except lv.libvirtError as exc:
            LOG.warning("%s: could not resume after the abort: %s", instance.name, exc)


def _wait_job_end(dom: Any, t: Transfer | None, timeout: float) -> None:
    if t is not None and t.thread is not None:
        t.done.wait(timeout)
        return
    deadline = time.monotonic() + timeout
    while job(dom) and time.monotonic() < deadline:
        time.sleep(0.05)  # libvirt has no blocking wait for a job's end without events
