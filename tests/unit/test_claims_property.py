"""Property test (hypothesis, stateful) of the claims on the host state cache, pCPU claims
included: no sequence of claim / revert / switchover / release on the source / complete /
driver refresh (current or stale) / crash-and-resume leaves the cached usage different from the
sum of the placed instances -- exactly, with the instances of migrations past the switchover
still counted on their source until it is released and on their destination only once the claim
turns into usage -- and no pCPU is ever claimed twice, claimed while pinned, or pinned by two
guests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ferry.model import Host, Instance
from ferry.model.numa import GuestRequest, HostNumaState, NumaTopology, Pinning
from ferry.persistence.db import Database
from ferry.persistence.models import PCPU_CLAIMS as PC
from ferry.scheduler.repository import ClaimRepository

HOSTS = ("h1", "h2", "h3")
TOPOLOGY = NumaTopology.uniform(cells=2, cpus_per_cell=4, memory_mb_per_cell=4096)
CAPACITY = (8, 8192, 100)  # vcpus, memory_mb, disk_gb
Res = tuple[int, int, int]

_template: Path | None = None


def _template_db() -> Path:
    """One upgraded SQLite file, copied for each example (Alembic per example is too slow)."""
    global _template
    if _template is None:
        path = Path(tempfile.mkdtemp(prefix="ferry-claims-template-")) / "t.db"
        db = Database(f"sqlite:///{path}")
        db.upgrade()
        db.close()
        _template = path
    return _template


def _add(a: Res, b: Res, sign: int = 1) -> Res:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2])


@dataclass
class Guest:
    uuid: str
    res: Res
    pinned: bool
    host: str
    pinning: Pinning | None = None

    def instance(self) -> Instance:
        extra: dict[str, Any] = {}
        if self.pinned:
            extra["cpu_policy"] = "dedicated"
            assert self.pinning is not None
            extra["numa_pinning"] = self.pinning.to_dict()
        v, m, d = self.res
        return Instance(
            self.uuid, self.uuid, self.host, vcpus=v, memory_mb=m, disk_gb=d, extra=extra
        )


@dataclass
class Move:
    guest: str
    source: str
    destination: str
    pinning: Pinning | None
    source_pinning: Pinning | None
    phase: str = "claimed"  # claimed -> switched -> source released -> (completed: gone)


@dataclass
class View:
    """What the cache must hold for one host."""

    used: Res = (0, 0, 0)
    pinned: dict[int, set[int]] = field(default_factory=lambda: {0: set(), 1: set()})
    cell_mb: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})
    claimed: Res = (0, 0, 0)
    claimed_pcpus: dict[int, set[int]] = field(default_factory=lambda: {0: set(), 1: set()})
    claimed_mb: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})

    def add(self, res: Res, p: Pinning | None, sign: int) -> None:
        self.used = _add(self.used, res, sign)
        if p is not None:
            if sign > 0:
                self.pinned[p.cell] |= p.pcpus
            else:
                self.pinned[p.cell] -= p.pcpus
            self.cell_mb[p.cell] += sign * p.memory_mb

    def numa(self) -> HostNumaState:
        return HostNumaState(
            TOPOLOGY,
            {c: frozenset(self.pinned[c] | self.claimed_pcpus[c]) for c in (0, 1)},
            {c: self.cell_mb[c] + self.claimed_mb[c] for c in (0, 1)},
        )


sizes = st.tuples(st.integers(1, 4), st.sampled_from([512, 1024, 2048, 3072]), st.integers(1, 30))


class ClaimMachine(RuleBasedStateMachine):
    """The model is the drivers' truth (where each guest runs, pinned where) plus the
    migrations in flight; the cache must always equal :meth:`expected` of it."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-claims-"))
        path = self.dir / "f.db"
        shutil.copy(_template_db(), path)
        self.url = f"sqlite:///{path}"
        self.db = Database(self.url)
        self.clock = 1000.0
        self.repo = self._repo()
        self.guests: dict[str, Guest] = {}
        self.moves: dict[str, Move] = {}
        self.snapshots: list[tuple[float, list[Host]]] = []
        self.last: Callable[[ClaimRepository], None] | None = None
        self.serial = 0

    def _now(self) -> float:
        self.clock += 1.0
        return self.clock

    def _repo(self) -> ClaimRepository:
        return ClaimRepository(self.db, now=self._now)

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------------------ model
    def truth(self, host: str) -> View:
        view = View()
        for g in self.guests.values():
            if g.host == host:
                view.add(g.res, g.pinning, +1)
        return view

    def report(self, host: str) -> Host:
        view = self.truth(host)
        state = HostNumaState(
            TOPOLOGY, {c: frozenset(s) for c, s in view.pinned.items()}, dict(view.cell_mb)
        )
        v, m, d = view.used
        return Host(
            name=host,
            driver="t",
            hypervisor_type="qemu",
            hypervisor_version=1,
            vcpus=CAPACITY[0],
            memory_mb=CAPACITY[1],
            disk_gb=CAPACITY[2],
            vcpus_used=v,
            memory_mb_used=m,
            disk_gb_used=d,
            numa=state,
        )

    def expected(self, host: str) -> View:
        """The placed guests, with the switchover window: a moved guest still counts on its
        source until the source is released, and on its destination only as a claim until
        the migration completes."""
        view = self.truth(host)
        for mv in self.moves.values():
            g = self.guests[mv.guest]
            if mv.phase == "switched" and mv.source == host:
                view.add(g.res, mv.source_pinning, +1)
            if mv.phase != "claimed" and mv.destination == host:
                view.add(g.res, mv.pinning, -1)
            if mv.destination == host:
                view.claimed = _add(view.claimed, g.res)
                if mv.pinning is not None:
                    view.claimed_pcpus[mv.pinning.cell] |= mv.pinning.pcpus
                    view.claimed_mb[mv.pinning.cell] += mv.pinning.memory_mb
        return view

    # ------------------------------------------------------------------------------ rules
    @initialize(
        placed=st.lists(
            st.tuples(st.sampled_from(HOSTS), sizes, st.booleans()), min_size=3, max_size=12
        )
    )
    def place_and_refresh(self, placed: list[tuple[str, Res, bool]]) -> None:
        for host, res, pinned in placed:
            view = self.truth(host)
            if any(u + r > c for u, r, c in zip(view.used, res, CAPACITY, strict=True)):
                continue
            pinning = None
            if pinned:
                fitted = view.numa().fit(GuestRequest(res[0], res[1]))
                if isinstance(fitted, str):
                    continue
                pinning = fitted
            self.serial += 1
            uuid = f"g{self.serial}"
            self.guests[uuid] = Guest(uuid, res, pinned, host, pinning)
        self.repo.refresh_hosts([self.report(h) for h in HOSTS], reported_at=self._now())

    def _in(self, phase: str) -> list[str]:
        return sorted(m for m, mv in self.moves.items() if mv.phase == phase)

    @rule(data=st.data(), destination=st.sampled_from(HOSTS))
    def claim(self, data: st.DataObject, destination: str) -> None:
        idle = sorted(
            u
            for u, g in self.guests.items()
            if g.host != destination and all(m.guest != u for m in self.moves.values())
        )
        if not idle:
            return
        guest = self.guests[data.draw(st.sampled_from(idle))]
        self.serial += 1
        mid = f"m{self.serial}"
        view = self.expected(destination)
        fits = all(
            u + c + r <= cap
            for u, c, r, cap in zip(view.used, view.claimed, guest.res, CAPACITY, strict=True)
        )
        want: Pinning | str | None = None
        if guest.pinned:
            want = view.numa().fit(GuestRequest(guest.res[0], guest.res[1]))
        inst = guest.instance()
        source = guest.host
        result = self.repo.claim_resources(mid, destination, inst, source=source)
        if isinstance(want, str) or not fits:
            assert not result.ok
            if isinstance(want, str):
                assert (result.reason or "").startswith("no NUMA cell fits")
            return
        assert result.ok, result.reason
        assert result.pinning == want  # best fit on free pCPUs of one cell
        self.moves[mid] = Move(guest.uuid, source, destination, want, guest.pinning)

        def again(repo: ClaimRepository) -> None:  # the claim task re-run after a crash
            assert repo.claim_resources(mid, destination, inst, source=source) == result

        self.last = again

    @precondition(lambda self: bool(self._in("claimed")))
    @rule(data=st.data())
    def revert(self, data: st.DataObject) -> None:
        """A failure before the switchover: the claim and the source hold go, nothing moved."""
        mid = data.draw(st.sampled_from(self._in("claimed")))
        assert self.repo.release(mid) == 2
        del self.moves[mid]
        self.last = lambda repo: self._expect(repo.release(mid), 0)

    @precondition(lambda self: bool(self.moves))
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """One migration's next step after its claim: the switchover (the driver moves the guest
        with the claimed pinning; the cache is not told), the release on the source (after
        post-migration there), or completion (the destination's claim becomes usage)."""
        mid = data.draw(st.sampled_from(sorted(self.moves)))
        mv = self.moves[mid]
        if mv.phase == "claimed":
            g = self.guests[mv.guest]
            g.host, g.pinning = mv.destination, mv.pinning
            mv.phase = "switched"
        elif mv.phase == "switched":
            assert self.repo.release_source(mid) == mv.source
            mv.phase = "source released"
            self.last = lambda repo: self._expect(repo.release_source(mid), None)
        else:
            assert self.repo.complete(mid) == mv.destination
            del self.moves[mid]
            self.last = lambda repo: self._expect(repo.complete(mid), None)

    @rule()
    def refresh(self) -> None:
        """Every driver reports now."""
        self.repo.refresh_hosts([self.report(h) for h in HOSTS], reported_at=self._now())

    @rule()
    def snapshot(self) -> None:
        """A refresh reads the drivers now but will write later (a slow process)."""
        self.snapshots.append((self._now(), [self.report(h) for h in HOSTS]))

    @precondition(lambda self: bool(self.snapshots))
    @rule(data=st.data())
    def stale_refresh(self, data: st.DataObject) -> None:
        at, reports = self.snapshots.pop(data.draw(st.integers(0, len(self.snapshots) - 1)))
        self.repo.refresh_hosts(reports, reported_at=at)

    @precondition(lambda self: self.last is not None)
    @rule(new_engine=st.booleans())
    def crash_and_resume(self, new_engine: bool) -> None:
        """A new process (new repository, optionally a new engine) re-runs the last step: it
        finds its own earlier work and changes nothing."""
        assert self.last is not None
        if new_engine:
            self.db.close()
            self.db = Database(self.url)
        self.repo = self._repo()
        self.last(self.repo)

    @staticmethod
    def _expect(got: Any, want: Any) -> None:
        assert got == want

    # -------------------------------------------------------------------------- invariants
    @invariant()
    def cache_is_the_placed_instances(self) -> None:
        states = {s.host.name: s for s in self.repo.host_states()}
        for h in HOSTS:
            want, got = self.expected(h), states[h]
            host = got.host
            assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == want.used, h
            assert got.claimed == want.claimed, h
            for cell in got.cells:
                assert cell.pinned == want.pinned[cell.cell], (h, cell.cell)
                assert cell.used_mb == want.cell_mb[cell.cell], (h, cell.cell)
                assert cell.claimed == want.claimed_pcpus[cell.cell], (h, cell.cell)
                assert cell.claimed_mb == want.claimed_mb[cell.cell], (h, cell.cell)

    @invariant()
    def nothing_overcommitted_and_no_pcpu_taken_twice(self) -> None:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(PC.c.host, PC.c.pcpu, PC.c.migration_id)).all()
        assert len({(h, p) for h, p, _ in rows}) == len(rows)
        assert {m for _h, _p, m in rows} <= set(self.moves)
        for s in self.repo.host_states():
            h = s.host
            total = _add((h.vcpus_used, h.memory_mb_used, h.disk_gb_used), s.claimed)
            assert all(t <= c for t, c in zip(total, CAPACITY, strict=True)), (h.name, total)
            for cell in s.cells:
                assert not cell.pinned & cell.claimed
                assert (cell.pinned | cell.claimed) <= set(cell.cpus)
                assert cell.free_mb >= 0
        for h in HOSTS:  # the drivers' truth: no two guests on one pCPU (seed 004)
            seen: set[int] = set()
            for g in self.guests.values():
                if g.host == h and g.pinning is not None:
                    assert not g.pinning.pcpus & seen
                    seen |= g.pinning.pcpus


ClaimMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestClaimProperties = ClaimMachine.TestCase
