import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from ferry.errors import ConfigError, MigrationInProgress
from ferry.model import Host, Instance, MigrationStatus
from ferry.persistence.db import Database, safe_url
from ferry.persistence.repository import LeaseRepository, MigrationRepository
from ferry.scheduler.repository import ClaimRepository
from tests.concurrency import assert_twenty_claims_for_room_of_ten


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'f.db'}")
    d.upgrade()
    return d


def test_schema_created_once_and_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Database(url).upgrade()
    Database(url).upgrade()
    names = set(sa.inspect(Database(url).engine).get_table_names())
    assert {
        "ferry_migrations",
        "ferry_claims",
        "ferry_leases",
        "logbooks",
        "atomdetails",
        "ferry_alembic_version",
    } <= names


def test_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Database("not a url")
    with pytest.raises(ConfigError) as info:
        Database("postgresql+nosuchdriver://u:secret@localhost/db")
    assert "secret" not in str(info.value)
    assert "***" in safe_url("postgresql://u:secret@h/db")


def test_instance_lock_refuses_second_migration(db: Database) -> None:
    repo = MigrationRepository(db)
    inst = Instance("u1", "web-1", "a")
    repo.create("m1", inst, {"instance": "web-1"})
    with pytest.raises(MigrationInProgress, match="m1"):
        repo.create("m2", inst, {"instance": "web-1"})
    assert not repo.exists("m2")
    repo.release_lock("u1", "m1")
    repo.create("m2", inst, {"instance": "web-1"})


def test_status_history_is_timestamped_and_deduplicated(db: Database) -> None:
    clock = iter(range(100, 200))
    repo = MigrationRepository(db, now=lambda: float(next(clock)))
    seen: list[str] = []
    repo.on_status(lambda mid, st, d: seen.append(st))
    repo.create("m1", Instance("u1", "web-1", "a"), {"instance": "web-1"})
    repo.set_status("m1", MigrationStatus.PREPARING)
    repo.set_status("m1", MigrationStatus.PREPARING)
    repo.set_status("m1", MigrationStatus.FAILED, detail="boom", error="boom")
    m = repo.get("m1")
    assert [h.status for h in m.history] == ["accepted", "preparing", "failed"]
    assert [h.at for h in m.history] == sorted(h.at for h in m.history)
    assert m.error == "boom"
    assert seen == ["accepted", "preparing", "failed"]


def test_attempts_upsert(db: Database) -> None:
    repo = MigrationRepository(db)
    repo.create("m1", Instance("u1", "web-1", "a"), {"instance": "web-1"})
    repo.record_attempt("m1", "b", "chosen")
    repo.record_attempt("m1", "b", "rejected", "no room")
    repo.record_attempt("m1", "c", "chosen")
    assert repo.rejected_hosts("m1") == {"b": "no room"}
    assert [(a.host, a.outcome) for a in repo.get("m1").attempts] == [
        ("b", "rejected"),
        ("c", "chosen"),
    ]


def _host(name: str, memory_mb: int = 10_240) -> Host:
    return Host(
        name=name,
        driver="t",
        hypervisor_type="qemu",
        hypervisor_version=1,
        vcpus=64,
        memory_mb=memory_mb,
        disk_gb=1000,
    )


def test_concurrent_claims_never_overcommit(db: Database) -> None:
    assert_twenty_claims_for_room_of_ten(db)


def test_claim_is_idempotent_and_release_exact(db: Database) -> None:
    claims = ClaimRepository(db)
    claims.refresh_hosts([_host("h")])
    inst = Instance("u", "vm", "src", memory_mb=2048, vcpus=2, disk_gb=5)
    assert claims.claim("m1", "h", inst)
    assert claims.claim("m1", "h", inst)  # re-run after a crash: same claim, not a second one
    assert claims.claimed()["h"] == (2, 2048, 5)
    claims.refresh_hosts([_host("h")])  # a refresh keeps what is claimed
    assert claims.claimed()["h"] == (2, 2048, 5)
    assert claims.release("m1") == 1
    assert claims.release("m1") == 0
    assert claims.claimed()["h"] == (0, 0, 0)


def test_lease_refuses_second_runner_until_expiry(db: Database) -> None:
    now = [1000.0]
    leases = LeaseRepository(db, now=lambda: now[0])
    assert leases.acquire("m1", "runner-a", ttl=30)
    assert not leases.acquire("m1", "runner-b", ttl=30)
    assert leases.acquire("m1", "runner-a", ttl=30)  # re-entrant for its owner
    now[0] += 20
    assert leases.renew("m1", "runner-a", ttl=30)
    now[0] += 29
    assert not leases.acquire("m1", "runner-b", ttl=30)
    now[0] += 2  # runner-a stopped renewing: expired
    assert leases.acquire("m1", "runner-b", ttl=30)
    assert not leases.renew("m1", "runner-a", ttl=30)
    leases.release("m1", "runner-a")  # not the owner: no effect
    assert leases.get("m1")["owner"] == "runner-b"
    leases.release("m1", "runner-b")
    assert leases.get("m1") is None


