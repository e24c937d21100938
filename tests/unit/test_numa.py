"""NUMA cell fit for pinned guests (seed 004): one cell, free pCPUs only, reasons that show the
split, determinism, and a brute-force property check."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from ferry.errors import NoValidHost
from ferry.model import Host, Instance
from ferry.model.numa import (
    GuestRequest,
    HostNumaState,
    NumaCell,
    NumaTopology,
    Pinning,
    fit_pinned_guest,
)
from ferry.scheduler import FILTERS, HostCandidate, select_destination
from ferry.scheduler.numa import NO_TOPOLOGY, numa_filter, numa_fit_filter, pin_instance

# Two cells of 4 pCPUs and 8 GiB: cell 0 = pCPUs 0-3, cell 1 = pCPUs 4-7.
TOPO = NumaTopology.uniform(cells=2, cpus_per_cell=4, memory_mb_per_cell=8192)


def pinned(vcpus: int, memory_mb: int) -> GuestRequest:
    return GuestRequest(vcpus=vcpus, memory_mb=memory_mb, pinned=True)


def host(name: str, state: HostNumaState | None = None, **kw: object) -> Host:
    return Host(
        name=name,
        driver="t",
        hypervisor_type="qemu",
        hypervisor_version=9,
        vcpus=64,
        memory_mb=65536,
        disk_gb=500,
        numa=state,
        **kw,  # type: ignore[arg-type]
    )


def instance(vcpus: int = 4, memory_mb: int = 4096, pin: bool = True) -> Instance:
    extra = {"cpu_policy": "dedicated"} if pin else {}
    return Instance("u", "vm", "src", vcpus=vcpus, memory_mb=memory_mb, disk_gb=1, extra=extra)


SRC = host("src")


def test_free_pcpus_split_across_cells_is_rejected_with_the_split() -> None:
    # 5 free pCPUs on the host, but 2 in cell 0 and 3 in cell 1: a 4-vCPU pinned guest fits nowhere.
    why = fit_pinned_guest(TOPO, {0: {0, 1}, 1: {4}}, {}, pinned(4, 4096))
    assert why == (
        "no NUMA cell fits 4 pinned vCPUs + 4096 MiB: "
        "cell 0 has 2 free pCPUs / 8192 MiB, cell 1 has 3 free pCPUs / 8192 MiB"
    )


def test_memory_split_across_cells_is_rejected_with_the_split() -> None:
    # Enough free pCPUs everywhere and 10 GiB free in total, but no single cell has 6 GiB.
    why = fit_pinned_guest(TOPO, {}, {0: 3072, 1: 6144}, pinned(2, 6144))
    assert why == (
        "no NUMA cell fits 2 pinned vCPUs + 6144 MiB: "
        "cell 0 has 4 free pCPUs / 5120 MiB, cell 1 has 4 free pCPUs / 2048 MiB"
    )


def test_cpus_in_one_cell_and_memory_in_the_other_does_not_fit() -> None:
    why = fit_pinned_guest(TOPO, {1: {4, 5, 6}}, {0: 8192}, pinned(2, 1024))
    assert isinstance(why, str)
    assert "cell 0 has 4 free pCPUs / 0 MiB" in why
    assert "cell 1 has 1 free pCPUs / 8192 MiB" in why


def test_fitting_cell_gets_a_pinning_on_free_pcpus_only() -> None:
    # Cell 0 has pCPUs 0 and 2 pinned by another guest; cell 1 is full of pins.
    p = fit_pinned_guest(TOPO, {0: {0, 2}, 1: {4, 5, 6, 7}}, {}, pinned(2, 2048))
    assert p == Pinning(cell=0, vcpu_to_pcpu=(1, 3), memory_mb=2048)


def test_pins_listed_under_the_wrong_cell_still_count() -> None:
    # A pCPU is free when no domain pins it, whichever cell's entry lists it.
    p = fit_pinned_guest(TOPO, {0: {4, 5}}, {}, pinned(3, 0))
    assert isinstance(p, Pinning)
    assert p.pcpus.isdisjoint({4, 5})
    assert p.cell == 0  # best fit: cell 1 has only 2 free, cell 0 has 4


def test_best_fit_prefers_the_tightest_cell_then_the_lowest_id() -> None:
    p = fit_pinned_guest(TOPO, {0: {0}}, {}, pinned(2, 1024))
    assert isinstance(p, Pinning) and p.cell == 0 and p.vcpu_to_pcpu == (1, 2)
    p = fit_pinned_guest(TOPO, {}, {}, pinned(2, 1024))
    assert isinstance(p, Pinning) and p.cell == 0 and p.vcpu_to_pcpu == (0, 1)
    p = fit_pinned_guest(TOPO, {}, {0: 1024}, pinned(2, 1024))
    assert isinstance(p, Pinning) and p.cell == 0  # equal pCPUs: less free memory wins


def test_fit_is_deterministic_whatever_the_input_order() -> None:
    cells = tuple(reversed(TOPO.cells))
    a = fit_pinned_guest(NumaTopology(cells), {1: {7, 4}, 0: {3}}, {1: 1, 0: 2}, pinned(3, 10))
    b = fit_pinned_guest(TOPO, {0: {3}, 1: {4, 7}}, {0: 2, 1: 1}, pinned(3, 10))
    assert a == b == Pinning(cell=0, vcpu_to_pcpu=(0, 1, 2), memory_mb=10)


def test_unpinned_guests_always_pass_the_filter() -> None:
    full = HostNumaState(TOPO, {0: frozenset(range(4)), 1: frozenset(range(4, 8))}, {0: 8192})
    for f in (numa_fit_filter, numa_filter({"h": full}), numa_filter({})):
        assert f(HostCandidate(host("h", full)), instance(pin=False), SRC) is None
        assert f(HostCandidate(host("bare")), instance(pin=False), SRC) is None
    assert pin_instance(full, instance(pin=False)) is None
    with pytest.raises(ValueError):
        fit_pinned_guest(TOPO, {}, {}, GuestRequest(1, 1, pinned=False))


def test_pinned_guest_on_host_without_topology_is_rejected() -> None:
    assert numa_fit_filter(HostCandidate(host("bare")), instance(), SRC) == NO_TOPOLOGY
    assert numa_filter({})(HostCandidate(host("bare")), instance(), SRC) == NO_TOPOLOGY


def test_request_from_instance_extra() -> None:
    assert GuestRequest.from_instance(instance()).pinned
    assert not GuestRequest.from_instance(instance(pin=False)).pinned
    inst = Instance("u", "vm", "src", vcpus=2, memory_mb=64, extra={"hw:cpu_policy": "dedicated"})
    assert GuestRequest.from_instance(inst) == GuestRequest(2, 64, True)
    inst = Instance("u", "vm", "src", extra={"cpu_policy": "shared"})
    assert not GuestRequest.from_instance(inst).pinned


def test_filter_in_select_destination_keeps_the_reason_and_picks_the_fitting_host() -> None:
    split = HostNumaState(TOPO, {0: frozenset({0, 1}), 1: frozenset({4})})
    fits = HostNumaState(TOPO, {0: frozenset({0, 1, 2, 3})}, {1: 1024})
    cands = [
        HostCandidate(host("split", split)),
        HostCandidate(host("fits", fits, memory_mb_used=60000)),  # less free RAM: weighs less
        HostCandidate(SRC),
    ]
    filters = (*FILTERS, numa_fit_filter)
    assert select_destination(cands, instance(), SRC, filters=filters) == "fits"
    chosen = pin_instance(fits, instance())
    assert chosen == Pinning(cell=1, vcpu_to_pcpu=(4, 5, 6, 7), memory_mb=4096)
    # Without the fitting host: NoValidHost carries the per-cell split.
    with pytest.raises(NoValidHost) as info:
        select_destination(cands[::2], instance(), SRC, filters=filters)
    assert (
        "cell 0 has 2 free pCPUs / 8192 MiB, cell 1 has 3 free pCPUs"
        in (info.value.reasons["split"])
    )
    # The mapping-based filter agrees with the label-based one.
    by_name = numa_filter({"split": split, "fits": fits})
    plain = [HostCandidate(host("split")), HostCandidate(host("fits")), HostCandidate(SRC)]
    assert select_destination(plain, instance(), SRC, filters=(*FILTERS, by_name)) == "fits"
    assert by_name(plain[0], instance(), SRC) == numa_fit_filter(cands[0], instance(), SRC)


def test_claimed_pinning_is_no_longer_free_and_release_restores_it() -> None:
    state = HostNumaState(TOPO)
    first = state.fit(pinned(4, 4096))
    assert isinstance(first, Pinning)
    after = state.with_pinning(first)
    second = after.fit(pinned(4, 4096))
    assert isinstance(second, Pinning)
    assert first.pcpus.isdisjoint(second.pcpus) and first.cell != second.cell
    assert isinstance(after.with_pinning(second).fit(pinned(1, 0)), str)
    assert after.without_pinning(first).fit(pinned(4, 4096)) == first


def test_serialisation_round_trips() -> None:
    state = HostNumaState(TOPO, {0: frozenset({1})}, {1: 512})
    assert HostNumaState.from_dict(state.to_dict()) == state
    p = Pinning(cell=1, vcpu_to_pcpu=(7, 5, 6), memory_mb=10)
    assert Pinning.from_dict(p.to_dict()) == p


def test_invalid_topologies_are_refused() -> None:
    with pytest.raises(ValueError, match="more than one cell"):
        NumaTopology((NumaCell(0, frozenset({0, 1}), 1), NumaCell(1, frozenset({1}), 1)))
    with pytest.raises(ValueError, match="duplicate"):
        NumaTopology((NumaCell(0, frozenset({0}), 1), NumaCell(0, frozenset({1}), 1)))


# ------------------------------------------------------------------------------- property
@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[NumaTopology, dict[int, set[int]], dict[int, int], GuestRequest]:
    n_cells = draw(st.integers(0, 4))
    cells = []
    next_cpu = 0
    for cid in range(n_cells):
        size = draw(st.integers(0, 6))
        cells.append(
            NumaCell(cid, frozenset(range(next_cpu, next_cpu + size)), draw(st.integers(0, 8)))
        )
        next_cpu += size
    topo = NumaTopology(tuple(cells))
    all_cpus = list(range(next_cpu + 2))  # a couple of pins outside any cell: harmless noise
    pinned_by_cell: dict[int, set[int]] = {}
    for cid in range(n_cells + 1):
        pinned_by_cell[cid] = set(draw(st.lists(st.sampled_from(all_cpus), max_size=6)))
    used = {cid: draw(st.integers(0, 8)) for cid in range(n_cells)}
    request = GuestRequest(draw(st.integers(1, 6)), draw(st.integers(0, 8)), pinned=True)
    return topo, pinned_by_cell, used, request


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_property_pinning_is_free_distinct_one_cell_and_rejection_only_when_nothing_fits(
    scenario: tuple[NumaTopology, dict[int, set[int]], dict[int, int], GuestRequest],
) -> None:
    topo, pinned_by_cell, used, request = scenario
    all_pinned = set(itertools.chain.from_iterable(pinned_by_cell.values()))
    result = fit_pinned_guest(topo, pinned_by_cell, used, request)

    # Brute force: a cell fits when some subset of its free pCPUs of size vcpus exists and its
    # free memory is enough.
    def cell_fits(cell: NumaCell) -> bool:
        free = sorted(cell.cpus - all_pinned)
        has_subset = any(True for _ in itertools.combinations(free, request.vcpus))
        return has_subset and cell.memory_mb - used.get(cell.id, 0) >= request.memory_mb

    fitting = [c for c in topo.cells if cell_fits(c)]
    if isinstance(result, str):
        assert not fitting
        assert result.startswith(f"no NUMA cell fits {request.vcpus} pinned vCPUs")
        for cell in topo.cells:
            free = len(cell.cpus - all_pinned)
            assert f"cell {cell.id} has {free} free pCPUs / " in result
        return
    cell = next(c for c in topo.cells if c.id == result.cell)
    assert cell in fitting
    assert len(result.vcpu_to_pcpu) == request.vcpus
    assert len(set(result.vcpu_to_pcpu)) == request.vcpus  # distinct
    assert result.pcpus <= cell.cpus  # exactly one cell
    assert result.pcpus.isdisjoint(all_pinned)  # only free pCPUs
    assert result.memory_mb == request.memory_mb
    # Best fit: no fitting cell is tighter.
    free_count = len(cell.cpus - all_pinned)
    assert all(len(c.cpus - all_pinned) >= free_count for c in fitting)
    # Deterministic, and the cached-state path agrees.
    assert fit_pinned_guest(topo, pinned_by_cell, used, request) == result
    state = HostNumaState(topo, {k: frozenset(v) for k, v in pinned_by_cell.items()}, used)
    assert state.fit(request) == result
    assert state.check(request) is None


def test_the_filter_prefers_the_cached_state_with_claims_over_the_label() -> None:
    """The label is the driver's report; the candidate's ``numa`` adds the pCPUs migrations in
    flight claimed, which the guest must avoid as well."""
    reported = HostNumaState(TOPO)
    claimed = reported.with_pinning(Pinning(0, (0, 1, 2), 0)).with_pinning(Pinning(1, (4,), 0))
    labelled = host("h", reported)
    assert numa_fit_filter(HostCandidate(labelled), instance(), SRC) is None
    why = numa_fit_filter(HostCandidate(labelled, numa=claimed), instance(), SRC)
    assert why == (
        "no NUMA cell fits 4 pinned vCPUs + 4096 MiB: "
        "cell 0 has 1 free pCPUs / 8192 MiB, cell 1 has 3 free pCPUs / 8192 MiB"
    )
