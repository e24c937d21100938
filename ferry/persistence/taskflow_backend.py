"""TaskFlow persistence on ferry's database: the stock SQLAlchemy backend's behaviour, faster.

Seen through TaskFlow's models, this backend stores and returns exactly what TaskFlow's stock
:class:`SQLAlchemyBackend` does (tests/unit/test_taskflow_backend_oracle.py runs both side by
side), with one documented addition: an atom's ``meta`` carries ``timestamps`` (state -> epoch
seconds when the atom entered it) and ``last_state``, written with the state change itself and
returned in the atom detail the update returns (TaskFlow's storage adopts it), so timings cost
no extra round trip.

Where the stock backend rebuilds its ``MetaData`` and every table on each ``get_connection()``
(TaskFlow's storage asks for one per write), opens a fresh SQLite connection per call
(``NullPool``) and reads every row back before it updates it, this backend

* builds the tables and statements once per backend and shares ferry's pooled engine,
* writes an atom update as one prebuilt ``UPDATE ... WHERE uuid AND name AND atom_type``: the
  stock read-merge-write stores the same columns, because TaskFlow's merge takes every column
  from the detail handed over except the name (and refuses another atom type); when no row
  matches (not stored, another name or type) the stock code path decides (``NotFound``, the
  stored name kept, or TaskFlow's own merge error),
* on SQLite runs that ``UPDATE`` as plain SQL on a pooled DB-API connection (autocommit: the
  statement is its own transaction), but never for a conductor's fenced connection
  (:mod:`ferry.jobs.ownership`), whose lease check must run inside each write transaction,
* on a flow update inserts the atoms the database does not have yet in one statement and
  rewrites the stored ones in one ``executemany``, as the stock backend does atom by atom.

Nothing is cached between writes: every call writes, and a failed write raises
``StorageFailure`` (TaskFlow's storage retries it) and leaves nothing half written.
"""

from __future__ import annotations

import copy
import datetime
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc, sql
from taskflow import exceptions as tf_exc
from taskflow.persistence import models
from taskflow.persistence.backends.sqlalchemy import tables

from ferry.compat import sqlalchemy_backend
from ferry.persistence.db import Database

impl_sqlalchemy: Any = sqlalchemy_backend()

#: atom columns an update never sets (identity, parentage, creation) or sets itself (updated_at)
_ATOM_KEYS = ("uuid", "parent_uuid", "atom_type", "name", "created_at", "updated_at")


