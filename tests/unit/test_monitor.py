"""The transfer monitor's decisions (ferry.policy.decide): sample + policy + state -> action and
new state, table-driven; no hypervisor, no database."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ferry.config import MigrationSettings
from ferry.model import TransferProgress
from ferry.policy import (
    AbortOnRequest,
    Action,
    Fail,
    Finish,
    ForceCompleteOnRequest,
    MonitorPolicy,
    MonitorState,
    Sample,
    StepDowntime,
    SwitchToPostCopy,
    TimeoutAbort,
    TimeoutForceComplete,
    Wait,
    completion_timeout,
    decide,
    downtime_steps,
    finished,
)

#: three downtime steps (at 0, 300 and 600 s), a completion timeout at 3200 s, post-copy permitted
POLICY = MonitorPolicy(
    steps=((0.0, 50), (300.0, 95), (600.0, 140)),
    timeout=3200.0,
    force_on_timeout=False,
    permit_post_copy=True,
)
FRESH = MonitorState()
#: a transfer in its third pass whose first two passes were seen (1000 MiB, then 500 MiB left)
SEEN = MonitorState(iterations=((1, 1000.0), (2, 500.0)))


def running(**fields: Any) -> TransferProgress:
    values: dict[str, Any] = {
        "state": "running",
        "memory_total_mb": 1024.0,
        "memory_remaining_mb": 512.0,
        "iteration": 1,
        "elapsed_s": 10.0,
    }
    values.update(fields)
    return TransferProgress(**values)


def sample(abort: bool = False, force: bool = False, **fields: Any) -> Sample:
    return Sample(running(**fields), abort_requested=abort, force_complete_requested=force)


def policy(**changes: Any) -> MonitorPolicy:
    return dataclasses.replace(POLICY, **changes)


def state(base: MonitorState = FRESH, **changes: Any) -> MonitorState:
    return dataclasses.replace(base, **changes)


def seen_too(base: MonitorState, iteration: int, remaining: float) -> MonitorState:
    return state(base, iterations=(*base.iterations, (iteration, remaining)))


# (id, sample, policy, state before, expected action, expected state after)
ROWS: list[tuple[str, Sample, MonitorPolicy, MonitorState, Action, MonitorState]] = [
    # ------------------------------------------------------------------ the end of the transfer
    (
        "completed without help",
        sample(state="completed"),
        POLICY,
        FRESH,
        Finish("none needed", 0),
        FRESH,
    ),
    (
        "completed after downtime steps",
        sample(state="completed"),
        POLICY,
        state(steps_applied=2),
        Finish("downtime steps", 2),
        state(steps_applied=2),
    ),
    (
        "completed throttled in its last sample: auto-converge",
        sample(state="completed", throttle_percent=30),
        POLICY,
        state(steps_applied=1),
        Finish("auto-converge", 1),
        state(steps_applied=1, throttled=True),
    ),
    (
        "completed, throttled earlier: auto-converge",
        sample(state="completed"),
        POLICY,
        state(throttled=True),
        Finish("auto-converge", 0),
        state(throttled=True),
    ),
    (
        "completed after a forced switch: the driver's lever beats auto-converge",
        sample(state="completed", throttle_percent=20),
        POLICY,
        state(lever="post-copy"),
        Finish("post-copy", 0),
        state(lever="post-copy", throttled=True),
    ),
    (
        "completed: requests no longer matter",
        sample(abort=True, force=True, state="completed", elapsed_s=9999.0),
        POLICY,
        FRESH,
        Finish("none needed", 0),
        FRESH,
    ),
    (
        "cancelled by the hypervisor",
        sample(state="cancelled"),
        POLICY,
        FRESH,
        Fail("during the transfer", cancelled=True),
        FRESH,
    ),
    (
        "failed with the hypervisor's reason",
        sample(state="failed", error="connection reset"),
        POLICY,
        FRESH,
        Fail("connection reset"),
        FRESH,
    ),
    (
        "failed without a reason",
        sample(state="failed"),
        POLICY,
        FRESH,
        Fail("the hypervisor reported a failure"),
        FRESH,
    ),
    (
        "the transfer vanished",
        sample(state="none"),
        POLICY,
        FRESH,
        Fail("the transfer disappeared from the hypervisor"),
        FRESH,
    ),
    (
        "a failure beats an abort request",
        sample(abort=True, state="failed", error="x"),
        POLICY,
        FRESH,
        Fail("x"),
        FRESH,
    ),
    # ----------------------------------------------------------------------------- abort
    (
        "abort on request",
        sample(abort=True),
        POLICY,
        FRESH,
        AbortOnRequest(),
        FRESH,
    ),
    (
        "abort beats force-complete, a stuck transfer, a step and the timeout",
        sample(abort=True, force=True, iteration=3, memory_remaining_mb=490.0, elapsed_s=5000.0),
        POLICY,
        SEEN,
        AbortOnRequest(),
        SEEN,
    ),
    (
        "abort after completion was forced",
        sample(abort=True),
        POLICY,
        state(lever="pause"),
        AbortOnRequest(),
        state(lever="pause"),
    ),
    # --------------------------------------------------------------- not converging: post-copy
    (
        "pass 3 shrank the rest by under 10 %: post-copy",
        sample(iteration=3, memory_remaining_mb=460.0),
        POLICY,
        SEEN,
        SwitchToPostCopy(3, 460.0),
        seen_too(SEEN, 3, 460.0),
    ),
    (
        "pass 3 shrank the rest by over 10 %: converging",
        sample(iteration=3, memory_remaining_mb=440.0),
        POLICY,
        SEEN,
        Wait(),
        seen_too(SEEN, 3, 440.0),
    ),
    (
        "exactly 10 % less is converging",
        sample(iteration=3, memory_remaining_mb=450.0),
        POLICY,
        SEEN,
        Wait(),
        seen_too(SEEN, 3, 450.0),
    ),
    (
        "more left than before: post-copy",
        sample(iteration=3, memory_remaining_mb=800.0),
        POLICY,
        SEEN,
        SwitchToPostCopy(3, 800.0),
        seen_too(SEEN, 3, 800.0),
    ),
    (
        "measured against the latest earlier pass seen",
        sample(iteration=5, memory_remaining_mb=460.0),
        POLICY,
        state(iterations=((1, 1000.0), (2, 800.0), (4, 500.0))),
        SwitchToPostCopy(5, 460.0),
        state(iterations=((1, 1000.0), (2, 800.0), (4, 500.0), (5, 460.0))),
    ),
    (
        "a pass already seen is not measured again",
        sample(iteration=2, memory_remaining_mb=900.0),
        POLICY,
        SEEN,
        Wait(),
        SEEN,
    ),
    (
        "pass 1 copies everything once",
        sample(iteration=1, memory_remaining_mb=1000.0),
        POLICY,
        FRESH,
        Wait(),
        state(iterations=((1, 1000.0),)),
    ),
    (
        "pass 2 sets the baseline, however big",
        sample(iteration=2, memory_remaining_mb=2000.0),
        POLICY,
        state(iterations=((1, 1000.0),)),
        Wait(),
        state(iterations=((1, 1000.0), (2, 2000.0))),
    ),
    (
        "pass 0 (setting up) is not recorded",
        sample(iteration=0, memory_remaining_mb=1024.0),
        POLICY,
        FRESH,
        Wait(),
        FRESH,
    ),
    (
        "first seen in pass 3 (re-attached): a baseline only",
        sample(iteration=3, memory_remaining_mb=900.0),
        POLICY,
        FRESH,
        Wait(),
        state(iterations=((3, 900.0),)),
    ),
    (
        "nothing was left before: never stuck",
        sample(iteration=3, memory_remaining_mb=10.0),
        POLICY,
        state(iterations=((1, 100.0), (2, 0.0))),
        Wait(),
        state(iterations=((1, 100.0), (2, 0.0), (3, 10.0))),
    ),
    (
        "post-copy not permitted: the detector is not even fed",
        sample(iteration=3, memory_remaining_mb=490.0),
        policy(permit_post_copy=False),
        SEEN,
        Wait(),
        SEEN,
    ),
    (
        "completion already forced: not asked again",
        sample(iteration=3, memory_remaining_mb=490.0),
        POLICY,
        state(SEEN, lever="post-copy"),
        Wait(),
        state(SEEN, lever="post-copy"),
    ),
    (
        "the driver refused before: not asked again",
        sample(iteration=3, memory_remaining_mb=490.0),
        POLICY,
        state(SEEN, refused=True),
        Wait(),
        state(SEEN, refused=True),
    ),
    # ------------------------------------------------------------------ force-complete on request
    (
        "force-complete on request",
        sample(force=True),
        POLICY,
        FRESH,
        ForceCompleteOnRequest(),
        state(iterations=((1, 512.0),)),
    ),
    (
        "force-complete on request without post-copy",
        sample(force=True, iteration=0),
        policy(permit_post_copy=False),
        FRESH,
        ForceCompleteOnRequest(),
        FRESH,
    ),
    (
        "a stuck transfer switches before the request is looked at",
        sample(force=True, iteration=3, memory_remaining_mb=490.0),
        POLICY,
        SEEN,
        SwitchToPostCopy(3, 490.0),
        seen_too(SEEN, 3, 490.0),
    ),
    (
        "force-complete requested again after it was forced: nothing",
        sample(force=True, iteration=0),
        POLICY,
        state(lever="pause"),
        Wait(),
        state(lever="pause"),
    ),
    (
        "force-complete requested after a refusal: nothing",
        sample(force=True, iteration=0),
        POLICY,
        state(refused=True),
        Wait(),
        state(refused=True),
    ),
    (
        "force-complete beats a downtime step now due",
        sample(force=True, iteration=0, elapsed_s=400.0),
        POLICY,
        FRESH,
        ForceCompleteOnRequest(),
        FRESH,
    ),
    # ----------------------------------------------------------------------- downtime steps
    (
        "before the first step is due",
        sample(iteration=0, elapsed_s=299.0),
        POLICY,
        FRESH,
        Wait(),
        FRESH,
    ),
    (
        "the first step is due",
        sample(iteration=0, elapsed_s=300.0),
        POLICY,
        FRESH,
        StepDowntime(95),
        state(steps_applied=1),
    ),
    (
        "two steps due at once: straight to the later",
        sample(iteration=0, elapsed_s=700.0),
        POLICY,
        FRESH,
        StepDowntime(140),
        state(steps_applied=2),
    ),
    (
        "the next step is due",
        sample(iteration=0, elapsed_s=650.0),
        POLICY,
        state(steps_applied=1),
        StepDowntime(140),
        state(steps_applied=2),
    ),
    (
        "all steps applied",
        sample(iteration=0, elapsed_s=3000.0),
        POLICY,
        state(steps_applied=2),
        Wait(),
        state(steps_applied=2),
    ),
    (
        "steps go on after completion was forced",
        sample(iteration=0, elapsed_s=300.0),
        POLICY,
        state(lever="post-copy"),
        StepDowntime(95),
        state(lever="post-copy", steps_applied=1),
    ),
    (
        "a step due past the timeout: the step first",
        sample(iteration=0, elapsed_s=4000.0),
        POLICY,
        state(steps_applied=1),
        StepDowntime(140),
        state(steps_applied=2),
    ),
    # --------------------------------------------------------------------- completion timeout
    (
        "past the timeout: abort",
        sample(iteration=0, elapsed_s=3200.5),
        POLICY,
        state(steps_applied=2),
        TimeoutAbort(3200.0),
        state(steps_applied=2),
    ),
    (
        "at the timeout exactly: not yet",
        sample(iteration=0, elapsed_s=3200.0),
        POLICY,
        state(steps_applied=2),
        Wait(),
        state(steps_applied=2),
    ),
    (
        "past the timeout with force_complete as its action",
        sample(iteration=0, elapsed_s=3201.0),
        policy(force_on_timeout=True),
        state(steps_applied=2),
        TimeoutForceComplete(3200.0),
        state(steps_applied=2),
    ),
    (
        "past the timeout after completion was forced: wait for it",
        sample(iteration=0, elapsed_s=3201.0),
        policy(force_on_timeout=True),
        state(steps_applied=2, lever="pause"),
        Wait(),
        state(steps_applied=2, lever="pause"),
    ),
    (
        "past the timeout after a refusal: the timeout still acts",
        sample(iteration=0, elapsed_s=3201.0),
        policy(force_on_timeout=True),
        state(steps_applied=2, refused=True),
        TimeoutForceComplete(3200.0),
        state(steps_applied=2, refused=True),
    ),
    (
        "no timeout configured",
        sample(iteration=0, elapsed_s=1e9),
        policy(timeout=None),
        state(steps_applied=2),
        Wait(),
        state(steps_applied=2),
    ),
    # ------------------------------------------------------------------------------- the rest
    (
        "throttled while running is remembered",
        sample(iteration=0, throttle_percent=20),
        POLICY,
        FRESH,
        Wait(),
        state(throttled=True),
    ),
    (
        "no longer throttled: still remembered",
        sample(iteration=0, throttle_percent=0),
        POLICY,
        state(throttled=True),
        Wait(),
        state(throttled=True),
    ),
]


@pytest.mark.parametrize(
    ("sample_", "policy_", "before", "action", "after"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(
    sample_: Sample,
    policy_: MonitorPolicy,
    before: MonitorState,
    action: Action,
    after: MonitorState,
) -> None:
    assert decide(sample_, policy_, before) == (action, after)


@pytest.mark.parametrize(
    ("progress", "before", "expected"),
    [
        (running(), FRESH, None),
        (running(state="failed"), FRESH, None),
        (running(state="completed"), FRESH, Finish("none needed", 0)),
        (running(state="completed", throttle_percent=5), FRESH, Finish("auto-converge", 0)),
        (running(state="completed"), state(lever="pause", steps_applied=3), Finish("pause", 3)),
    ],
)
def test_finished_is_what_decide_returns_for_the_sample(
    progress: TransferProgress, before: MonitorState, expected: Finish | None
) -> None:
    assert finished(progress, before) == expected
    action, _ = decide(Sample(progress), POLICY, before)
    assert (action if isinstance(action, Finish) else None) == expected


def test_state_after_the_driver_acted() -> None:
    assert FRESH.forced("post-copy") == state(lever="post-copy")
    assert FRESH.refusal() == state(refused=True)
    assert FRESH.finish() == Finish("none needed", 0)


@pytest.mark.parametrize("action", ["abort", "force_complete"])
def test_policy_from_settings(action: str) -> None:
    settings = MigrationSettings(
        live_migration_timeout_action=action, live_migration_permit_post_copy=False
    )
    made = MonitorPolicy.of(settings, 4.0)
    assert made.steps == tuple(downtime_steps(settings, 4.0)) and len(made.steps) == 11
    assert made.timeout == completion_timeout(settings, 4.0) == 3200.0
    assert made.force_on_timeout is (action == "force_complete")
    assert made.permit_post_copy is False
    assert (
        MonitorPolicy.of(MigrationSettings(live_migration_completion_timeout=0), 4.0).timeout
        is None
    )


def run_monitor(
    samples: list[Sample], policy_: MonitorPolicy, levers: dict[type, str | None]
) -> tuple[list[Action], MonitorState]:
    """What the monitor loop does with decide(): a downtime step decides again on the same
    sample; a forced completion updates the state with the driver's answer (None: refused)."""
    actions: list[Action] = []
    st = FRESH
    for s in samples:
        action, st = decide(s, policy_, st)
        actions.append(action)
        while isinstance(action, StepDowntime):
            action, st = decide(s, policy_, st)
            actions.append(action)
        if isinstance(action, SwitchToPostCopy | ForceCompleteOnRequest | TimeoutForceComplete):
            lever = levers[type(action)]
            st = st.refusal() if lever is None else st.forced(lever)
    return actions, st


