"""Create or upgrade the schema on first use: ferry's tables through Alembic (version table
``ferry_alembic_version``) and TaskFlow's logbook tables through TaskFlow's own upgrade.

Below :mod:`ferry.persistence.db` (which calls :func:`upgrade` with its engine and URL): this
module imports nothing of ferry's persistence, so the layers stay one-way.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from taskflow.persistence.backends import impl_sqlalchemy

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "ferry_alembic_version"
_PG_LOCK_KEY = 0x66657272  # "ferr": serialises concurrent first-use upgrades on PostgreSQL


class HasUrl(Protocol):
    """Anything naming a database URL (a :class:`~ferry.persistence.db.Database`)."""

    url: str


def alembic_config(db: HasUrl | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if db is not None:
        cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


@cache
def head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(conn: sa.Connection) -> frozenset[str]:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return frozenset()
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return frozenset(r[0] for r in rows)


def upgrade(engine: sa.Engine, db: HasUrl) -> None:
    """Bring ferry's tables and TaskFlow's logbook tables behind ``engine`` to the head."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if current_revisions(conn) != head_revisions():
            cfg = alembic_config(db)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")
    # TaskFlow's own upgrade (its Alembic scripts), through its stock backend on the same engine
    backend = impl_sqlalchemy.SQLAlchemyBackend({"connection": db.url}, engine=engine)
    with contextlib.closing(backend.get_connection()) as tf_conn:
        tf_conn.upgrade()
    # TaskFlow's schema has no index on the parent columns: every logbook read and flow update
    # would scan all atoms of all past migrations
    with engine.begin() as conn:
        for table in ("atomdetails", "flowdetails"):
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS ix_ferry_{table}_parent ON {table} (parent_uuid)"
                )
            )
