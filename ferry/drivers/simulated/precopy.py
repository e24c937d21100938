"""The pre-copy live-migration model, as pure math (no database, no clock).

The model (QEMU's pre-copy, as seed 004 describes it):

* iteration 1 sends all of the guest's RAM at the link bandwidth;
* every next iteration sends what the guest dirtied during the previous one
  (``dirty_rate x duration``, capped at the RAM size);
* before each iteration, when what is left fits in the allowed switchover pause
  (``remaining <= bandwidth x max_downtime``, with the max downtime in force at that moment), the
  guest is paused and the remainder is sent: that pause is the downtime, then the switchover;
* ``force_complete`` either pauses the guest at once (nothing is dirtied any more; the rest is sent
  while paused) or, with post-copy, switches over at once;
* an injected transfer fault fails the transfer when ``fail_fraction x RAM`` has been sent.

The link never idles, so ``memory_processed = bandwidth x elapsed`` until the transfer ends.

:func:`simulate` evaluates the state at any elapsed time in O(iterations), and skips runs of
passes in O(1) between the events (downtime changes, force, horizon): those of a guest that
dirties at least as fast as the link (every pass resends all of its RAM) and the geometrically
shrinking passes of one that dirties slower (``ratio = dirty / bandwidth``). So a transfer costs
a handful of steps per event however long it runs or however close the dirty rate is to the
link speed. Less than one 4 KiB page left counts as nothing left.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ferry.model import TransferProgress

#: transfer states :func:`simulate` returns (the driver adds ``none`` and ``cancelled``)
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"

#: safety net: no transfer needs this many explicit iterations (see module doc)
MAX_ITERATIONS = 1_000_000
#: dirty memory comes in pages: less than one 4 KiB page dirty counts as nothing to send
PAGE_MB = 4 / 1024


@dataclass(frozen=True)
class _Snapshot:
    """Internal: the state at one instant, before it becomes a TransferProgress."""

    state: str
    at: float
    iteration: int
    remaining: float
    dirty_rate: float
    downtime_ms: int


class _DowntimeSchedule:
    """Step function: the max downtime (ms) in force at a time (relative seconds)."""

    def __init__(self, history: Sequence[tuple[float, float]]) -> None:
        if not history:
            raise ValueError("the downtime history needs at least one (time, ms) entry")
        ordered = sorted(((max(0.0, float(t)), float(ms)) for t, ms in history), key=lambda e: e[0])
        self.times = [t for t, _ in ordered]
        self.values = [ms for _, ms in ordered]

    def at(self, t: float) -> float:
        """The max downtime (ms) in force at ``t`` (the latest entry at or before ``t``)."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[max(i, 0)]

    def next_change_after(self, t: float) -> float:
        """The time of the first entry strictly after ``t`` (``inf`` when none)."""
        i = bisect.bisect_right(self.times, t)
        return self.times[i] if i < len(self.times) else math.inf


def simulate(
    memory_mb: float,
    dirty_rate_mbps: float,
    bandwidth_mbps: float,
    downtime_history: Sequence[tuple[float, float]],
    elapsed_s: float,
    *,
    force_at: float | None = None,
    post_copy: bool = False,
    fail_fraction: float | None = None,
    fail_message: str | None = None,
) -> TransferProgress:
    """The transfer's state ``elapsed_s`` seconds after it started.

    :param memory_mb: guest RAM (MiB).
    :param dirty_rate_mbps: how fast the running guest dirties memory (MiB/s).
    :param bandwidth_mbps: link bandwidth (MiB/s), > 0.
    :param downtime_history: ``[(t, ms), ...]`` max-downtime settings, ``t`` in seconds since the
        start (the first entry is the initial downtime; entries before 0 count from 0).
    :param elapsed_s: seconds since the start at which the state is wanted.
    :param force_at: seconds since the start at which ``force_complete`` was called, if ever.
    :param post_copy: the force switched over at once (post-copy) instead of pausing the guest.
    :param fail_fraction: fail when this fraction of the RAM size has been sent (``[0, 1)``).
    :param fail_message: the error of a failed transfer.
    :returns: a :class:`~ferry.model.TransferProgress` with ``state`` ``running``, ``completed``
        or ``failed``. ``elapsed_s`` is capped at the moment the transfer ended; ``downtime_ms`` is
        the max downtime in force while running and the real pause once completed; ``iteration``
        counts memory passes, the final stop-and-copy included.
    :raises ValueError: for a non-positive bandwidth, negative sizes/rates or an empty history.
    """
    if bandwidth_mbps <= 0:
        raise ValueError(f"bandwidth must be > 0 MiB/s, not {bandwidth_mbps}")
    if memory_mb < 0 or dirty_rate_mbps < 0:
        raise ValueError("memory and dirty rate must be >= 0")
    schedule = _DowntimeSchedule(downtime_history)
    elapsed = max(0.0, float(elapsed_s))
    fail_time = math.inf
    if fail_fraction is not None:
        fail_time = max(0.0, float(fail_fraction)) * memory_mb / bandwidth_mbps
    horizon = min(elapsed, fail_time)
    snap = _run(
        float(memory_mb),
        float(dirty_rate_mbps),
        float(bandwidth_mbps),
        schedule,
        horizon,
        force_at,
        post_copy,
    )
    error = None
    state = snap.state
    if state == RUNNING and elapsed >= fail_time:
        state = FAILED
        error = fail_message or "transfer failed (simulated fault)"
    return TransferProgress(
        state=state,
        memory_total_mb=float(memory_mb),
        memory_processed_mb=bandwidth_mbps * snap.at,
        memory_remaining_mb=max(0.0, snap.remaining),
        dirty_rate_mbps=snap.dirty_rate,
        iteration=snap.iteration,
        downtime_ms=snap.downtime_ms,
        elapsed_s=snap.at,
        error=error,
    )


