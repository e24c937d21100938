"""ferry's TaskFlow backend on PostgreSQL: TaskFlow's own persistence contract, the stock
backend as the oracle, and a connection the server drops mid-transaction."""

from __future__ import annotations

import contextlib
import unittest
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from taskflow import states, storage
from taskflow.persistence import models
from taskflow.tests.unit.persistence.base import PersistenceTestMixin

from ferry.persistence.db import Database
from ferry.persistence.taskflow_backend import FerryBackend, FerryConnection
from tests.taskflow_oracle import (
    Step,
    direct_scenario,
    engine_scenario,
    fenced,
    stock_backend,
    strip_prefix,
    updated_rows,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    d = Database(pg_url)
    d.upgrade()
    yield d
    d.close()


class TestOnFerryPostgres(PersistenceTestMixin, unittest.TestCase):
    backend: Any

    @pytest.fixture(autouse=True)
    def _database(self, db: Database) -> None:
        self.backend = FerryBackend(db)

    def _get_connection(self) -> FerryConnection:
        return self.backend.get_connection()


class TestOnFerryPostgresFenced(TestOnFerryPostgres):
    def _get_connection(self) -> FerryConnection:
        return fenced(self.backend, self.backend.db).get_connection()


def test_connection_calls_and_engine_runs_match_the_stock_backend(db: Database) -> None:
    reader = stock_backend(db.url)
    expected = direct_scenario(stock_backend(db.url), stock_backend(db.url), reader, "stock")
    got = direct_scenario(FerryBackend(db), FerryBackend(Database(db.url)), reader, "ferry")
    expected, got = strip_prefix(expected, "stock"), strip_prefix(got, "ferry")
    assert [label for label, _ in got] == [label for label, _ in expected]
    for (label, want), (_, have) in zip(expected, got, strict=True):
        assert have == want, label
    assert updated_rows(db.engine, "ferry") == updated_rows(db.engine, "stock")
    ran = strip_prefix(engine_scenario(FerryBackend(db), reader, "ferry"), "ferry")
    assert ran == strip_prefix(engine_scenario(stock_backend(db.url), reader, "stock"), "stock")


@pytest.mark.parametrize("kind", ["stock", "ferry", "ferry-fenced"])
def test_a_write_whose_connection_the_server_kills_is_written_by_the_retry(
    kind: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the session between the UPDATE and the COMMIT: nothing of that
    transaction stays, and TaskFlow's retry (its 5 s sleep taken over) writes the state."""
    backend: Any
    if kind == "stock":
        backend = stock_backend(db.url)
    else:
        backend = FerryBackend(db)
        if kind == "ferry-fenced":
            backend = fenced(backend, db)
    book = models.LogBook("book")
    flow = models.FlowDetail("flow", uuid=f"{kind}-flow")
    book.add(flow)
    with contextlib.closing(backend.get_connection()) as conn:
        conn.save_logbook(book)
    store = storage.Storage(flow, backend=backend)
    store.ensure_atom(Step("copy"))
    store.set_atom_state("copy", states.RUNNING)
    store.set_task_progress("copy", 0.0)

    def stored() -> str:
        with db.engine.connect() as conn:
            return str(
                conn.execute(
                    sa.text("SELECT state FROM atomdetails WHERE parent_uuid = :p"),
                    {"p": flow.uuid},
                ).scalar_one()
            )

    between: list[str] = []
    monkeypatch.setattr(
        storage.Storage._save_atom_detail.retry, "sleep", lambda _s: between.append(stored())
    )
    armed = [True]
    engine = backend.engine

    @sa.event.listens_for(engine, "commit")
    def _kill(conn: sa.Connection) -> None:
        if armed[0]:
            armed[0] = False
            pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            with db.engine.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})

    try:
        store.set_atom_state("copy", states.SUCCESS)
    finally:
        sa.event.remove(engine, "commit", _kill)
    assert between == ["RUNNING"]
    assert stored() == "SUCCESS"
