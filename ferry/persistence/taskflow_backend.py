"""TaskFlow persistence on ferry's database, without the stock backend's per-call overheads.

TaskFlow's stock :class:`SQLAlchemyBackend` rebuilds its ``MetaData`` and every table on each
``get_connection()`` (TaskFlow's storage asks for one per write), opens a fresh SQLite connection
per call (``NullPool``) and reads every row back before updating it. This backend keeps the exact
schema and semantics but

* builds the tables once per backend and shares ferry's pooled engine (WAL SQLite / PostgreSQL),
* writes an atom update as one ``UPDATE`` (TaskFlow's storage always hands over the complete,
  authoritative atom detail, and only one runner drives a flow at a time: see leases),
* on a flow update inserts only the atoms the database does not have yet, in one statement,
* skips the write TaskFlow makes right after a state change only to set the progress to 0.0 or
  1.0 (the state change itself is written; the progress of a finished atom is implied by it).

Every write is still its own committed transaction, so an atom reported done survives a SIGKILL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import sql
from taskflow import exceptions as tf_exc
from taskflow.persistence import models
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence.backends.sqlalchemy import tables

from ferry.persistence.db import Database


def stamp_state_time(atom_detail: Any) -> None:
    """Record when the atom entered its current state (``meta['timestamps'][state]``).

    Written with the state change itself, so timings cost no extra round trip.
    """
    meta = atom_detail.meta
    if meta is None:
        meta = atom_detail.meta = {}
    stamps = meta.setdefault("timestamps", {})
    state = atom_detail.state
    if state and meta.get("last_state") != state:
        stamps[state] = time.time()
        meta["last_state"] = state


class FerryBackend(impl_sqlalchemy.SQLAlchemyBackend):
    """A TaskFlow persistence backend bound to a :class:`~ferry.persistence.db.Database`."""

    def __init__(self, db: Database) -> None:
        super().__init__({"connection": db.url}, engine=db.engine)
        self.db = db
        self._validated = True  # the Database already connected
        self.metadata = sa.MetaData()
        self.tables = tables.fetch(self.metadata)
        ad_t = self.tables.atomdetails
        columns = [
            c.name
            for c in ad_t.columns
            if c.name not in ("uuid", "parent_uuid", "atom_type", "created_at")
        ]
        #: one UPDATE of every atom column, built once (statement building dominates otherwise)
        self.update_atom_stmt = (
            sql.update(ad_t)
            .where(ad_t.c.uuid == sa.bindparam("_uuid"))
            .values({c: sa.bindparam(c, type_=ad_t.c[c].type) for c in columns})
        )
        self.atom_columns = columns
        fd_t = self.tables.flowdetails
        self.update_flow_stmt = sql.update(fd_t).where(fd_t.c.uuid == sa.bindparam("_uuid"))
        self.atoms_of_flow_stmt = sql.select(ad_t.c.uuid).where(
            ad_t.c.parent_uuid == sa.bindparam("_uuid")
        )
        #: the new atoms of a flow in one multi-row INSERT (a new run adds all of them at once)
        self.insert_atom_stmt = sql.insert(ad_t)
        self.insert_atom_columns = [*columns, "uuid", "parent_uuid", "atom_type"]
        #: SQLite: the same UPDATE as plain SQL on the pooled DB-API connection (autocommit, see
        #: ferry.persistence.db): a single statement is its own transaction, and SQLAlchemy's
        #: per-execute machinery costs several times the write itself
        self.sqlite_update_sql: str | None = None
        if db.is_sqlite:
            sets = ", ".join(f"{c} = ?" for c in columns)
            self.sqlite_update_sql = f"UPDATE {ad_t.name} SET {sets} WHERE uuid = ?"
        self.json_columns = frozenset(
            c.name for c in ad_t.columns if isinstance(c.type, tables.JSONType)
        )
        #: TaskFlow's own JSON column type, so the plain statement stores what it would
        self.json_type = tables.JSONType()
        self._written: dict[str, str] = {}
        self._written_lock = threading.Lock()

    def written_unchanged_but_progress(self, atom_detail: Any, values: dict[str, Any]) -> bool:
        """True when the last write of this atom differs from ``values`` only by a progress of
        0.0 or 1.0 (records what is written otherwise)."""
        meta = dict(values.get("meta") or {})
        progress = meta.pop("progress", None)
        meta.pop("progress_details", None)
        fingerprint = repr(sorted({**values, "meta": meta}.items(), key=lambda kv: kv[0]))
        with self._written_lock:
            same = self._written.get(atom_detail.uuid) == fingerprint
            if not same:
                self._written[atom_detail.uuid] = fingerprint
                if len(self._written) > 100_000:  # bounded: forget the oldest runs
                    self._written.pop(next(iter(self._written)))
        return same and progress in (0.0, 1.0)

    def get_connection(self) -> FerryConnection:
        return FerryConnection(self)


class FerryConnection(impl_sqlalchemy.Connection):
    def __init__(self, backend: FerryBackend) -> None:
        self._backend = backend
        self._upgrade_lock = backend._upgrade_lock
        self._engine = backend.engine
        self._metadata = backend.metadata
        self._tables = backend.tables
        self._converter = impl_sqlalchemy._Alchemist(self._tables)

    def update_atom_details(self, atom_detail: Any) -> Any:
        stamp_state_time(atom_detail)
        backend = self._backend
        values = atom_detail.to_dict()
        params = {c: values.get(c) for c in backend.atom_columns}
        if backend.written_unchanged_but_progress(atom_detail, params):
            return atom_detail
        if backend.sqlite_update_sql is not None and self._engine is backend.engine:
            # not for a conductor's fenced connection (ferry.jobs.ownership): its engine checks
            # the lease inside every write transaction, which the plain statement would bypass
            self._sqlite_update(atom_detail.uuid, params)
            return atom_detail
        params["_uuid"] = atom_detail.uuid
        try:
            with self._engine.begin() as conn:
                result = conn.execute(backend.update_atom_stmt, params)
                if result.rowcount == 0:
                    raise tf_exc.NotFound(f"No atom details found with uuid '{atom_detail.uuid}'")
        except sa_exc.SQLAlchemyError:
            tf_exc.raise_with_cause(
                tf_exc.StorageFailure,
                f"Failed updating atom details with uuid '{atom_detail.uuid}'",
            )
        return atom_detail

    def _sqlite_update(self, uuid: str, params: dict[str, Any]) -> None:
        backend = self._backend
        dialect = self._engine.dialect
        row = [
            backend.json_type.process_bind_param(params[c], dialect)
            if c in backend.json_columns
            else params[c]
            for c in backend.atom_columns
        ]
        row.append(uuid)
        try:
            raw = self._engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(backend.sqlite_update_sql, row)
                count = cursor.rowcount
                cursor.close()
            finally:
                raw.close()
        except (sqlite3.Error, sa_exc.SQLAlchemyError):
            tf_exc.raise_with_cause(
                tf_exc.StorageFailure, f"Failed updating atom details with uuid '{uuid}'"
            )
        if count == 0:
            raise tf_exc.NotFound(f"No atom details found with uuid '{uuid}'")

    def _atom_row(self, atom_detail: Any, parent_uuid: str) -> dict[str, Any]:
        values = atom_detail.to_dict()
        values["parent_uuid"] = parent_uuid
        values["atom_type"] = models.atom_detail_type(atom_detail)
        return {c: values.get(c) for c in self._backend.insert_atom_columns}

    def update_flow_details(self, flow_detail: Any) -> Any:
        backend = self._backend
        values = flow_detail.to_dict()
        values.pop("uuid", None)
        values["_uuid"] = flow_detail.uuid
        try:
            with self._engine.begin() as conn:
                result = conn.execute(backend.update_flow_stmt, values)
                if result.rowcount == 0:
                    raise tf_exc.NotFound(f"No flow details found with uuid '{flow_detail.uuid}'")
                known = set(
                    conn.execute(backend.atoms_of_flow_stmt, {"_uuid": flow_detail.uuid}).scalars()
                )
                parent = flow_detail.uuid
                rows = [self._atom_row(ad, parent) for ad in flow_detail if ad.uuid not in known]
                if rows:
                    conn.execute(backend.insert_atom_stmt, rows)
        except sa_exc.SQLAlchemyError:
            tf_exc.raise_with_cause(
                tf_exc.StorageFailure,
                f"Failed updating flow details with uuid '{flow_detail.uuid}'",
            )
        return flow_detail