def _run(
    mem: float,
    dirty: float,
    bw: float,
    schedule: _DowntimeSchedule,
    horizon: float,
    force_at: float | None,
    post_copy: bool,
) -> _Snapshot:
    """Walk the iterations up to ``horizon``; the state then (or at completion, if earlier)."""
    t = 0.0
    k = 1
    to_send = mem
    force = math.inf if force_at is None else max(0.0, float(force_at))
    ratio = dirty / bw
    for _ in range(MAX_ITERATIONS):
        # Boundary before iteration k, at time t, with ``to_send`` MiB dirty.
        if to_send < PAGE_MB:
            to_send = 0.0  # less than one page dirty: nothing left to send
        allowed_mb = bw * schedule.at(t) / 1000.0
        if to_send <= allowed_mb:
            return _pause(t, to_send, bw, k, horizon, schedule)
        if 0.0 < ratio < 1.0:
            event = min(schedule.next_change_after(t), force, horizon)
            jump = _geometric_jump(to_send, bw, ratio, max(allowed_mb, PAGE_MB), event - t)
            if jump:
                # passes shrink geometrically: skip those that end before the next event
                # or before convergence, in O(1)
                t += (to_send / bw) * (1.0 - ratio**jump) / (1.0 - ratio)
                to_send *= ratio**jump
                k += jump
                continue
        duration = to_send / bw
        end = t + duration
        if force < end:
            return _forced(
                t, max(force, t), to_send, mem, dirty, bw, k, horizon, post_copy, schedule
            )
        if horizon < end:
            return _sending(t, horizon, to_send, mem, dirty, bw, k, schedule)
        next_send = min(mem, dirty * duration)
        if next_send >= to_send and to_send >= mem:
            # Steady state: every pass resends all the RAM and takes the same time. Skip the
            # passes that end before the next event (downtime change, force or horizon).
            event = min(schedule.next_change_after(t), force, horizon)
            skip = math.floor((event - end) / duration) if math.isfinite(event) else 0
            if skip > 0:
                end += skip * duration
                k += skip
        t = end
        k += 1
        to_send = next_send
    raise RuntimeError("pre-copy model did not terminate")  # pragma: no cover


def _geometric_jump(to_send: float, bw: float, ratio: float, limit: float, span: float) -> int:
    """How many whole passes can be skipped when every pass sends ``ratio`` x the previous one
    (``0 < ratio < 1``): stay short of the first pass that would converge (<= ``limit`` MiB) and
    of the last boundary before ``span`` seconds. 0 when not worth it. One pass of margin is
    kept so the caller evaluates the interesting boundaries itself."""
    if to_send <= limit:
        return 0
    log_r = math.log(ratio)
    converge = math.ceil(math.log(limit / to_send) / log_r)
    rest = 1.0 - span * (1.0 - ratio) * bw / to_send
    before_event = math.inf if rest <= 0 else math.floor(math.log(rest) / log_r)
    jump = int(min(converge, before_event)) - 1
    return jump if jump >= 2 else 0


def _sending(
    start: float,
    at: float,
    to_send: float,
    mem: float,
    dirty: float,
    bw: float,
    k: int,
    schedule: _DowntimeSchedule,
) -> _Snapshot:
    """Mid-iteration: what is left of this pass plus what was dirtied since it started."""
    spent = at - start
    remaining = min(mem, to_send - bw * spent + dirty * spent)
    return _Snapshot(RUNNING, at, k, remaining, dirty, _ms(schedule.at(at)))


def _pause(
    t: float,
    pending: float,
    bw: float,
    k: int,
    horizon: float,
    schedule: _DowntimeSchedule,
) -> _Snapshot:
    """Converged at ``t``: the guest pauses while ``pending`` MiB are sent, then switches over."""
    pause = pending / bw
    if t + pause <= horizon:
        return _Snapshot(COMPLETED, t + pause, k, 0.0, 0.0, _ms(pause * 1000.0))
    if horizon < t:  # pragma: no cover - the caller stops at the horizon first
        raise AssertionError("pause after the horizon")
    return _Snapshot(RUNNING, horizon, k, pending - bw * (horizon - t), 0.0, _ms(schedule.at(t)))


def _forced(
    start: float,
    force: float,
    to_send: float,
    mem: float,
    dirty: float,
    bw: float,
    k: int,
    horizon: float,
    post_copy: bool,
    schedule: _DowntimeSchedule,
) -> _Snapshot:
    """``force_complete`` during iteration k (started at ``start``)."""
    if horizon < force:
        return _sending(start, horizon, to_send, mem, dirty, bw, k, schedule)
    spent = force - start
    pending = min(mem, to_send - bw * spent + dirty * spent)
    if post_copy:
        # Switch over now; the destination pulls the remaining pages on demand.
        return _Snapshot(COMPLETED, force, k, 0.0, 0.0, 0)
    return _pause(force, pending, bw, k, horizon, schedule)


def _ms(value: float) -> int:
    return round(value)
