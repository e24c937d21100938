"""The transfers this process started (or re-attached to after a restart) and what they report.

A :class:`Transfer` is in memory only: after a restart the book is empty and every question is
put to libvirt (:mod:`.monitor`). The book is shared by the checks (a pinning chosen for a
transfer still on its way is taken), the lookup of an instance (the destination of an outgoing
job) and the post step at the destination (the pinning becomes the domain's own).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from ferry.drivers.libvirt.connection import libvirt_module
from ferry.drivers.libvirt.lookup import Lookup, text
from ferry.errors import DriverError
from ferry.model import MigrateData, TransferProgress
from ferry.model.numa import Pinning

LOG = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass
class Transfer:
    """A transfer this process started (or re-attached to after a restart)."""

    key: str
    instance_uuid: str
    source: str
    destination: str
    memory_mb: float
    post_copy: bool = False
    pinning: Pinning | None = None
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    #: None while running; completed | failed | cancelled | lost (the call lost its connection:
    #: libvirt is asked what became of it)
    outcome: str | None = None
    error: str | None = None
    lever: str | None = None
    last: TransferProgress | None = None
    final: TransferProgress | None = None
    downtime_ms: int | None = None
    #: the source's job-completed event (its statistics: downtime, time_elapsed, memory_*)
    completed: dict[str, Any] | None = None
    completed_seen: threading.Event = field(default_factory=threading.Event)

    def placeholder(self) -> TransferProgress:
        return self.last or TransferProgress(
            state="running",
            memory_total_mb=self.memory_mb,
            memory_remaining_mb=self.memory_mb,
        )


def key(data: MigrateData) -> str:
    """The name of the transfer ``data`` describes (one per attempt)."""
    return str(
        data.driver_data.get("transfer_id")
        or f"{data.instance_uuid}:{data.source}:{data.destination}"
    )


class TransferBook:
    """The transfers by key, under one lock."""

    def __init__(self) -> None:
        self.transfers: dict[str, Transfer] = {}
        self._lock = threading.Lock()

    def get(self, data: MigrateData) -> Transfer | None:
        with self._lock:
            return self.transfers.get(key(data))

    def register(self, t: Transfer) -> None:
        with self._lock:
            # one transfer per instance: older records of it are history now
            for k in [k for k, o in self.transfers.items() if o.instance_uuid == t.instance_uuid]:
                if self.transfers[k].outcome is not None:
                    del self.transfers[k]
            self.transfers[t.key] = t

    def running_to(self, instance_uuid: str) -> str | None:
        """The destination of a running transfer of ``instance_uuid``, or None."""
        with self._lock:
            t = next(
                (
                    t
                    for t in self.transfers.values()
                    if t.instance_uuid == instance_uuid and t.outcome is None
                ),
                None,
            )
        return t.destination if t else None

    def inbound_pinnings(self, destination: str) -> list[Pinning]:
        """The pinnings of the running transfers to ``destination``."""
        with self._lock:
            return [
                t.pinning
                for t in self.transfers.values()
                if t.destination == destination and t.outcome is None and t.pinning is not None
            ]

    def release_pinning(self, data: MigrateData) -> None:
        """The pinning of ``data``'s transfer is now the domain's own."""
        with self._lock:
            t = self.transfers.get(key(data))
            if t is not None:
                t.pinning = None


def progress(state: str, stats: dict[str, Any]) -> TransferProgress:
    """A ``jobStats`` dict (or a job-completed event's) as ferry's progress."""
    page = int(stats.get("memory_page_size") or 4096)
    total = stats.get("memory_total", stats.get("data_total", 0)) / MIB
    processed = stats.get("memory_processed", stats.get("data_processed", 0)) / MIB
    remaining = stats.get("memory_remaining", stats.get("data_remaining", 0)) / MIB
    return TransferProgress(
        state=state,
        memory_total_mb=total,
        memory_processed_mb=processed,
        memory_remaining_mb=remaining,
        dirty_rate_mbps=stats.get("memory_dirty_rate", 0) * page / MIB,
        iteration=int(stats.get("memory_iteration", 0)),
        downtime_ms=int(stats.get("downtime", 0)),
        elapsed_s=stats.get("time_elapsed", 0) / 1000.0,
        throttle_percent=int(stats.get("auto_converge_throttle", 0)),
    )


def completed_progress(lookup: Lookup, t: Transfer) -> TransferProgress:
    """The finished job's statistics: the source's job-completed event when this process
    ran the call (the whole job, and the only downtime figure after a post-copy switch),
    else the destination's completed-job statistics (which libvirt fills from the
    source's at the switchover: complete for pre-copy, without downtime after post-copy)."""
    lv = libvirt_module()
    stats: dict[str, Any] = dict(t.completed or {})
    try:
        dom = None if stats else lookup.domain(t.destination, t.instance_uuid)
        if dom is not None:
            stats = dom.jobStats(
                lv.VIR_DOMAIN_JOB_STATS_COMPLETED | lv.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
            )
    except (lv.libvirtError, DriverError) as exc:
        LOG.debug("no completed job stats for %s: %s", t.instance_uuid, text(exc))
    base = progress("completed", stats) if stats else t.placeholder()
    total = base.memory_total_mb or t.memory_mb
    return TransferProgress(
        state="completed",
        memory_total_mb=total,
        memory_processed_mb=max(base.memory_processed_mb, total),
        memory_remaining_mb=0.0,
        dirty_rate_mbps=base.dirty_rate_mbps,
        iteration=base.iteration,
        downtime_ms=base.downtime_ms,
        elapsed_s=base.elapsed_s,
    )


def final(lookup: Lookup, t: Transfer) -> TransferProgress:
    """What an ended transfer reports."""
    if t.outcome == "completed":
        return t.final or completed_progress(lookup, t)
    last = t.last or t.placeholder()
    return TransferProgress(
        state=str(t.outcome),
        memory_total_mb=last.memory_total_mb,
        memory_processed_mb=last.memory_processed_mb,
        memory_remaining_mb=last.memory_remaining_mb,
        iteration=last.iteration,
        elapsed_s=last.elapsed_s,
        error=t.error,
    )
