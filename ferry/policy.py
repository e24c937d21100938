"""Convergence policy of a live transfer, after Nova's libvirt driver.

The allowed switchover pause ("max downtime") starts small and rises in ``steps`` towards
``live_migration_downtime``, one step every ``live_migration_downtime_delay`` seconds per GiB
transferred; past ``live_migration_completion_timeout`` seconds per GiB the transfer is aborted or
forced to complete (post-copy when permitted, else by pausing the guest).
"""

from __future__ import annotations

from collections.abc import Iterator

from ferry.config import MigrationSettings


def data_gb(memory_mb: float, disk_gb: float = 0.0, block_migration: bool = False) -> float:
    """GiB to move: RAM, plus local disk for a block migration; at least 2 as in Nova."""
    total = memory_mb / 1024.0 + (disk_gb if block_migration else 0.0)
    return max(total, 2.0)


def downtime_steps(settings: MigrationSettings, gb: float) -> Iterator[tuple[float, int]]:
    """``(seconds after start, max downtime ms)`` pairs (Nova's ``_migration_downtime_steps``)."""
    downtime = settings.live_migration_downtime
    steps = settings.live_migration_downtime_steps
    delay = int(settings.live_migration_downtime_delay * gb)
    base = downtime / steps
    offset = (downtime - base) / steps
    for i in range(steps + 1):
        yield float(delay * i), int(base + offset * i)


def completion_timeout(settings: MigrationSettings, gb: float) -> float | None:
    """Seconds after which the transfer counts as stuck; None = never."""
    if settings.live_migration_completion_timeout <= 0:
        return None
    return float(settings.live_migration_completion_timeout * gb)