def test_ferry_backend_writes_what_the_stock_backend_reads(db: Database) -> None:
    """ferry's TaskFlow backend (one-statement atom insert; on SQLite a plain UPDATE per atom
    write) stores exactly what TaskFlow's stock backend reads back: JSON columns, state,
    intention, failure."""
    import contextlib

    from taskflow.persistence import models
    from taskflow.persistence.backends import impl_sqlalchemy
    from taskflow.types import failure

    from ferry.persistence.taskflow_backend import FerryBackend

    backend = FerryBackend(db)
    book = models.LogBook("book", uuid="b-1")
    fd = models.FlowDetail("flow", uuid="f-1")
    book.add(fd)
    task, retry = models.TaskDetail("t", "t-1"), models.RetryDetail("r", "r-1")
    with contextlib.closing(backend.get_connection()) as conn:
        conn.save_logbook(book)
        fd.add(task)
        fd.add(retry)
        conn.update_flow_details(fd)  # both atoms in one insert
        task.state, task.intention = "SUCCESS", "EXECUTE"
        task.results = {"host": "lv-b", "numbers": [1, 2.5], "none": None}
        task.meta = {"progress": 0.5, "nested": {"ok": True}}
        conn.update_atom_details(task)
        try:
            raise ValueError("no room")
        except ValueError:
            retry.failure = failure.Failure()
        retry.state = "FAILURE"
        conn.update_atom_details(retry)
    stock = impl_sqlalchemy.SQLAlchemyBackend({"connection": db.url})
    with contextlib.closing(stock.get_connection()) as conn:
        read = {ad.name: ad for ad in conn.get_atoms_for_flow("f-1")}
    assert set(read) == {"t", "r"}
    t, r = read["t"], read["r"]
    assert isinstance(t, models.TaskDetail) and isinstance(r, models.RetryDetail)
    assert (t.state, t.intention) == ("SUCCESS", "EXECUTE")
    assert t.results == {"host": "lv-b", "numbers": [1, 2.5], "none": None}
    assert t.meta["progress"] == 0.5 and t.meta["nested"] == {"ok": True}
    assert r.state == "FAILURE" and r.failure is not None
    assert r.failure.exception_str == "no room" and r.failure.check(ValueError)


def test_transfer_start_is_a_column_of_the_record(db: Database) -> None:
    clock = iter(range(100, 200))
    repo = MigrationRepository(db, now=lambda: float(next(clock)))
    repo.create("m1", Instance("u1", "web-1", "a"), {"instance": "web-1"})
    assert repo.transfer_started_at("m1") is None and repo.get("m1").transfer_started_at is None
    repo.mark_transfer_started("m1", {"phase": "transfer", "percent": 0.0})
    m = repo.get("m1")
    assert m.status == "running" and m.progress == {"phase": "transfer", "percent": 0.0}
    assert m.transfer_started_at is not None and m.transfer_started_at == repo.transfer_started_at(
        "m1"
    )
    repo.report_progress("m1", {"phase": "transfer", "percent": 50.0})
    assert repo.transfer_started_at("m1") == m.transfer_started_at  # progress reports keep it


def test_revision_0006_moves_the_progress_key_into_the_column_and_back(db: Database) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ferry.persistence.models import METADATA
    from ferry.persistence.schema import alembic_config

    repo = MigrationRepository(db, now=lambda: 500.0)
    repo.create("started", Instance("u1", "web-1", "a"), {"instance": "web-1"})
    repo.create("waiting", Instance("u2", "web-2", "a"), {"instance": "web-2"})
    repo.mark_transfer_started("started", {"phase": "transfer", "percent": 40.0})
    repo.update("waiting", progress={"phase": "checks"})

    command.downgrade(alembic_config(db), "0005_numa_claims")
    cols = {c["name"] for c in sa.inspect(db.engine).get_columns("ferry_migrations")}
    assert "transfer_started_at" not in cols
    with db.engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, progress FROM ferry_migrations")).all())
    assert json.loads(rows["started"]) == {
        "phase": "transfer",
        "percent": 40.0,
        "transfer_started": True,
    }
    assert json.loads(rows["waiting"]) == {"phase": "checks"}

    command.upgrade(alembic_config(db), "heads")
    started, waiting = repo.get("started"), repo.get("waiting")
    assert started.transfer_started_at == 500.0
    assert started.progress == {"phase": "transfer", "percent": 40.0}
    assert waiting.transfer_started_at is None and waiting.progress == {"phase": "checks"}
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), METADATA)
    assert [d for d in diffs if "ferry_migrations" in repr(d)] == []


# ------------------------------------------------------------- the one-query schema check
def test_the_heads_named_for_the_check_are_the_scripts_heads() -> None:
    """The heads :func:`schema.is_current` compares with are Alembic's for ferry's scripts and
    TaskFlow's (a new revision must update them, else every start would upgrade)."""
    import os

    import taskflow.persistence.backends.sqlalchemy as tf_sqlalchemy
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ferry.persistence import schema

    assert schema.head_revisions() == schema.ferry_heads()
    cfg = Config()
    cfg.set_main_option(
        "script_location", os.path.join(os.path.dirname(tf_sqlalchemy.__file__), "alembic")
    )
    assert frozenset(ScriptDirectory.from_config(cfg).get_heads()) == schema.TASKFLOW_HEADS


def test_is_current_sees_an_old_version_and_a_missing_table_or_index(db: Database) -> None:
    from ferry.persistence import schema

    assert schema.is_current(db.engine)
    (head,) = schema.ferry_heads()
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ferry_alembic_version SET version_num = '0005_numa_claims'"))
    assert not schema.is_current(db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ferry_alembic_version SET version_num = :v"), {"v": head})
    assert schema.is_current(db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_ferry_atomdetails_parent"))
    assert not schema.is_current(db.engine)
    Database(db.url).upgrade()  # the upgrade runs, and makes the index again
    assert schema.is_current(db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE ferry_alembic_version"))
    assert not schema.is_current(db.engine)


def test_an_up_to_date_database_opens_without_alembic(db: Database) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom ferry.persistence.db import Database\n"
        f"Database({db.url!r}).upgrade()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
