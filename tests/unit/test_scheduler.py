from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from ferry.config import SchedulerSettings
from ferry.errors import NoValidHost
from ferry.model import Host, Instance
from ferry.model.numa import HostNumaState, NumaTopology, Pinning
from ferry.persistence.db import Database
from ferry.scheduler import HostCandidate, select_destination
from ferry.scheduler.filters import FILTERS, Weighers, in_group, not_with, reasons_of
from ferry.scheduler.numa import NO_TOPOLOGY
from ferry.scheduler.repository import ClaimRepository
from ferry.scheduler.scheduler import HostScheduler


def host(
    name: str,
    free_mb: int = 8192,
    version: int = 9,
    htype: str = "qemu",
    up: bool = True,
    enabled: bool = True,
) -> Host:
    return Host(
        name=name,
        driver="t",
        hypervisor_type=htype,
        hypervisor_version=version,
        vcpus=16,
        memory_mb=16384,
        disk_gb=500,
        memory_mb_used=16384 - free_mb,
        up=up,
        enabled=enabled,
    )


INST = Instance("u", "vm", "src", memory_mb=4096, vcpus=2, disk_gb=10)
SRC = host("src", version=8)


def test_most_free_ram_wins() -> None:
    cands = [HostCandidate(host("a", 6000)), HostCandidate(host("b", 12000)), HostCandidate(SRC)]
    assert select_destination(cands, INST, SRC) == "b"


def test_claims_count_against_free_ram() -> None:
    cands = [
        HostCandidate(host("a", 6000)),
        HostCandidate(host("b", 12000), claimed_memory_mb=9000),
    ]
    assert select_destination(cands, INST, SRC) == "a"


def test_every_rejected_host_has_its_reason() -> None:
    cands = [
        HostCandidate(SRC),
        HostCandidate(host("down", up=False)),
        HostCandidate(host("off", enabled=False)),
        HostCandidate(host("xen", htype="xen")),
        HostCandidate(host("old", version=7)),
        HostCandidate(host("full", 1024)),
        HostCandidate(host("tried")),
    ]
    with pytest.raises(NoValidHost) as info:
        select_destination(cands, INST, SRC, excluded={"tried": "check failed: boom"})
    r = info.value.reasons
    assert r["down"] == "host is down"
    assert r["off"] == "host is disabled"
    assert "hypervisor type" in r["xen"]
    assert "older" in r["old"]
    assert "not enough free RAM" in r["full"]
    assert r["tried"] == "check failed: boom"
    assert "src" not in r
    assert "down: host is down" in str(info.value)


# ------------------------------------------------------------------------------ weighers
def test_spread_takes_the_most_free_ram_and_pack_the_least() -> None:
    cands = [HostCandidate(host("a", 6000)), HostCandidate(host("b", 12000)), HostCandidate(SRC)]
    assert select_destination(cands, INST, SRC, weigher=Weighers("spread")) == "b"
    assert select_destination(cands, INST, SRC, weigher=Weighers("pack")) == "a"


def test_fewer_migrations_in_flight_wins_unless_its_multiplier_is_zero() -> None:
    busy = HostCandidate(host("a", 12000), in_flight=3)
    idle = HostCandidate(host("b", 11900), in_flight=0)
    small = HostCandidate(host("c", 6000), in_flight=0)
    # normalised over the candidates: a 1.0 + 0.0, b 0.98 + 1.0, c 0.0 + 1.0
    assert select_destination([busy, idle, small], INST, SRC, weigher=Weighers()) == "b"
    rows = [("a", 12000, 3), ("b", 11900, 0), ("c", 6000, 0)]
    assert Weighers(in_flight_multiplier=0.0).rank(rows) == ["a", "b", "c"]
    assert Weighers(ram_multiplier=0.0).rank(rows) == ["b", "c", "a"]
    assert Weighers("pack", in_flight_multiplier=0.0).rank(rows) == ["c", "b", "a"]


def test_equal_weights_go_to_the_host_name_and_bad_strategies_are_refused() -> None:
    assert Weighers().rank([("b", 1, 0), ("a", 1, 0)]) == ["a", "b"]
    assert Weighers().rank([]) == []
    with pytest.raises(ValueError):
        Weighers("random")


