"""ferry's TaskFlow backend side by side with TaskFlow's stock SQLAlchemy backend: the same
operations give the same models (ferry's documented meta keys aside), on the plain SQLite
connection and on a conductor's fenced connection."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ferry.persistence.db import Database
from ferry.persistence.taskflow_backend import FerryBackend
from tests.taskflow_oracle import (
    direct_scenario,
    engine_scenario,
    fenced,
    stock_backend,
    strip_prefix,
    updated_rows,
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'tf.db'}")
    d.upgrade()
    return d


@pytest.mark.parametrize("path", ["plain", "fenced"])
def test_connection_calls_match_the_stock_backend(db: Database, path: str) -> None:
    reader = stock_backend(db.url)
    expected = direct_scenario(stock_backend(db.url), stock_backend(db.url), reader, "stock")
    ours = FerryBackend(db)
    if path == "fenced":
        ours_first: object = fenced(ours, db)
    else:
        ours_first = ours
    another = FerryBackend(Database(db.url))  # another process's backend object
    got = direct_scenario(ours_first, another, reader, "ferry")
    expected, got = strip_prefix(expected, "stock"), strip_prefix(got, "ferry")
    assert [label for label, _ in got] == [label for label, _ in expected]
    for (label, want), (_, have) in zip(expected, got, strict=True):
        assert have == want, label
    assert updated_rows(db.engine, "ferry") == updated_rows(db.engine, "stock")
    assert dict(updated_rows(db.engine, "ferry")) == {
        "-task": True,
        "-retry": True,
        "-theirs": False,
    }


def test_engine_runs_store_what_the_stock_backend_stores(db: Database) -> None:
    reader = stock_backend(db.url)
    expected = engine_scenario(stock_backend(db.url), reader, "stock")
    got = engine_scenario(FerryBackend(db), reader, "ferry")
    assert strip_prefix(got, "ferry") == strip_prefix(expected, "stock")
    atoms = {a["name"]: a for f in got["flows"] for a in f["atoms"]}
    assert atoms["a"]["state"] == "SUCCESS" and atoms["a"]["meta"]["progress"] == 1.0
    assert atoms["d"]["failure"]["exception_str"] == "no room for web-1"


def test_finished_atoms_carry_their_state_timestamps(db: Database) -> None:
    """ferry's documented meta addition: when each state was entered, read back as stored."""
    engine_scenario(FerryBackend(db), stock_backend(db.url), "ferry")
    with contextlib.closing(stock_backend(db.url).get_connection()) as conn:
        book = conn.get_logbook("ferry-engine")
    metas = {ad.name: ad.meta for fd in book for ad in fd}
    assert {"RUNNING", "SUCCESS"} <= set(metas["a"]["timestamps"])
    assert metas["a"]["last_state"] == "SUCCESS"
    assert {"RUNNING", "FAILURE", "REVERTED"} <= set(metas["d"]["timestamps"])
