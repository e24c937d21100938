"""Races for the concurrency tests (SQLite and PostgreSQL run the same ones)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from ferry.model import Host, Instance
from ferry.persistence.db import Database
from ferry.scheduler.repository import ClaimRepository

T = TypeVar("T")


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0) .. fn(n-1)`` in ``n`` threads released at once by a barrier."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    lock = threading.Lock()

    def go(i: int) -> None:
        barrier.wait()
        value = fn(i)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def assert_twenty_claims_for_room_of_ten(db: Database) -> None:
    """20 concurrent claims of 1 GiB on a host with 10 GiB free: exactly 10 succeed."""
    host = Host(
        name="h",
        driver="t",
        hypervisor_type="qemu",
        hypervisor_version=1,
        vcpus=64,
        memory_mb=10 * 1024,
        disk_gb=1000,
    )
    ClaimRepository(db).refresh_hosts([host])
    inst = Instance("u", "vm", "src", memory_mb=1024, vcpus=1, disk_gb=1)
    results = race(20, lambda i: ClaimRepository(db).claim(f"m{i}", "h", inst))
    assert results.count(True) == 10
    claims = ClaimRepository(db)
    assert claims.claimed()["h"] == (10, 10 * 1024, 10)
    assert len(claims.list()) == 10
