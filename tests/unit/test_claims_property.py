"""Property test (hypothesis, stateful) of the existing ClaimRepository: no sequence of claim /
release / complete / driver refresh / crash-and-resume leaves a host's ``claimed_*`` different from
the sum of its live claim rows, negative, or over capacity, and usage always equals the sum of
placed instances."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import cast

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ferry.model import Host, Instance
from ferry.persistence.db import Database
from ferry.persistence.models import HostStateRow
from ferry.persistence.repository import ClaimRepository

HS = cast(sa.Table, HostStateRow.__table__)

HOSTS = ("h1", "h2")
CAPACITY = (8, 8192, 100)  # vcpus, memory_mb, disk_gb
MIGRATIONS = tuple(f"m{i}" for i in range(6))
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


def _host(name: str, used: Res) -> Host:
    return Host(
        name=name,
        driver="t",
        hypervisor_type="qemu",
        hypervisor_version=1,
        vcpus=CAPACITY[0],
        memory_mb=CAPACITY[1],
        disk_gb=CAPACITY[2],
        vcpus_used=used[0],
        memory_mb_used=used[1],
        disk_gb_used=used[2],
    )


def _add(a: Res, b: Res, sign: int = 1) -> Res:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2])


instances = st.builds(
    lambda v, m, d: Instance("u", "vm", "src", vcpus=v, memory_mb=m, disk_gb=d),
    st.integers(1, 4),
    st.sampled_from([256, 1024, 2048, 4096]),
    st.integers(1, 40),
)


class ClaimMachine(RuleBasedStateMachine):
    """The model: live claims (migration, host) -> resources; usage per host = placed sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-claims-"))
        path = self.dir / "f.db"
        shutil.copy(_template_db(), path)
        self.url = f"sqlite:///{path}"
        self.db = Database(self.url)
        self.repo = ClaimRepository(self.db)
        self.live: dict[tuple[str, str], Res] = {}
        self.used: dict[str, Res] = {h: (0, 0, 0) for h in HOSTS}
        self.last_claim: tuple[str, str, Instance] | None = None

    @initialize(base=st.tuples(st.integers(0, 2), st.integers(0, 2048), st.integers(0, 20)))
    def refresh(self, base: Res) -> None:
        self.used = {h: base for h in HOSTS}
        self.repo.refresh_hosts([_host(h, base) for h in HOSTS])

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----------------------------------------------------------------------------- helpers
    def _claimed(self, host: str) -> Res:
        total: Res = (0, 0, 0)
        for (_mid, h), need in self.live.items():
            if h == host:
                total = _add(total, need)
        return total

    def _expect_claim(self, mid: str, host: str, inst: Instance) -> bool:
        if (mid, host) in self.live:
            return True
        need: Res = (inst.vcpus, inst.memory_mb, inst.disk_gb)
        after = _add(_add(self.used[host], self._claimed(host)), need)
        return all(a <= c for a, c in zip(after, CAPACITY, strict=True))

    def _claim(self, repo: ClaimRepository, mid: str, host: str, inst: Instance) -> None:
        expected = self._expect_claim(mid, host, inst)
        assert repo.claim(mid, host, inst) is expected
        if expected:
            self.live.setdefault((mid, host), (inst.vcpus, inst.memory_mb, inst.disk_gb))

    # ------------------------------------------------------------------------------- rules
    @rule(mid=st.sampled_from(MIGRATIONS), host=st.sampled_from(HOSTS), inst=instances)
    def claim(self, mid: str, host: str, inst: Instance) -> None:
        self._claim(self.repo, mid, host, inst)
        self.last_claim = (mid, host, inst)

    @rule(mid=st.sampled_from(MIGRATIONS), only=st.sampled_from((None, *HOSTS)))
    def release(self, mid: str, only: str | None) -> None:
        """Revert: give the claim back (on one host or all). Idempotent."""
        keys = [k for k in self.live if k[0] == mid and (only is None or k[1] == only)]
        assert self.repo.release(mid, only) == len(keys)
        for k in keys:
            del self.live[k]

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        """Completion: release the claim, then the driver's next refresh counts the instance."""
        mid, host = data.draw(st.sampled_from(sorted(self.live)))
        need = self.live.pop((mid, host))
        assert self.repo.release(mid, host) == 1
        self.used[host] = _add(self.used[host], need)
        self.repo.refresh_hosts([_host(h, self.used[h]) for h in HOSTS])

    @precondition(lambda self: any(u != (0, 0, 0) for u in self.used.values()))
    @rule(data=st.data())
    def instance_leaves(self, data: st.DataObject) -> None:
        """A placed instance goes away (post at source / deletion): the driver reports less."""
        host = data.draw(st.sampled_from([h for h in HOSTS if self.used[h] != (0, 0, 0)]))
        v, m, d = self.used[host]
        less = (
            data.draw(st.integers(0, v)),
            data.draw(st.integers(0, m)),
            data.draw(st.integers(0, d)),
        )
        self.used[host] = _add(self.used[host], less, -1)
        self.repo.refresh_hosts([_host(h, self.used[h]) for h in HOSTS])

    @rule()
    def periodic_refresh(self) -> None:
        """A driver refresh with unchanged usage keeps every claim."""
        self.repo.refresh_hosts([_host(h, self.used[h]) for h in HOSTS])

    @precondition(lambda self: self.last_claim is not None)
    @rule(new_engine=st.booleans())
    def crash_and_resume(self, new_engine: bool) -> None:
        """A new process (new repository, optionally a new engine) re-runs the last claim."""
        assert self.last_claim is not None
        mid, host, inst = self.last_claim
        was_live = (mid, host) in self.live
        rows_before = len(self.repo.list())
        if new_engine:
            self.db.close()
            self.db = Database(self.url)
        repo = ClaimRepository(self.db)
        self._claim(repo, mid, host, inst)
        if was_live:  # idempotent: no second row, no second hold
            assert len(repo.list()) == rows_before
        self.repo = repo

    # -------------------------------------------------------------------------- invariants
    @invariant()
    def claimed_columns_match_live_rows_and_capacity(self) -> None:
        rows = self.repo.list()
        assert {(r["migration_id"], r["host"]) for r in rows} == set(self.live)
        per_host: dict[str, Res] = {h: (0, 0, 0) for h in HOSTS}
        for r in rows:
            per_host[r["host"]] = _add(
                per_host[r["host"]], (r["vcpus"], r["memory_mb"], r["disk_gb"])
            )
        claimed = self.repo.claimed()
        with self.db.connect() as conn:
            used = {
                r[0]: (r[1], r[2], r[3])
                for r in conn.execute(
                    sa.select(HS.c.name, HS.c.vcpus_used, HS.c.memory_mb_used, HS.c.disk_gb_used)
                )
            }
        for h in HOSTS:
            assert claimed[h] == per_host[h] == self._claimed(h)
            assert all(x >= 0 for x in claimed[h])
            assert used[h] == self.used[h]  # usage = sum of placed instances
            total = _add(used[h], claimed[h])
            assert all(t <= c for t, c in zip(total, CAPACITY, strict=True)), (h, total)


ClaimMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClaimProperties = ClaimMachine.TestCase
