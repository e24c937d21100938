"""TaskFlow's own persistence contract (``PersistenceTestMixin``, shipped in the taskflow wheel)
against ferry's backend on SQLite: its plain-statement connection, and a conductor's fenced
connection (SQLAlchemy statements, the path PostgreSQL takes too; tests/integration has the
PostgreSQL run)."""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskflow.tests.unit.persistence.base import PersistenceTestMixin

from ferry.persistence.db import Database
from ferry.persistence.taskflow_backend import FerryBackend, FerryConnection
from tests.taskflow_oracle import fenced


class TestOnFerrySqlite(PersistenceTestMixin, unittest.TestCase):
    backend: Any

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> Iterator[None]:
        db = Database(f"sqlite:///{tmp_path / 'tf.db'}")
        db.upgrade()
        self.backend = FerryBackend(db)
        yield
        db.close()

    def _get_connection(self) -> FerryConnection:
        return self.backend.get_connection()


class TestOnFerrySqliteFenced(TestOnFerrySqlite):
    def _get_connection(self) -> FerryConnection:
        return fenced(self.backend, self.backend.db).get_connection()
