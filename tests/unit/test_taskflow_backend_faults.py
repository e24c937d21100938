"""A write that fails is not lost: TaskFlow's storage retries it and the retry really writes,
ferry's backend and TaskFlow's stock backend alike (the stock one is the oracle).

Faults: the SQLite file locked by another connection past a short busy timeout, a DB-API
execute that fails once, a connection dropped mid-transaction. TaskFlow's storage sleeps 5 s
between tries: the tests take that sleep over to observe the database between two tries (and to
lift the lock)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from taskflow import exceptions as tf_exc, states, storage
from taskflow.persistence import models

from ferry.persistence import db as db_module
from ferry.persistence.db import Database
from ferry.persistence.taskflow_backend import FerryBackend
from tests.taskflow_oracle import Step, fenced, stock_backend

BUSY_MS = 50


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "tf.db"
    Database(f"sqlite:///{path}").upgrade()
    return path


class Kit:
    """One backend (``kind``), a run's storage on it, and a look at the stored atom."""

    def __init__(self, kind: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        url = f"sqlite:///{path}"
        self.path = path
        if kind == "stock":
            self.backend: Any = stock_backend(
                url, engine_args={"connect_args": {"timeout": BUSY_MS / 1000}}
            )
            self.engine: sa.Engine = self.backend.engine
        else:
            monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", BUSY_MS)
            self.db = Database(url)
            self.backend = FerryBackend(self.db)
            self.engine = self.db.engine
            if kind == "ferry-fenced":
                self.backend = fenced(self.backend, self.db)
        book = models.LogBook("book")
        self.flow = models.FlowDetail("flow", uuid=f"{kind}-flow")
        book.add(self.flow)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)
        self.storage = storage.Storage(self.flow, backend=self.backend)
        self.storage.ensure_atom(Step("copy"))
        # as TaskFlow's engine starts a task: RUNNING, then its progress 0.0
        self.storage.set_atom_state("copy", states.RUNNING)
        self.storage.set_task_progress("copy", 0.0)
        self.between_tries: list[tuple[str, ...]] = []
        self.on_retry: Callable[[], None] = lambda: None
        monkeypatch.setattr(storage.Storage._save_atom_detail.retry, "sleep", self._sleep)
        monkeypatch.setattr(storage.Storage._save_flow_detail.retry, "sleep", self._sleep)

    def _sleep(self, _seconds: float) -> None:
        self.between_tries.append(self.stored())
        self.on_retry()

    def stored(self) -> tuple[str, ...]:
        """The atoms' states in the file, read by an independent connection."""
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            rows = conn.execute(
                "SELECT name, state FROM atomdetails WHERE parent_uuid = ? ORDER BY name",
                (self.flow.uuid,),
            )
            return tuple(f"{name}={state}" for name, state in rows)


@pytest.fixture(params=["stock", "ferry", "ferry-fenced"])
def kit(request: pytest.FixtureRequest, db_file: Path, monkeypatch: pytest.MonkeyPatch) -> Kit:
    return Kit(request.param, db_file, monkeypatch)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding a write transaction on the file (until rolled back)."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield blocker
    finally:
        if blocker.in_transaction:
            blocker.rollback()
        blocker.close()


def test_a_state_write_refused_by_a_lock_is_written_by_the_retry(kit: Kit) -> None:
    with locked(kit.path) as blocker:
        kit.on_retry = blocker.rollback
        kit.storage.set_atom_state("copy", states.SUCCESS)
    assert kit.between_tries == [("copy=RUNNING",)]  # the first try failed, wrote nothing
    assert kit.stored() == ("copy=SUCCESS",)
    assert kit.storage.get_atom_state("copy") == states.SUCCESS


def test_a_state_write_locked_out_every_try_raises(kit: Kit) -> None:
    with locked(kit.path), pytest.raises(tf_exc.StorageFailure):
        kit.storage.set_atom_state("copy", states.SUCCESS)
    assert len(kit.between_tries) == storage.RETRY_ATTEMPTS - 1
    assert kit.stored() == ("copy=RUNNING",)
    assert kit.storage.get_atom_state("copy") == states.RUNNING


def test_a_progress_write_refused_by_a_lock_is_written_by_the_retry(kit: Kit) -> None:
    kit.storage.set_atom_state("copy", states.SUCCESS)
    with locked(kit.path) as blocker:
        kit.on_retry = blocker.rollback
        kit.storage.set_task_progress("copy", 1.0)
    assert len(kit.between_tries) == 1
    with contextlib.closing(stock_backend(f"sqlite:///{kit.path}").get_connection()) as conn:
        (ad,) = conn.get_atoms_for_flow(kit.flow.uuid)
    assert (ad.state, ad.meta["progress"]) == ("SUCCESS", 1.0)


def dropping(engine: sa.Engine) -> Callable[[], None]:
    """Arm a drop: the next commit on ``engine`` finds its DB-API connection closed (whatever
    the transaction executed is gone with it)."""
    armed = [False]

    @sa.event.listens_for(engine, "commit")
    def _drop(conn: sa.Connection) -> None:
        if armed[0]:
            armed[0] = False
            conn.connection.dbapi_connection.close()  # type: ignore[union-attr]

    def arm() -> None:
        armed[0] = True

    return arm


@pytest.mark.parametrize("kind", ["stock", "ferry-fenced"])
def test_an_atom_write_dropped_mid_transaction_is_written_by_the_retry(
    kind: str, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement path (a conductor's fenced connection; PostgreSQL takes it too)."""
    kit = Kit(kind, db_file, monkeypatch)
    dropping(kit.engine)()
    kit.storage.set_atom_state("copy", states.SUCCESS)
    assert kit.between_tries == [("copy=RUNNING",)]
    assert kit.stored() == ("copy=SUCCESS",)


@pytest.mark.parametrize("kind", ["stock", "ferry", "ferry-fenced"])
def test_a_flow_write_dropped_mid_transaction_leaves_nothing_half_written(
    kind: str, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New atoms and the flow state go in one transaction: all of it or nothing, and the retry
    writes all of it."""
    kit = Kit(kind, db_file, monkeypatch)
    dropping(kit.engine)()
    kit.storage.ensure_atoms([Step("switch"), Step("post")])
    assert kit.between_tries == [("copy=RUNNING",)]
    assert kit.stored() == ("copy=RUNNING", "post=PENDING", "switch=PENDING")


def test_a_plain_execute_failing_once_is_written_by_the_retry(
    db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ferry's plain SQLite statement: a DB-API error (here an I/O error) on one try."""
    kit = Kit("ferry", db_file, monkeypatch)
    real = kit.engine.raw_connection
    failures = ["disk I/O error"]

    class FailingCursor:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        def execute(self, *args: Any) -> Any:
            if failures:
                raise sqlite3.OperationalError(failures.pop())
            return self._cursor.execute(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cursor, name)

    class FailingConnection:
        def __init__(self, raw: Any) -> None:
            self._raw = raw

        def cursor(self) -> FailingCursor:
            return FailingCursor(self._raw.cursor())

        def __getattr__(self, name: str) -> Any:
            return getattr(self._raw, name)

    monkeypatch.setattr(kit.engine, "raw_connection", lambda: FailingConnection(real()))
    kit.storage.set_atom_state("copy", states.SUCCESS)
    assert failures == []
    assert kit.between_tries == [("copy=RUNNING",)]
    assert kit.stored() == ("copy=SUCCESS",)
