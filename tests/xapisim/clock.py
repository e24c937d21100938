"""Clocks for the simulator: wall time, or a stepped clock that moves only when a test says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WallClock:
    """Real time (seconds since the epoch)."""

    stepped = False

    def now(self) -> float:
        return time.time()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Wall time moves by itself; nobody is told."""


class SimClock:
    """Simulated time: ``now()`` changes only through ``advance()``, which then tells every
    subscriber (the simulator brings its model up to date and wakes waiting calls)."""

    stepped = True

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._lock:
            self._now += seconds
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback()

    def subscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)