def test_group_and_anti_affinity_filters_give_their_reasons() -> None:
    gpu = HostCandidate(host("gpu-1"), groups=frozenset({"gpu"}))
    listed = HostCandidate(host("listed"))
    plain = HostCandidate(host("plain"))
    shared = HostCandidate(host("shared"), groups=frozenset({"gpu"}))
    filters = (
        *FILTERS,
        in_group("gpu", ["listed"]),
        not_with({"shared": "anti-affinity: db-1 runs here"}),
    )
    assert select_destination(
        [gpu, listed, plain, shared, HostCandidate(SRC)],
        INST,
        SRC,
        filters=filters,
        weigher=Weighers(),
    ) in ("gpu-1", "listed")
    with pytest.raises(NoValidHost) as info:
        select_destination([plain, shared], INST, SRC, filters=filters)
    assert info.value.reasons == {
        "plain": "not in host group 'gpu'",
        "shared": "anti-affinity: db-1 runs here",
    }


# ---------------------------------------------------------------- the host state cache (DB)
TOPO = NumaTopology.uniform(cells=2, cpus_per_cell=4, memory_mb_per_cell=8192)


def report(
    name: str,
    *,
    used: tuple[int, int, int] = (0, 0, 0),
    pinned: dict[int, frozenset[int]] | None = None,
    labels: dict[str, str] | None = None,
    up: bool = True,
    version: int = 9,
    htype: str = "qemu",
    numa: bool = True,
) -> Host:
    out = dict(labels or {})
    state = None
    if numa:
        used_mb = {c: 1024 * len(p) for c, p in (pinned or {}).items()}
        state = HostNumaState(TOPO, pinned or {}, used_mb)
    return Host(
        name=name,
        driver="t",
        hypervisor_type=htype,
        hypervisor_version=version,
        vcpus=8,
        memory_mb=16384,
        disk_gb=100,
        vcpus_used=used[0],
        memory_mb_used=used[1],
        disk_gb_used=used[2],
        up=up,
        labels=out,
        numa=state,
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(f"sqlite:///{tmp_path / 'f.db'}")
    d.upgrade()
    yield d
    d.close()


def pinned(vcpus: int, memory_mb: int = 1024, name: str = "g") -> Instance:
    return Instance(name, name, "src", vcpus=vcpus, memory_mb=memory_mb, extra={"pinned": True})


def test_refresh_caches_labels_groups_and_numa_cells(db: Database) -> None:
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("h", pinned={0: frozenset({1})}, labels={"groups": "a, b"})])
    state = repo.host_states(["h"])[0]
    assert state.groups == {"a", "b"} and state.host.labels == {"groups": "a, b"}
    assert [(c.cell, c.free_pcpus, c.free_mb) for c in state.cells] == [
        (0, (0, 2, 3), 7168),
        (1, (4, 5, 6, 7), 8192),
    ]
    repo.refresh_hosts([report("h", numa=False)])  # the topology is gone: so are the cells
    assert repo.host_states(["h"])[0].cells == ()


def test_a_host_with_a_migration_in_flight_keeps_its_accounted_usage(db: Database) -> None:
    clock = iter(range(1000, 2000))
    repo = ClaimRepository(db, now=lambda: float(next(clock)))
    repo.refresh_hosts([report("src", used=(2, 1024, 1)), report("dst")])
    guest = Instance("g", "g", "src", vcpus=2, memory_mb=1024, disk_gb=1)
    assert repo.claim("m", "dst", guest, source="src")
    # the switchover: the drivers now show the guest on dst; the cache does not follow yet
    repo.refresh_hosts([report("src"), report("dst", used=(2, 1024, 1))])
    states = {s.host.name: s for s in repo.host_states()}
    assert states["src"].host.vcpus_used == 2 and states["dst"].host.vcpus_used == 0
    assert states["dst"].claimed == (2, 1024, 1)
    assert states["src"].in_flight == states["dst"].in_flight == 1
    assert repo.release_source("m") == "src"
    assert repo.complete("m") == "dst"
    states = {s.host.name: s for s in repo.host_states()}
    assert states["src"].host.vcpus_used == 0 and states["dst"].host.vcpus_used == 2
    assert states["dst"].claimed == (0, 0, 0)


def test_a_report_read_before_ferry_accounted_does_not_overwrite(db: Database) -> None:
    now = [1000.0]
    repo = ClaimRepository(db, now=lambda: now[0])
    repo.refresh_hosts([report("src", used=(2, 1024, 1)), report("dst")])
    read_at = 1001.0  # a slow refresh reads the drivers now ...
    stale = [report("src", used=(2, 1024, 1)), report("dst")]
    now[0] = 1002.0
    guest = Instance("g", "g", "src", vcpus=2, memory_mb=1024, disk_gb=1)
    assert repo.claim("m", "dst", guest, source="src")
    assert repo.release_source("m") and repo.complete("m")
    repo.refresh_hosts(stale, reported_at=read_at)  # ... and writes after the accounting
    states = {s.host.name: s for s in repo.host_states()}
    assert states["src"].host.vcpus_used == 0 and states["dst"].host.vcpus_used == 2
    # an older report never overwrites a newer one, not even its capacity or state
    repo.refresh_hosts([report("dst", used=(2, 1024, 1))], reported_at=1003.0)
    repo.refresh_hosts([report("dst", up=False)], reported_at=1002.5)
    assert repo.host_states(["dst"])[0].host.up


