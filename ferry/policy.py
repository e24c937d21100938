"""Convergence policy of a live transfer, after Nova's libvirt driver.

The allowed switchover pause ("max downtime") starts small and rises in ``steps`` towards
``live_migration_downtime``, one step every ``live_migration_downtime_delay`` seconds per GiB
transferred; past ``live_migration_completion_timeout`` seconds per GiB the transfer is aborted or
forced to complete (post-copy when permitted, else by pausing the guest).

The transfer monitor's decisions are one pure function, :func:`decide`: a progress sample and the
users' requests, the policy and what the monitor did so far go in; the next action and the new
state come out. The monitor (:class:`ferry.tasks.transfer.Transfer`) carries the action out
through the driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from ferry.config import MigrationSettings
from ferry.model import TransferProgress


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


# ------------------------------------------------------------------------ the monitor's inputs
@dataclass(frozen=True)
class MonitorPolicy:
    """What the monitor decides by, worked out once per transfer from the settings and its size."""

    #: ``(seconds after start, max downtime ms)``; the first one is set when the transfer starts
    steps: tuple[tuple[float, int], ...]
    #: seconds after which the transfer is aborted or forced to complete; None = never
    timeout: float | None = None
    #: at the timeout: force completion (``live_migration_timeout_action = "force_complete"``)
    #: rather than abort
    force_on_timeout: bool = False
    #: a transfer that stops converging switches to post-copy
    permit_post_copy: bool = False
    #: converging: after the first full pass each memory iteration shrinks what is left by this
    min_progress: float = 0.10

    @classmethod
    def of(cls, settings: MigrationSettings, gb: float) -> MonitorPolicy:
        return cls(
            steps=tuple(downtime_steps(settings, gb)),
            timeout=completion_timeout(settings, gb),
            force_on_timeout=settings.live_migration_timeout_action == "force_complete",
            permit_post_copy=settings.live_migration_permit_post_copy,
        )


@dataclass(frozen=True)
class Sample:
    """One poll: the driver's progress and what users asked of the run meanwhile."""

    progress: TransferProgress
    abort_requested: bool = False
    force_complete_requested: bool = False


@dataclass(frozen=True)
class MonitorState:
    """What the monitor did and saw so far in one transfer."""

    #: index of the downtime step last applied (0: the one the transfer started with)
    steps_applied: int = 0
    #: what the driver forced completion by (``post-copy``, ``pause``); None = not forced
    lever: str | None = None
    #: the driver refused to force completion: not asked again (but on the completion timeout)
    refused: bool = False
    #: auto-converge throttled the guest at some point
    throttled: bool = False
    #: ``(iteration, MiB remaining when it was first seen)``: whether the transfer converges
    iterations: tuple[tuple[int, float], ...] = ()

    def observe(self, p: TransferProgress) -> MonitorState:
        if p.throttle_percent > 0 and not self.throttled:
            return dataclasses.replace(self, throttled=True)
        return self

    def forced(self, lever: str) -> MonitorState:
        """The driver forced completion by ``lever``."""
        return dataclasses.replace(self, lever=lever)

    def refusal(self) -> MonitorState:
        """The driver refused to force completion."""
        return dataclasses.replace(self, refused=True)

    def finish(self) -> Finish:
        """What made the transfer complete."""
        lever = self.lever
        if lever is None and self.throttled:
            lever = "auto-converge"
        if lever is None:
            lever = "downtime steps" if self.steps_applied else "none needed"
        return Finish(lever=lever, steps_applied=self.steps_applied)


# ---------------------------------------------------------------------- the monitor's actions
@dataclass(frozen=True)
class Wait:
    """Nothing to do: wait one poll interval."""


@dataclass(frozen=True)
class Finish:
    """The transfer completed (switched over): report the result and return it."""

    lever: str  # post-copy | pause | auto-converge | downtime steps | none needed
    steps_applied: int


@dataclass(frozen=True)
class Fail:
    """The transfer ended without switching over: cancelled, failed or gone."""

    reason: str
    cancelled: bool = False