def test_a_stuck_transfer_switches_once_and_finishes_by_post_copy() -> None:
    samples = [
        sample(iteration=1, memory_remaining_mb=1000.0),
        sample(iteration=2, memory_remaining_mb=600.0),
        sample(iteration=3, memory_remaining_mb=590.0),
        sample(iteration=3, memory_remaining_mb=300.0),
        sample(iteration=4, memory_remaining_mb=580.0),
        sample(state="completed", iteration=4),
    ]
    actions, st = run_monitor(samples, POLICY, {SwitchToPostCopy: "post-copy"})
    assert actions == [
        Wait(),
        Wait(),
        SwitchToPostCopy(3, 590.0),
        Wait(),
        Wait(),
        Finish("post-copy", 0),
    ]
    assert st.lever == "post-copy"


def test_a_refused_switch_is_not_retried_and_the_request_is_ignored_too() -> None:
    samples = [
        sample(iteration=1, memory_remaining_mb=1000.0),
        sample(iteration=2, memory_remaining_mb=600.0),
        sample(iteration=3, memory_remaining_mb=590.0),
        sample(iteration=4, memory_remaining_mb=590.0, force=True),
        sample(iteration=5, memory_remaining_mb=590.0, force=True, elapsed_s=3300.0),
    ]
    actions, st = run_monitor(samples, POLICY, {SwitchToPostCopy: None})
    assert actions == [
        Wait(),
        Wait(),
        SwitchToPostCopy(3, 590.0),
        Wait(),
        StepDowntime(140),
        TimeoutAbort(3200.0),
    ]
    assert st.refused and st.lever is None and st.steps_applied == 2


def test_a_step_and_the_timeout_due_in_one_sample_both_act() -> None:
    short = policy(timeout=100.0, force_on_timeout=True)
    samples = [
        sample(iteration=0, elapsed_s=50.0),
        sample(iteration=0, elapsed_s=400.0),
        sample(iteration=0, elapsed_s=401.0),
        sample(state="completed", iteration=0, elapsed_s=402.0),
    ]
    actions, st = run_monitor(samples, short, {TimeoutForceComplete: "pause"})
    assert st.lever == "pause" and st.steps_applied == 1
    assert actions == [
        Wait(),
        StepDowntime(95),
        TimeoutForceComplete(100.0),
        Wait(),
        Finish("pause", 1),
    ]
