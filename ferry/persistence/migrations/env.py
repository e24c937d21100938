"""Alembic environment for ferry's own tables (run through ferry.persistence.schema)."""

from __future__ import annotations

from typing import Any

from alembic import context

import ferry.drivers.simulated.tables  # the simulated cluster's tables are part of the schema
import ferry.jobs.tables  # noqa: F401 - the job store's tables too
from ferry.persistence.models import METADATA

config = context.config
target_metadata = METADATA
VERSION_TABLE = config.get_main_option("version_table") or "ferry_alembic_version"


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from ferry.persistence.db import Database

        db = Database(config.get_main_option("sqlalchemy.url"))
        with db.engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