@dataclass(frozen=True)
class StepDowntime:
    """Raise the allowed switchover pause, then decide again on the same sample."""

    downtime_ms: int


@dataclass(frozen=True)
class SwitchToPostCopy:
    """Not converging: force completion (post-copy); a refusal is logged, then poll again."""

    iteration: int
    remaining_mb: float


@dataclass(frozen=True)
class ForceCompleteOnRequest:
    """A user asked to force completion; a refusal is logged, then poll again."""


@dataclass(frozen=True)
class AbortOnRequest:
    """A user asked to abort; when it switched over meanwhile, poll again (and finish)."""


@dataclass(frozen=True)
class TimeoutForceComplete:
    """Past the completion timeout: force completion (a refusal fails), then wait."""

    timeout: float


@dataclass(frozen=True)
class TimeoutAbort:
    """Past the completion timeout: abort; when it switched over meanwhile, poll again."""

    timeout: float


Action = (
    Wait
    | Finish
    | Fail
    | StepDowntime
    | SwitchToPostCopy
    | ForceCompleteOnRequest
    | AbortOnRequest
    | TimeoutForceComplete
    | TimeoutAbort
)


# ------------------------------------------------------------------------------- the decision
def finished(p: TransferProgress, state: MonitorState) -> Finish | None:
    """The result when ``p`` reports the switchover done, else None (what :func:`decide`
    returns for such a sample, needed before the users' requests are read)."""
    return state.observe(p).finish() if p.state == "completed" else None


def decide(
    sample: Sample, policy: MonitorPolicy, state: MonitorState
) -> tuple[Action, MonitorState]:
    """The monitor's next action for one sample, and its new state. In this order: the end of
    the transfer; an abort asked for; post-copy when it stopped converging (once; needs
    ``permit_post_copy``); a force-complete asked for (once); the downtime step now due; the
    completion timeout (unless completion was forced already); else wait."""
    p = sample.progress
    state = state.observe(p)
    if p.state == "completed":
        return state.finish(), state
    if p.state == "cancelled":
        return Fail("during the transfer", cancelled=True), state
    if p.state == "failed":
        return Fail(p.error or "the hypervisor reported a failure"), state
    if p.state == "none":
        return Fail("the transfer disappeared from the hypervisor"), state
    if sample.abort_requested:
        return AbortOnRequest(), state
    may_force = state.lever is None and not state.refused
    if policy.permit_post_copy and may_force:
        stuck, state = _not_converging(p, state, policy.min_progress)
        if stuck:
            return SwitchToPostCopy(p.iteration, p.memory_remaining_mb), state
    if sample.force_complete_requested and may_force:
        return ForceCompleteOnRequest(), state
    due = state.steps_applied
    while due + 1 < len(policy.steps) and policy.steps[due + 1][0] <= p.elapsed_s:
        due += 1
    if due != state.steps_applied:
        return StepDowntime(policy.steps[due][1]), dataclasses.replace(state, steps_applied=due)
    if policy.timeout is not None and p.elapsed_s > policy.timeout and state.lever is None:
        if policy.force_on_timeout:
            return TimeoutForceComplete(policy.timeout), state
        return TimeoutAbort(policy.timeout), state
    return Wait(), state


def _not_converging(
    p: TransferProgress, state: MonitorState, min_progress: float
) -> tuple[bool, MonitorState]:
    """Is a pre-copy transfer converging? After the first full pass, each memory iteration must
    shrink what is left to copy by at least ``min_progress``; measured on the memory remaining
    when each iteration is first seen."""
    seen = dict(state.iterations)
    if p.state != "running" or p.iteration < 1 or p.iteration in seen:
        return False, state
    earlier = [i for i in seen if i < p.iteration]
    state = dataclasses.replace(
        state, iterations=(*state.iterations, (p.iteration, p.memory_remaining_mb))
    )
    if p.iteration < 3 or not earlier:
        return False, state  # pass 1 copies everything once; pass 2 sets the baseline
    before = seen[max(earlier)]
    return before > 0 and p.memory_remaining_mb > before * (1.0 - min_progress), state