def test_a_complete_refresh_marks_hosts_no_driver_reports_down(db: Database) -> None:
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("a"), report("gone")], reported_at=1.0)
    repo.refresh_hosts([report("a")], reported_at=2.0, complete=True)
    assert {s.host.name: s.host.up for s in repo.host_states()} == {"a": True, "gone": False}


def test_pinned_claims_take_free_pcpus_of_one_cell_and_refuse_with_the_split(
    db: Database,
) -> None:
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("h", pinned={0: frozenset({0, 1}), 1: frozenset({4})})])
    first = repo.claim_resources("m1", "h", pinned(3))
    assert first.ok and first.pinning == Pinning(1, (5, 6, 7), 1024)
    second = repo.claim_resources("m2", "h", pinned(2))
    assert second.ok and second.pinning == Pinning(0, (2, 3), 1024)
    refused = repo.claim_resources("m3", "h", pinned(1))
    assert not refused.ok
    assert refused.reason == (
        "no NUMA cell fits 1 pinned vCPUs + 1024 MiB: cell 0 has 0 free pCPUs / 5120 MiB, "
        "cell 1 has 0 free pCPUs / 6144 MiB (after the claims of other migrations)"
    )
    assert repo.claim_resources("m1", "h", pinned(3)) == first  # a re-run holds the same
    assert repo.pinning("m1", "h") == first.pinning
    assert repo.release("m1") == 1
    again = repo.claim_resources("m3", "h", pinned(1))
    assert again.ok and again.pinning == Pinning(1, (5,), 1024)


def test_pinned_guest_on_a_host_without_numa_cells_is_refused(db: Database) -> None:
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("h", numa=False)])
    result = repo.claim_resources("m", "h", pinned(1))
    assert (result.ok, result.reason) == (False, NO_TOPOLOGY)
    assert repo.list() == [] and repo.claimed()["h"] == (0, 0, 0)


def test_no_valid_host_carries_every_hosts_reason(db: Database) -> None:
    repo = ClaimRepository(db)
    repo.refresh_hosts(
        [
            report("src"),
            report("down", up=False),
            report("old", version=8),
            report("full", used=(8, 0, 0)),
            report("split", pinned={0: frozenset({0, 1, 2}), 1: frozenset({4, 5, 6})}),
            report("nonuma", numa=False),
            report("other-group", labels={"group": "b"}),
            report("near-db", labels={"group": "a"}),
            report("tried", labels={"group": "a"}),
        ]
    )
    sched = HostScheduler(db)
    with pytest.raises(NoValidHost) as info:
        sched.select(
            pinned(2),
            "src",
            {"tried": "check failed: boom"},
            to_group="a",
            avoid={"near-db": "anti-affinity: db-1 runs here"},
        )
    r = info.value.reasons
    assert r["down"] == "host is down"
    assert "older" in r["old"]
    assert "not enough free vCPUs" in r["full"]
    assert r["split"] == "not in host group 'a'"
    assert r["other-group"] == "not in host group 'a'"
    assert r["near-db"] == "anti-affinity: db-1 runs here"
    assert r["tried"] == "check failed: boom"
    assert "src" not in r
    # without the group and anti-affinity, NUMA speaks
    with pytest.raises(NoValidHost) as info:
        sched.select(pinned(2), "src", {"tried": "x", "other-group": "x", "near-db": "x"})
    assert info.value.reasons["split"].startswith("no NUMA cell fits 2 pinned vCPUs")
    assert info.value.reasons["nonuma"] == NO_TOPOLOGY
    assert sched.select(pinned(2), "src") == "near-db"  # equal weights: by name


