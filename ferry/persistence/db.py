"""One SQLAlchemy engine per database URL, shared by ferry's tables and TaskFlow's logbooks.

SQLite (the default) runs in WAL mode with ``synchronous=NORMAL``: every commit is written to the
WAL before ``commit()`` returns, so a process killed with SIGKILL loses nothing it committed; a
power loss may lose the last commits that the OS had not yet flushed (see README, Durability).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection, Engine

from ferry.errors import ConfigError
from ferry.persistence import schema

DEFAULT_DB_ENV = "FERRY_DB"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def dialect_insert(dialect: str | Connection, table: sa.Table) -> Any:
    """``INSERT`` into ``table`` with the dialect's ``ON CONFLICT`` clauses (SQLite or
    PostgreSQL; ``dialect``: a name or a connection). Taken from the SQLAlchemy dialect package
    the engine has loaded already, so a process never imports the other one (PostgreSQL's alone
    costs a read command about a tenth of a second)."""
    name = dialect if isinstance(dialect, str) else dialect.dialect.name
    return importlib.import_module(f"sqlalchemy.dialects.{name}").insert(table)


def data_directory() -> Path:
    """ferry's directory in the user's data directory (``$XDG_DATA_HOME/ferry``): the default
    database files live here, and it is the one directory ferry creates for them."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ferry"


def default_database_url() -> str:
    """``$FERRY_DB``, else an SQLite file in the user's data directory."""
    env = os.environ.get(DEFAULT_DB_ENV)
    if env:
        return env
    return f"sqlite:///{data_directory() / 'ferry.db'}"


def safe_url(url: str | sa.URL) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - an unparsable URL carries nothing to hide
        return "<unparsable database URL>"


def _sqlite_directory(path: Path, url: sa.URL) -> None:
    """Create ferry's data directory for a file in it; any other file's directory must exist (a
    typo in ``--db`` must not make a fresh database somewhere)."""
    if path.parent.is_dir():
        return
    if path.parent.absolute() != data_directory().absolute():
        raise ConfigError(
            f"cannot open database {safe_url(url)}: the directory {path.parent} does not exist"
        )
    path.parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy (not pysqlite) decide where transactions begin.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA journal_mode")
    if cur.fetchone()[0] != "memory":
        cur.execute("PRAGMA journal_mode = WAL")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE: a transaction that will write takes the write lock up front, so a
    # read-then-write transaction can never fail to upgrade its lock half way.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Engine, sessions and schema management for one database URL."""

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        self.url = url or default_database_url()
        try:
            parsed = sa.make_url(self.url)
        except Exception as exc:
            raise ConfigError(f"invalid database URL {self.url!r}: {exc}") from None
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            database = parsed.database or ""
            memory = database in ("", ":memory:")
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            }
            if memory:
                kwargs["poolclass"] = pool.StaticPool
            else:
                _sqlite_directory(Path(database).expanduser(), parsed)
                kwargs["poolclass"] = pool.QueuePool
                kwargs["pool_size"] = 8
                kwargs["max_overflow"] = 16
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
        try:
            self.engine: Engine = sa.create_engine(parsed, **kwargs)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"database URL {safe_url(parsed)} needs the Python module {exc.name!r}"
                + (" (pip install 'ferry[postgres]')" if self.dialect == "postgresql" else "")
            ) from None
        except Exception as exc:
            raise ConfigError(f"invalid database URL {safe_url(parsed)}: {exc}") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        self._upgraded = False
        self._upgrade_lock = threading.Lock()

    # ------------------------------------------------------------------ sessions
    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection in one transaction."""
        with self.engine.begin() as conn:
            yield conn

    # -------------------------------------------------------------------- schema
    def upgrade(self) -> None:
        """Create or upgrade ferry's schema (Alembic) and TaskFlow's tables. Idempotent; a
        database at the heads costs one query."""
        with self._upgrade_lock:
            if self._upgraded:
                return
            try:
                if not schema.is_current(self.engine):  # one query; Alembic only if not
                    schema.upgrade(self.engine, self)
            except ConfigError:
                raise
            except sa.exc.DBAPIError as exc:  # unreachable, locked, or a file that is no database
                raise ConfigError(
                    f"cannot open database {safe_url(self.url)}: {exc.orig or exc}"
                ) from None
            self._upgraded = True

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)})"
