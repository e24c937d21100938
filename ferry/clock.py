"""Injectable clocks: the orchestrator never calls ``time.sleep`` directly.

The simulated cluster brings its own clock (see :mod:`ferry.drivers.simulated`): its time may
run faster than the wall clock, or only when somebody waits (``speed = 0``, what the tests use).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds, monotonic enough for timeouts and intervals."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