# --------------------------------------------- the SQL pre-filter agrees with the Python filters
@st.composite
def clusters(
    draw: st.DrawFn,
) -> tuple[list[Host], list[tuple[str, Instance]], Instance, dict[str, Any]]:
    hosts = []
    for i in range(draw(st.integers(1, 8))):
        cells = {
            c: frozenset(draw(st.sets(st.sampled_from(sorted(TOPO.cells[c].cpus)), max_size=4)))
            for c in (0, 1)
        }
        hosts.append(
            report(
                f"h{i}",
                used=(
                    draw(st.integers(0, 8)),
                    draw(st.integers(0, 16384)),
                    draw(st.integers(0, 100)),
                ),
                pinned=cells,
                up=draw(st.booleans()) or draw(st.booleans()),
                version=draw(st.sampled_from([8, 9, 10])),
                htype=draw(st.sampled_from(["qemu", "qemu", "xen"])),
                numa=draw(st.booleans()) or draw(st.booleans()),
                labels={"group": draw(st.sampled_from(["a", "b", "a_", "ab"]))},
            )
        )
    claims = [
        (draw(st.sampled_from(hosts)).name, inst)
        for inst in draw(
            st.lists(
                st.builds(
                    lambda v, m, p: Instance(
                        "c", "c", "x", vcpus=v, memory_mb=m, disk_gb=1, extra={"pinned": p}
                    ),
                    st.integers(1, 3),
                    st.sampled_from([512, 2048, 4096]),
                    st.booleans(),
                ),
                max_size=6,
            )
        )
    ]
    inst = Instance(
        "g",
        "g",
        "src",
        vcpus=draw(st.integers(1, 4)),
        memory_mb=draw(st.sampled_from([1024, 3072, 4096, 6144, 9000])),
        disk_gb=draw(st.integers(0, 60)),
        extra={"pinned": draw(st.booleans())},
    )
    names = [h.name for h in hosts]
    request = {
        "excluded": {n: "tried" for n in draw(st.sets(st.sampled_from(names), max_size=2))},
        "avoid": {n: "anti" for n in draw(st.sets(st.sampled_from(names), max_size=2))},
        "to_group": draw(st.sampled_from([None, "a", "a_", "ab"])),
        "members": draw(st.sets(st.sampled_from(names), max_size=2)),
    }
    return hosts, claims, inst, request


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(clusters())
def test_the_sql_prefilter_keeps_exactly_the_hosts_the_python_filters_pass(
    db: Database,
    scenario: tuple[list[Host], list[tuple[str, Instance]], Instance, dict[str, Any]],
) -> None:
    hosts, claims, inst, req = scenario
    with db.connect() as conn:
        for table in (
            "ferry_pcpu_claims",
            "ferry_claims",
            "ferry_host_numa_cells",
            "ferry_host_states",
        ):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("src"), *hosts])
    for k, (h, claim) in enumerate(claims):
        repo.claim_resources(f"c{k}", h, claim)
    groups = {"a": sorted(req["members"])} if req["to_group"] == "a" else {}
    sched = HostScheduler(db, SchedulerSettings(groups=groups))
    src = repo.host_states(["src"])[0].host
    with db.connect() as conn:
        sql = {
            r[0]
            for r in conn.execute(
                sched.candidates_query(inst, src, req["excluded"], req["to_group"], req["avoid"])
            )
        }
    filters = sched.filters(req["to_group"], req["avoid"])
    states = repo.host_states()
    passing, reasons = reasons_of(
        [s.candidate() for s in states], inst, src, req["excluded"], filters
    )
    assert sql == {c.host.name for c in passing}
    if passing:
        want = sched.weighers.rank([(c.host.name, c.free_memory_mb, c.in_flight) for c in passing])
        assert (
            sched.select(inst, "src", req["excluded"], to_group=req["to_group"], avoid=req["avoid"])
            == want[0]
        )
    else:
        with pytest.raises(NoValidHost) as info:
            sched.select(inst, "src", req["excluded"], to_group=req["to_group"], avoid=req["avoid"])
        assert info.value.reasons == reasons


def test_the_sql_prefilter_counts_claimed_pcpus_and_cell_memory(db: Database) -> None:
    """Cell 1 is full of pins; cell 0 has room for the guest's pCPUs and memory only until
    another migration claims some of them."""
    repo = ClaimRepository(db)
    repo.refresh_hosts([report("src"), report("h", pinned={1: frozenset({4, 5, 6, 7})})])
    sched = HostScheduler(db)
    src = repo.host_states(["src"])[0].host

    def passing(inst: Instance) -> set[str]:
        with db.connect() as conn:
            return {r[0] for r in conn.execute(sched.candidates_query(inst, src))}

    assert passing(pinned(2, 6144)) == {"h"}
    assert repo.claim("other", "h", pinned(1, 4096))  # cell 0: 3 pCPUs, 4096 MiB left
    assert passing(pinned(2, 6144)) == set()  # memory of the cell claimed
    assert passing(pinned(3, 4096)) == {"h"}
    assert repo.claim("other-2", "h", pinned(1, 512))
    assert passing(pinned(3, 1024)) == set()  # pCPUs of the cell claimed
    assert passing(pinned(2, 1024)) == {"h"}
