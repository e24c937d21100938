"""Create or upgrade the schema on first use: ferry's tables through Alembic (version table
``ferry_alembic_version``) and TaskFlow's logbook tables through TaskFlow's own upgrade.

Opening a database that is up to date costs one query (:func:`is_current`: the version tables
and the objects the upgrade makes, read at once and compared with the heads named here); Alembic
and TaskFlow's SQL backend are imported only when an upgrade is needed (:func:`upgrade`). Below
:mod:`ferry.persistence.db` (which calls both with its engine and URL): this module imports
nothing of ferry's persistence, so the layers stay one-way.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "ferry_alembic_version"
_REVISION = re.compile(r'^(down_revision|revision) = "([^"]+)"$', re.M)


@cache
def ferry_heads() -> frozenset[str]:
    """The heads of ferry's revisions, read from migrations/versions without Alembic (every
    ``revision`` no other file names as its ``down_revision``); a test keeps them equal to
    Alembic's."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for kind, value in _REVISION.findall(path.read_text()):
            (revisions if kind == "revision" else parents).add(value)
    return frozenset(revisions - parents)


#: TaskFlow's version table on PostgreSQL and the head of its revisions in the installed taskflow
#: (a test keeps it equal to TaskFlow's scripts; a newer taskflow only makes every start upgrade).
#: On SQLite TaskFlow creates its tables from its metadata and keeps no version.
TASKFLOW_VERSION_TABLE = "alembic_version"
TASKFLOW_HEADS = frozenset({"00af93df9d77"})
_PG_LOCK_KEY = 0x66657272  # "ferr": serialises concurrent first-use upgrades on PostgreSQL
_INDEXED = ("atomdetails", "flowdetails")
#: what the upgrade makes besides ferry's versioned tables: TaskFlow's tables, ferry's indexes
OBJECTS = frozenset({"logbooks", *_INDEXED, *(f"ix_ferry_{t}_parent" for t in _INDEXED)})

_FERRY_VERSION = f"SELECT 'ferry', version_num FROM {VERSION_TABLE}"
_OBJECT_NAMES = ", ".join(f"'{name}'" for name in sorted(OBJECTS))
#: one query per dialect: ferry's version, TaskFlow's (PostgreSQL), the objects present
_CHECKS = {
    "sqlite": sa.text(
        f"{_FERRY_VERSION} UNION ALL "
        f"SELECT 'object', name FROM sqlite_master WHERE name IN ({_OBJECT_NAMES})"
    ),
    "postgresql": sa.text(
        f"{_FERRY_VERSION} "
        f"UNION ALL SELECT 'taskflow', version_num FROM {TASKFLOW_VERSION_TABLE} "
        f"UNION ALL SELECT 'object', n FROM unnest(ARRAY[{_OBJECT_NAMES}]) AS n "
        "WHERE to_regclass(n) IS NOT NULL"
    ),
}


class HasUrl(Protocol):
    """Anything naming a database URL (a :class:`~ferry.persistence.db.Database`)."""

    url: str


def alembic_config(db: HasUrl | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if db is not None:
        cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


@cache
def head_revisions() -> frozenset[str]:
    """ferry's heads as Alembic reads them from the scripts (imports Alembic)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(conn: sa.Connection) -> frozenset[str]:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return frozenset()
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return frozenset(r[0] for r in rows)


def is_current(engine: sa.Engine) -> bool:
    """Whether ferry's and TaskFlow's tables are at their heads and ferry's indexes exist: one
    query, no Alembic. False when a version table is missing (a new database) and on dialects
    without a check; a file that is no database raises (``sa.exc.DatabaseError``)."""
    check = _CHECKS.get(engine.dialect.name)
    if check is None:
        return False
    with engine.connect() as conn:
        try:
            rows = conn.execute(check).all()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return False  # no such table: the upgrade makes it (or says what is wrong)
    found: dict[str, set[str]] = {"ferry": set(), "taskflow": set(), "object": set()}
    for kind, name in rows:
        found[kind].add(name)
    return (
        found["ferry"] == ferry_heads()
        and found["object"] == OBJECTS
        and (engine.dialect.name != "postgresql" or found["taskflow"] == TASKFLOW_HEADS)
    )


def upgrade(engine: sa.Engine, db: HasUrl) -> None:
    """Bring ferry's tables and TaskFlow's logbook tables behind ``engine`` to the head."""
    from alembic import (
        command,
    )  # only here: an upgrade is the one use of Alembic and TaskFlow's SQL

    from ferry.compat import sqlalchemy_backend  # backend, so the read commands import neither

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if current_revisions(conn) != head_revisions():
            cfg = alembic_config(db)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")
    # TaskFlow's own upgrade (its Alembic scripts), through its stock backend on the same engine
    backend = sqlalchemy_backend().SQLAlchemyBackend({"connection": db.url}, engine=engine)
    with contextlib.closing(backend.get_connection()) as tf_conn:
        tf_conn.upgrade()
    # TaskFlow's schema has no index on the parent columns: every logbook read and flow update
    # would scan all atoms of all past migrations
    with engine.begin() as conn:
        for table in _INDEXED:
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS ix_ferry_{table}_parent ON {table} (parent_uuid)"
                )
            )
