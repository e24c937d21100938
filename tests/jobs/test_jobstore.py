"""The job store on a real Redis server and a real PostgreSQL server, conductors in this process:
post -> run -> consumed; failed runs consumed once; limits; abort of queued and running jobs;
`ferry jobs`."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ferry import Orchestrator
from ferry.cli import cli
from ferry.jobs.limits import SlotRepository
from tests.concurrency import race
from tests.jobs.helpers import (
    assert_store_clean,
    board_jobs,
    conductors,
    in_process_conductors,
    job_rows,
    sim_of,
    slot_state,
    transfers_of,
    wait_for,
    write_cluster,
    write_config,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


MakeOrch = Callable[..., Orchestrator]


@pytest.fixture
def make_orch(tmp_path: Path, pg_url: str, redis_server: str, namespace: str) -> Iterator[MakeOrch]:
    """Orchestrators on one PostgreSQL database and one board namespace; ``config`` takes the
    keywords of :func:`write_config` (each call rewrites the config file: pass the same ones)."""
    made: list[Orchestrator] = []

    def make(**config: Any) -> Orchestrator:
        cfg = write_config(
            tmp_path / "ferry.toml",
            db_url=pg_url,
            board_url=redis_server,
            namespace=namespace,
            **config,
        )
        orch = Orchestrator(config=cfg)
        made.append(orch)
        return orch

    yield make
    for o in made:
        o.close()


def test_post_run_completed_and_listed(make_orch: MakeOrch, tmp_path: Path) -> None:
    orch = make_orch()
    mid = orch.submit("web-1")
    assert orch.get(mid).status == "queued"
    [job] = board_jobs(orch)
    assert job.details["migration_id"] == mid
    assert job.details["flow_factory"] == "ferry.flows.live_migration.get_live_migration_flow"
    store = job.details["store"]
    assert store["migration_id"] == mid and store["request"]["instance"] == "web-1"
    json.dumps(job.details)  # plain JSON
    with in_process_conductors([make_orch()]):
        wait_for(lambda: orch.get(mid).done, 60, "the migration to finish")
    record = orch.get(mid)
    assert (record.status, record.destination) == ("completed", "compute-3")
    assert [h.status for h in record.history][:2] == ["queued", "preparing"]
    assert_store_clean(orch, [mid])
    assert job_rows(orch)[mid]["dispatches"] == 1
    out = CliRunner().invoke(cli, ["--config", str(tmp_path / "ferry.toml"), "jobs", "--json"])
    assert out.exit_code == 0, out.output
    listing = json.loads(out.output)
    assert listing["jobs"] == []
    [done] = listing["done"]
    assert (done["migration_id"], done["state"], done["status"]) == (mid, "done", "completed")
    assert done["owner"].endswith(":local-0")


def test_failed_migration_consumed_once_never_retried(make_orch: MakeOrch) -> None:
    orch = make_orch()
    sim = sim_of(orch)
    sim.ensure_seeded()
    for host in ("compute-2", "compute-3"):
        sim.inject_fault(host, "check_destination", message="no room")
    mid = orch.submit("web-1")
    with in_process_conductors([make_orch(), make_orch()]) as running:
        wait_for(lambda: orch.get(mid).done, 60, "the migration to fail")
        wait_for(lambda: job_rows(orch)[mid]["consumed_at"], 30, "the job to be consumed")
        # the conductors keep scanning; the reverted job is not on the board to run again
        scans = [c._tf for c in running]
        assert all(s.dispatching for s in scans)
    assert orch.get(mid).status == "failed"
    assert "no valid host" in (orch.get(mid).error or "")
    assert job_rows(orch)[mid]["dispatches"] == 1
    assert orch.runner.flow_state(mid) == "REVERTED"
    assert_store_clean(orch, [mid])


def test_slots_taken_atomically_under_contention(make_orch: MakeOrch) -> None:
    orch = make_orch(per_source=3, per_destination=0, total=5)
    slots = SlotRepository(orch.db, orch.settings.limits)
    results = race(12, lambda i: slots.acquire(f"m{i}", slots.needed("src", f"dst{i % 2}")) is None)
    assert results.count(True) == 3
    counters, held = slot_state(orch)
    assert counters["source:src"] == 3 and counters["total"] == 3
    assert len({m for m, _ in held}) == 3
    # idempotent for the holder, and all or nothing: the total slots are not taken by losers
    winner = next(m for m, _ in held)
    assert slots.acquire(winner, slots.needed("src", "dst0")) is None
    assert slot_state(orch)[0]["total"] == 3
    blocked = slots.acquire("other", slots.needed("src", "dst0"))
    assert blocked is not None and blocked.key == "source:src" and blocked.limit == 3
    assert str(blocked) == "waiting for a slot: 3 of 3 migrations out of src"
    assert slot_state(orch)[0]["total"] == 3
    for m in {m for m, _ in held}:
        slots.release(m)
        slots.release(m)
    counters, held = slot_state(orch)
    assert held == [] and set(counters.values()) == {0}


def active_segments(orch: Orchestrator, mid: str) -> list[tuple[float, float]]:
    """When the record was being worked on (preparing / running / post-migrating), as
    [start, end) wall-clock segments from its status history."""
    active = {"preparing", "running", "post-migrating"}
    segments, start = [], None
    for h in orch.migrations.get(mid).history:
        if h.status in active and start is None:
            start = h.at
        elif h.status not in active and start is not None:
            segments.append((start, h.at))
            start = None
    assert start is None
    return segments


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        best = max(best, now)
    return best


def test_limits_per_source_per_destination_and_total(make_orch: MakeOrch, tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    # four sources with two VMs each, two empty hosts the scheduler prefers as destinations;
    # a transfer takes ~0.5 s (512 MiB at 1024 MiB/s, speed 1)
    vms = write_cluster(
        cluster, hosts=6, vms_per_host={1: 2, 2: 2, 3: 2, 4: 2}, memory_mb=512, bandwidth_mbps=1024
    )
    limits = {"per_source": 1, "per_destination": 2, "total": 3}
    orch = make_orch(cluster=cluster, speed=1.0, **limits)
    mids = [orch.submit(vm) for vm in vms]
    peaks: dict[str, int] = {}
    seen_waiting = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for key, used in slot_state(orch)[0].items():
                peaks[key] = max(peaks.get(key, 0), used)
            statuses = [m.status for m in orch.list()]
            if statuses.count("queued") and sum(s in ("preparing", "running") for s in statuses):
                seen_waiting.append(True)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with in_process_conductors([make_orch(cluster=cluster, speed=1.0, **limits)] * 2):
            wait_for(lambda: all(orch.get(m).done for m in mids), 120, "every migration")
    finally:
        stop.set()
        sampler.join()
    assert {orch.get(m).status for m in mids} == {"completed"}
    assert seen_waiting, "no migration ever waited queued while others ran"
    # the counters never went past the limits, and the limits were reached
    assert peaks["total"] == 3
    assert max(v for k, v in peaks.items() if k.startswith("source:")) == 1
    assert max(v for k, v in peaks.items() if k.startswith("destination:")) <= 2
    # what really ran at once, from the records and the hypervisor's transfers
    segments = {m: active_segments(orch, m) for m in mids}
    assert max_overlap([s for m in mids for s in segments[m]]) <= 3
    for source in {orch.get(m).source for m in mids}:
        mine = [s for m in mids if orch.get(m).source == source for s in segments[m]]
        assert max_overlap(mine) == 1, source
    transfers = transfers_of(orch)
    assert len(transfers) == len(mids)
    for dest in {t["destination"] for t in transfers}:
        spans = [(t["started_at"], t["ended_at"]) for t in transfers if t["destination"] == dest]
        assert max_overlap(spans) <= 2, dest
    assert_store_clean(orch, mids)


def test_abort_a_queued_and_a_running_job_from_another_process(
    make_orch: MakeOrch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cluster = tmp_path / "cluster.toml"
    # two VMs on h1: with one migration per source the second waits queued; ~32 s transfers
    # (the first is aborted mid-way, after the other process's commands have run)
    first, second = write_cluster(
        cluster, hosts=3, vms_per_host={1: 2}, memory_mb=16384, bandwidth_mbps=512
    )
    orch = make_orch(cluster=cluster, speed=1.0, per_source=1)
    running_id = orch.submit(first)
    queued_id = orch.submit(second)

    def ferry(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ferry", "--config", str(tmp_path / "ferry.toml"), *args]
        env = {**os.environ, "COLUMNS": "200"}  # the table's rows on one line each
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)

    with in_process_conductors([make_orch(cluster=cluster, speed=1.0, per_source=1)]):
        wait_for(
            lambda: (orch.get(running_id).progress or {}).get("percent", 0) > 5,
            60,
            "the first transfer to be under way",
        )
        assert orch.get(queued_id).status == "queued"
        listing = json.loads(ferry("jobs", "--json").stdout)
        waiting = {j["migration_id"]: j for j in listing["jobs"]}[queued_id]
        assert waiting["state"] == "posted"
        assert waiting["waiting_for"] == "waiting for a slot: 1 of 1 migrations out of h1"
        claimed = {j["migration_id"]: j for j in listing["jobs"]}[running_id]
        assert claimed["state"] == "claimed"
        assert claimed["owner"] == (orch.leases.get(running_id) or {}).get("owner")
        assert 0 < claimed["claim_expires_in"] <= orch.settings.conductor.lease_seconds
        table = ferry("jobs").stdout  # the same, as the table a person reads
        rows = {m: next(r for r in table.splitlines() if m in r) for m in (queued_id, running_id)}
        assert "posted" in rows[queued_id] and "waiting for a slot" in rows[queued_id]
        assert "claimed" in rows[running_id] and claimed["owner"] in rows[running_id]
        assert "slots in use: " in table and "source:h1 1" in table
        done = ferry("abort", queued_id)
        assert done.returncode == 0, done.stderr
        # reverted by the aborting process, or (when a conductor picked the aborted job up
        # first) by that conductor: either way at once, not after the running one
        wait_for(lambda: orch.get(queued_id).done, 30, "the queued migration to be cancelled")
        assert orch.get(queued_id).status == "cancelled"
        wait_for(
            lambda: [j.details["migration_id"] for j in board_jobs(orch)] == [running_id],
            30,
            "the cancelled job to leave the board",
        )
        assert job_rows(orch)[queued_id]["consumed_at"] is not None
        assert orch.get(running_id).status == "running"

        asked = ferry("abort", running_id)
        assert asked.returncode == 0, asked.stderr
        assert "abort requested" in asked.stdout
        wait_for(lambda: orch.get(running_id).done, 60, "the running migration to stop")
        wait_for(lambda: not board_jobs(orch), 30, "the board to empty")
    assert orch.get(running_id).status == "cancelled"
    sim = sim_of(orch)
    for vm in (first, second):
        assert sim.find_instance(vm).host == "h1"  # type: ignore[union-attr]
    [transfer] = transfers_of(orch)
    assert transfer["state"] == "cancelled"
    assert_store_clean(orch, [running_id, queued_id])


def test_a_job_lost_by_the_board_is_listed_missing(make_orch: MakeOrch, redis_server: str) -> None:
    import redis as redis_py

    orch = make_orch()
    mid = orch.submit("web-1")
    client = redis_py.Redis.from_url(redis_server)
    try:
        client.delete(f"{orch.settings.jobboard.namespace}:listings")  # the board lost its data
    finally:
        client.close()
    [row] = orch.jobstore.listing()["jobs"]
    assert (row["migration_id"], row["state"], row["status"]) == (mid, "missing", "queued")


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_cli_submit_then_a_conductor_process_with_max_jobs(
    make_orch: MakeOrch, tmp_path: Path, max_jobs: int
) -> None:
    """`ferry submit` prints the id (with --json: the id, the record's status, the job and the
    board) and returns with the migration queued and its job posted; a `ferry conductor
    --max-jobs K` process then runs them to completed, never more than K at once (the config
    says 4: the flag is what holds it to K), and with K = 2 two do overlap."""
    import subprocess
    import sys

    cluster = tmp_path / "cluster.toml"
    # three VMs on h1, ~2 s transfers (1 GiB at 512 MiB/s, speed 1), no limits
    vms = write_cluster(cluster, hosts=3, vms_per_host={1: 3}, memory_mb=1024, bandwidth_mbps=512)
    orch = make_orch(cluster=cluster, speed=1.0, max_jobs=4)
    config = tmp_path / "ferry.toml"

    def ferry(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ferry", "--config", str(config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    plain = ferry("submit", vms[0])
    assert plain.returncode == 0, plain.stderr
    [first] = plain.stdout.splitlines()  # the id, nothing else
    assert orch.get(first).status == "queued"  # returned at once: nothing runs it yet
    ids, printed = [first], {}
    for vm in vms[1:]:
        asked = ferry("submit", vm, "--json")
        assert asked.returncode == 0, asked.stderr
        out = json.loads(asked.stdout)
        assert out["status"] == orch.get(out["id"]).status == "queued", out
        assert out["board"] == orch.jobstore.safe_url, out
        ids.append(out["id"])
        printed[out["id"]] = out["job"]
    posted = {j.details["migration_id"]: j.uuid for j in board_jobs(orch)}
    assert sorted(posted) == sorted(ids)
    assert printed == {m: posted[m] for m in ids[1:]}  # --json names the job on the board

    with conductors(config, tmp_path) as group:
        group.start("c1", max_jobs=max_jobs)
        wait_for(lambda: all(orch.get(m).done for m in ids), 90, "the migrations to finish")
        wait_for(lambda: not board_jobs(orch), 30, "the board to empty")
        assert f"{max_jobs} job(s) at once from " in group.procs["c1"].text()
    assert [orch.get(m).status for m in ids] == ["completed"] * 3
    overlap = max_overlap([s for m in ids for s in active_segments(orch, m)])
    assert overlap == max_jobs
    assert_store_clean(orch, ids)


@pytest.mark.parametrize("per_destination", [1, 2])
def test_a_full_destination_sends_the_migration_back_to_the_queue(
    make_orch: MakeOrch, tmp_path: Path, per_destination: int
) -> None:
    """h2 is the only possible destination and takes M migrations at a time: the scheduler
    picks it for all M + 2 VMs of h1; the conductors see it full only after `schedule`, so a
    migration gives its slots back and waits `queued`, then resumes with the host it was given
    (`schedule` does not run again). Never more than M transfers into h2 at once (and M do
    overlap), all completed there; and whenever a conductor gives a migration's slots back its
    record already says `queued` (or is finished): the record never shows a migration being
    prepared or run while another may have taken its slot."""
    cluster = tmp_path / "cluster.toml"
    # ~2 s transfers (2 GiB at 1024 MiB/s, speed 1)
    vms = write_cluster(
        cluster, hosts=2, vms_per_host={1: per_destination + 2}, memory_mb=2048, bandwidth_mbps=1024
    )
    limits = {"per_destination": per_destination}
    orch = make_orch(cluster=cluster, speed=1.0, **limits)
    released: list[tuple[str, str]] = []  # (migration, its record's status) at each release
    with in_process_conductors([make_orch(cluster=cluster, speed=1.0, **limits)] * 2) as running:
        for conductor in running:  # before anything is posted: no release can be missed

            def spy(mid: str, keys: Any = None, release: Any = conductor.slots.release) -> int:
                released.append((mid, orch.get(mid).status))
                return int(release(mid, keys))

            conductor.slots.release = spy  # type: ignore[method-assign]
        mids = [orch.submit(vm) for vm in vms]
        wait_for(lambda: all(orch.get(m).done for m in mids), 120, "every migration")
    records = [orch.get(m) for m in mids]
    assert [(r.status, r.destination) for r in records] == [("completed", "h2")] * len(vms)
    # some went preparing -> queued (destination full) -> preparing again -> completed
    sent_back = []
    for r in records:
        statuses = [h.status for h in r.history]
        for a, b in zip(r.history, r.history[1:], strict=False):
            if (a.status, b.status) == ("preparing", "queued"):
                sent_back.append(r.id)
                assert b.detail == (
                    f"waiting for a slot: {per_destination} of {per_destination} migrations into h2"
                ), r.history
        assert statuses[-4:] == ["preparing", "running", "post-migrating", "completed"], statuses
        assert statuses.count("running") == 1, statuses
        # the host chosen once, kept across the wait
        assert [(a.host, a.outcome) for a in r.attempts if a.outcome == "chosen"] == [
            ("h2", "chosen")
        ], r.attempts
    assert len(set(sent_back)) >= 2, [[h.status for h in r.history] for r in records]
    # the slots were given back only by records already queued (sent back) or finished
    assert {status for _, status in released} <= {"queued", "completed"}, released
    assert {m for m, status in released if status == "queued"} == set(sent_back), released
    # what ran into h2 at once: the hypervisor's transfers and the records agree
    spans = [(t["started_at"], t["ended_at"]) for t in transfers_of(orch)]
    assert len(spans) == len(vms) and max_overlap(spans) == per_destination
    running_spans = []
    for r in records:
        start = next(h.at for h in r.history if h.status == "running")
        end = next(h.at for h in r.history if h.status == "completed")
        running_spans.append((start, end))
    assert max_overlap(running_spans) == per_destination
    assert_store_clean(orch, mids)
