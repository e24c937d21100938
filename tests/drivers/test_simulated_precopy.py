"""The pure pre-copy model (ferry.drivers.simulated.precopy)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from ferry.drivers.simulated import precopy
from ferry.drivers.simulated.precopy import simulate

# Hand-computed case: 1024 MiB of RAM, a 1024 MiB/s link, 128 MiB/s dirtied, 100 ms allowed
# (so it converges when <= 102.4 MiB is left):
#   pass 1: 1024 MiB in 1 s          (t = 1.0)     -> 128 MiB dirtied
#   pass 2: 128 MiB in 0.125 s       (t = 1.125)   -> 16 MiB dirtied
#   pass 3: 16 MiB <= 102.4: pause, send it in 15.625 ms -> switchover at t = 1.140625
HAND = {"memory_mb": 1024, "dirty_rate_mbps": 128, "bandwidth_mbps": 1024}
HAND_HISTORY = [(0.0, 100)]


def test_hand_computed_case_converges_with_expected_iterations() -> None:
    done = simulate(**HAND, downtime_history=HAND_HISTORY, elapsed_s=5)
    assert done.state == "completed"
    assert done.iteration == 3
    assert done.elapsed_s == pytest.approx(1.140625)
    assert done.downtime_ms == 16  # 15.625 ms, rounded
    assert done.memory_processed_mb == pytest.approx(1024 * 1.140625)
    assert done.memory_remaining_mb == 0
    assert done.fraction == 1.0


@pytest.mark.parametrize(
    ("elapsed", "iteration", "remaining"),
    [
        (0.0, 1, 1024.0),
        (0.5, 1, 1024 - 512 + 64),  # half of pass 1 sent, 64 MiB dirtied meanwhile
        (1.0, 2, 128.0),  # pass 2 starts with what pass 1 left dirty
        (1.0625, 2, 64 + 8),
        (1.13, 3, 16 - 1024 * 0.005),  # paused: sending the last 16 MiB
    ],
)
def test_hand_computed_case_while_running(elapsed: float, iteration: int, remaining: float) -> None:
    progress = simulate(**HAND, downtime_history=HAND_HISTORY, elapsed_s=elapsed)
    assert progress.state == "running"
    assert progress.iteration == iteration
    assert progress.memory_remaining_mb == pytest.approx(remaining)
    assert progress.memory_processed_mb == pytest.approx(1024 * elapsed)
    assert progress.elapsed_s == pytest.approx(elapsed)
    assert progress.downtime_ms == 100  # the max downtime in force


def test_dirtier_than_the_link_never_converges_at_50ms() -> None:
    pass_s = 4096 / 1200
    progress = simulate(4096, 1500, 1200, [(0, 50)], elapsed_s=10_000)
    assert progress.state == "running"
    assert progress.iteration == math.floor(10_000 / pass_s) + 1
    assert progress.memory_processed_mb == pytest.approx(1200 * 10_000)
    assert progress.dirty_rate_mbps == 1500


def test_raising_the_downtime_makes_it_converge_at_the_next_pass() -> None:
    pass_s = 4096 / 1200  # every pass resends all the RAM
    history = [(0, 50), (20, 100), (20, 4000)]  # 4 s > one pass: converges
    progress = simulate(4096, 1500, 1200, history, elapsed_s=60)
    assert progress.state == "completed"
    boundary = math.ceil(20 / pass_s) * pass_s  # the first pass boundary after the raise
    assert progress.elapsed_s == pytest.approx(boundary + pass_s)
    assert progress.iteration == math.ceil(20 / pass_s) + 1
    assert progress.downtime_ms == round(pass_s * 1000)
    before = simulate(4096, 1500, 1200, history, elapsed_s=boundary - 0.01)
    assert before.state == "running" and before.downtime_ms == 4000


def test_force_complete_pause() -> None:
    # forced at 1 s: the rest of pass 1 (2896 MiB) plus 1500 dirtied, capped at the RAM size
    progress = simulate(4096, 1500, 1200, [(0, 50)], elapsed_s=100, force_at=1.0)
    assert progress.state == "completed"
    assert progress.elapsed_s == pytest.approx(1 + 4096 / 1200)
    assert progress.downtime_ms == round(4096 / 1200 * 1000)
    paused = simulate(4096, 1500, 1200, [(0, 50)], elapsed_s=2.0, force_at=1.0)
    assert paused.state == "running" and paused.dirty_rate_mbps == 0
    assert paused.memory_remaining_mb == pytest.approx(4096 - 1200)


def test_force_complete_pause_sends_only_what_is_left() -> None:
    # hand case forced at 0.5 s: 512 MiB unsent + 64 MiB dirtied -> 576 MiB while paused
    progress = simulate(**HAND, downtime_history=HAND_HISTORY, elapsed_s=5, force_at=0.5)
    assert progress.elapsed_s == pytest.approx(0.5 + 576 / 1024)
    assert progress.downtime_ms == round(576 / 1024 * 1000)


def test_force_complete_post_copy_switches_over_at_once() -> None:
    progress = simulate(4096, 1500, 1200, [(0, 50)], elapsed_s=100, force_at=7.5, post_copy=True)
    assert progress.state == "completed"
    assert progress.elapsed_s == pytest.approx(7.5)
    assert progress.downtime_ms == 0


def test_force_after_completion_changes_nothing() -> None:
    natural = simulate(**HAND, downtime_history=HAND_HISTORY, elapsed_s=5)
    forced = simulate(**HAND, downtime_history=HAND_HISTORY, elapsed_s=5, force_at=3.0)
    assert forced == natural


def test_fault_fails_at_the_fraction() -> None:
    fail_s = 0.5 * 4096 / 1200
    before = simulate(4096, 150, 1200, [(0, 50)], elapsed_s=fail_s - 0.01, fail_fraction=0.5)
    assert before.state == "running"
    failed = simulate(
        4096, 150, 1200, [(0, 50)], elapsed_s=100, fail_fraction=0.5, fail_message="boom"
    )
    assert failed.state == "failed" and failed.error == "boom"
    assert failed.elapsed_s == pytest.approx(fail_s)
    assert failed.memory_processed_mb == pytest.approx(2048)


def test_paused_guest_and_tiny_guest() -> None:
    idle = simulate(4096, 0, 1024, [(0, 50)], elapsed_s=10)
    assert (idle.state, idle.iteration, idle.downtime_ms) == ("completed", 2, 0)
    assert idle.elapsed_s == pytest.approx(4.0)
    tiny = simulate(32, 1000, 1024, [(0, 50)], elapsed_s=1)  # 32 MiB <= 51.2 MiB allowed
    assert (tiny.state, tiny.iteration) == ("completed", 1)
    assert tiny.downtime_ms == round(32 / 1024 * 1000)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        simulate(1024, 0, 0, [(0, 50)], elapsed_s=1)
    with pytest.raises(ValueError):
        simulate(1024, 0, 100, [], elapsed_s=1)
    with pytest.raises(ValueError):
        simulate(-1, 0, 100, [(0, 50)], elapsed_s=1)


def test_the_iteration_safety_net_is_far_away() -> None:
    # a dirty guest close to the link speed converges geometrically: thousands of passes
    progress = simulate(4096, 1199, 1200, [(0, 50)], elapsed_s=1e9)
    assert progress.state == "completed"
    assert progress.iteration < precopy.MAX_ITERATIONS


memory = st.floats(min_value=1, max_value=65536)
rates = st.floats(min_value=0, max_value=5000)
bandwidths = st.floats(min_value=1, max_value=5000)
downtimes = st.lists(
    st.tuples(st.floats(min_value=0, max_value=100), st.integers(min_value=1, max_value=5000)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(memory, rates, bandwidths, downtimes, st.floats(min_value=0, max_value=500))
def test_model_invariants(
    mem: float, dirty: float, bw: float, history: list[tuple[float, int]], elapsed: float
) -> None:
    progress = simulate(mem, dirty, bw, history, elapsed_s=elapsed)
    assert progress.state in ("running", "completed")
    assert 0 <= progress.memory_remaining_mb <= mem + 1e-6
    assert progress.elapsed_s <= elapsed + 1e-9
    assert progress.memory_processed_mb == pytest.approx(bw * progress.elapsed_s)
    assert progress.iteration >= 1
    if progress.state == "running":
        assert progress.elapsed_s == pytest.approx(elapsed)
    else:
        # the end does not depend on when it is observed
        later = simulate(mem, dirty, bw, history, elapsed_s=elapsed + 1000)
        assert later == progress


@settings(max_examples=100, deadline=None)
@given(memory, rates, bandwidths, st.floats(min_value=0, max_value=100))
def test_observing_never_goes_backwards(mem: float, dirty: float, bw: float, t: float) -> None:
    history = [(0.0, 50)]
    earlier = simulate(mem, dirty, bw, history, elapsed_s=t)
    later = simulate(mem, dirty, bw, history, elapsed_s=t + 1)
    assert later.memory_processed_mb >= earlier.memory_processed_mb
    assert later.iteration >= earlier.iteration
    if earlier.state == "completed":
        assert later.state == "completed"


@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.999, 1 - 1e-9])
@pytest.mark.parametrize("downtime_ms", [0, 1, 50, 500])
def test_geometric_passes_stay_cheap(ratio: float, downtime_ms: int) -> None:
    """Dirty rates just under the link speed (even with 0 ms allowed) end in few steps."""
    bw = 1200.0
    total = 4096 / bw / (1 - ratio)  # the geometric series of pass durations
    for elapsed in (total / 3, total * 0.999999, total * 2):
        progress = simulate(4096, ratio * bw, bw, [(0, downtime_ms)], elapsed_s=elapsed)
        assert progress.elapsed_s <= elapsed + 1e-6
        assert progress.memory_processed_mb == pytest.approx(bw * progress.elapsed_s)
    assert simulate(4096, ratio * bw, bw, [(0, downtime_ms)], elapsed_s=total * 2).state == (
        "completed"
    )


def test_geometric_jump_matches_pass_by_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The O(1) skip gives the same answers as walking every pass."""
    cases = [(4096, 1100, 1200, [(0, 50), (30, 80)], t) for t in (0.3, 5, 29.9, 31, 60, 1e4)]
    fast = [simulate(*c[:4], elapsed_s=c[4]) for c in cases]
    monkeypatch.setattr(precopy, "_geometric_jump", lambda *a: 0)
    slow = [simulate(*c[:4], elapsed_s=c[4]) for c in cases]
    for a, b in zip(fast, slow, strict=True):
        assert a.state == b.state and a.iteration == b.iteration
        assert a.elapsed_s == pytest.approx(b.elapsed_s)
        assert a.memory_remaining_mb == pytest.approx(b.memory_remaining_mb, abs=1e-6)
        assert a.downtime_ms == b.downtime_ms