def _utcnow() -> datetime.datetime:
    """What TaskFlow's tables stamp ``updated_at`` with (naive UTC)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def stamped(atom_detail: Any) -> Any:
    """A copy of ``atom_detail`` (the caller's object and its meta stay untouched) whose meta
    records when the atom entered its current state (``meta['timestamps'][state]``)."""
    result = copy.copy(atom_detail)
    meta = atom_detail.meta
    state = atom_detail.state
    if state and (meta or {}).get("last_state") != state:
        meta = dict(meta or {})
        meta["timestamps"] = {**(meta.get("timestamps") or {}), state: time.time()}
        meta["last_state"] = state
        result.meta = meta
    return result


class FerryBackend(impl_sqlalchemy.SQLAlchemyBackend):
    """A TaskFlow persistence backend bound to a :class:`~ferry.persistence.db.Database`."""

    def __init__(self, db: Database) -> None:
        super().__init__({"connection": db.url}, engine=db.engine)
        self.db = db
        self._validated = True  # the Database already connected
        self.metadata = sa.MetaData()
        self.tables = tables.fetch(self.metadata)
        ad_t = self.tables.atomdetails
        #: the columns an atom update writes, in the order of the plain SQLite statement
        self.atom_columns = [c.name for c in ad_t.columns if c.name not in _ATOM_KEYS]
        #: one UPDATE of every atom column, built once (statement building dominates otherwise);
        #: ``updated_at`` comes from the table's own ``onupdate``
        self.update_atom_stmt = (
            sql.update(ad_t)
            .where(
                ad_t.c.uuid == sa.bindparam("_uuid"),
                ad_t.c.name == sa.bindparam("_name"),
                ad_t.c.atom_type == sa.bindparam("_atom_type", type_=ad_t.c.atom_type.type),
            )
            .values({c: sa.bindparam(c, type_=ad_t.c[c].type) for c in self.atom_columns})
        )
        fd_t = self.tables.flowdetails
        #: the stock update keeps the stored name: a flow of another name takes the stock path
        self.update_flow_stmt = (
            sql.update(fd_t)
            .where(fd_t.c.uuid == sa.bindparam("_uuid"), fd_t.c.name == sa.bindparam("_name"))
            .values(
                meta=sa.bindparam("meta", type_=fd_t.c.meta.type),
                state=sa.bindparam("state", type_=fd_t.c.state.type),
            )
        )
        self.atoms_of_flow_stmt = sql.select(ad_t.c.uuid).where(
            ad_t.c.parent_uuid == sa.bindparam("_uuid")
        )
        self.atoms_by_uuid_stmt = sql.select(ad_t).where(
            ad_t.c.uuid.in_(sa.bindparam("_uuids", expanding=True))
        )
        #: the new atoms of a flow in one multi-row INSERT (a new run adds all of them at once)
        self.insert_atom_stmt = sql.insert(ad_t)
        self.insert_atom_columns = [*self.atom_columns, "uuid", "parent_uuid", "atom_type", "name"]
        #: SQLite: the same UPDATE as plain SQL on the pooled DB-API connection (autocommit, see
        #: ferry.persistence.db): a single statement is its own transaction, and SQLAlchemy's
        #: per-execute machinery costs several times the write itself
        self.sqlite_update_sql: str | None = None
        dialect = self.engine.dialect
        if db.is_sqlite:
            sets = ", ".join(f"{c} = ?" for c in [*self.atom_columns, "updated_at"])
            self.sqlite_update_sql = (
                f"UPDATE {ad_t.name} SET {sets} WHERE uuid = ? AND name = ? AND atom_type = ?"
            )
        #: how each column's value reaches the DB-API (TaskFlow's own JSON type, the DateTime)
        self.bind: dict[str, Callable[[Any], Any] | None] = {
            c: ad_t.c[c].type.bind_processor(dialect) for c in [*self.atom_columns, "updated_at"]
        }

    def get_connection(self) -> FerryConnection:
        return FerryConnection(self)


class FerryConnection(impl_sqlalchemy.Connection):
    """One connection of :class:`FerryBackend`; ``engine`` replaces the backend's engine for
    every statement (a conductor's fenced engine): then no plain SQLite shortcut is taken."""

    def __init__(self, backend: FerryBackend, engine: Any = None) -> None:
        self._backend = backend
        self._upgrade_lock = backend._upgrade_lock
        self._engine = backend.engine if engine is None else engine
        self._plain_sqlite = engine is None and backend.sqlite_update_sql is not None
        self._metadata = backend.metadata
        self._tables = backend.tables
        self._converter = impl_sqlalchemy._Alchemist(self._tables)

    # ---------------------------------------------------------------------------- atoms
    def _atom_params(self, atom_detail: Any) -> dict[str, Any]:
        values = atom_detail.to_dict()
        params = {c: values[c] for c in self._backend.atom_columns}
        params["_uuid"] = atom_detail.uuid
        params["_name"] = atom_detail.name
        params["_atom_type"] = models.atom_detail_type(atom_detail)
        return params

    def update_atom_details(self, atom_detail: Any) -> Any:
        result = stamped(atom_detail)
        params = self._atom_params(result)
        try:
            if self._plain_sqlite:
                written = self._sqlite_update(params)
            else:
                with self._engine.begin() as conn:
                    written = conn.execute(self._backend.update_atom_stmt, params).rowcount
        except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
            raise tf_exc.StorageFailure(
                f"Failed updating atom details with uuid '{atom_detail.uuid}'", cause=exc
            ) from exc
        if written == 1:
            return result
        # not stored, or stored under another name or type: the stock code decides
        return super().update_atom_details(result)

    def _sqlite_update(self, params: dict[str, Any]) -> int:
        backend = self._backend
        bind = backend.bind
        row = []
        for c in backend.atom_columns:
            process = bind[c]
            row.append(params[c] if process is None else process(params[c]))
        process, now = bind["updated_at"], _utcnow()
        row += [now if process is None else process(now)]
        row += [params["_uuid"], params["_name"], params["_atom_type"]]
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(backend.sqlite_update_sql, row)
                return int(cursor.rowcount)
            finally:
                cursor.close()
        except sqlite3.Error:
            raw.invalidate()  # whatever broke, the next write gets a fresh connection
            raise
        finally:
            raw.close()

    def _atom_row(self, atom_detail: Any, parent_uuid: str) -> dict[str, Any]:
        values = atom_detail.to_dict()
        values["parent_uuid"] = parent_uuid
        values["atom_type"] = models.atom_detail_type(atom_detail)
        return {c: values.get(c) for c in self._backend.insert_atom_columns}

    def _rewrite_stored(self, conn: sa.Connection, stored: list[Any]) -> dict[str, Any]:
        """Write the stored atoms of a flow update as the stock backend does (returns the
        details that TaskFlow's merge made of any the fast statement could not match)."""
        backend = self._backend
        rows = [self._atom_params(ad) for ad in stored]
        if conn.dialect.supports_sane_multi_rowcount:
            if conn.execute(backend.update_atom_stmt, rows).rowcount == len(rows):
                return {}
            unmatched: Iterable[Any] = stored
        else:
            unmatched = [
                ad
                for ad, row in zip(stored, rows, strict=True)
                if conn.execute(backend.update_atom_stmt, row).rowcount != 1
            ]
        merged = {}
        for ad in unmatched:  # another name or type: TaskFlow's own merge (keeps or refuses)
            row = conn.execute(backend.atoms_by_uuid_stmt, {"_uuids": [ad.uuid]}).one()
            e_ad = self._converter.convert_atom_detail(row._mapping)
            self._update_atom_details(conn, ad, e_ad)
            merged[ad.uuid] = e_ad
        return merged

    # ---------------------------------------------------------------------------- flows
    def update_flow_details(self, flow_detail: Any) -> Any:
        backend = self._backend
        values = {
            "meta": flow_detail.meta,
            "state": flow_detail.state,
            "_uuid": flow_detail.uuid,
            "_name": flow_detail.name,
        }
        result = None
        try:
            with self._engine.begin() as conn:
                if conn.execute(backend.update_flow_stmt, values).rowcount == 1:
                    result = self._update_atoms_of(conn, flow_detail)
        except sa_exc.SQLAlchemyError as exc:
            raise tf_exc.StorageFailure(
                f"Failed updating flow details with uuid '{flow_detail.uuid}'", cause=exc
            ) from exc
        if result is None:  # not stored, or stored under another name: the stock code decides
            return super().update_flow_details(flow_detail)
        return result

    def _update_atoms_of(self, conn: sa.Connection, flow_detail: Any) -> Any:
        """Insert the new atoms, rewrite the stored ones; the flow detail as the stock backend
        returns it (a copy, plus any atom stored by another writer)."""
        backend = self._backend
        known = set(conn.execute(backend.atoms_of_flow_stmt, {"_uuid": flow_detail.uuid}).scalars())
        parent = flow_detail.uuid
        new = [self._atom_row(ad, parent) for ad in flow_detail if ad.uuid not in known]
        if new:
            conn.execute(backend.insert_atom_stmt, new)
        result = flow_detail.copy()
        stored = [ad for ad in flow_detail if ad.uuid in known]
        if stored:
            for e_ad in self._rewrite_stored(conn, stored).values():
                result.add(e_ad)
        others = known.difference(ad.uuid for ad in flow_detail)
        if others:
            for row in conn.execute(backend.atoms_by_uuid_stmt, {"_uuids": sorted(others)}):
                result.add(self._converter.convert_atom_detail(row._mapping))
        return result
