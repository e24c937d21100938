"""The job store's tables (Core tables on ferry's ``METADATA``; Alembic revision ``0004_jobstore``
creates them).

* ``ferry_jobs``: one row per migration posted to a job board: the job's id, how often conductors
  dispatched it, and when and by whom it was consumed (the board forgets consumed jobs; ``ferry
  jobs`` lists them as done from here).
* ``ferry_slot_counters`` / ``ferry_slots``: the concurrency limits. A counter per limited thing
  (``total``, ``source:HOST``, ``destination:HOST``) counts the migrations holding one of its slots;
  ``ferry_slots`` says which migration holds which. Slots are taken with one conditional
  ``UPDATE .. SET used = used + 1 WHERE used < limit`` per counter, all of a migration's in one
  transaction (all or nothing), so two conductors can never both take the last slot.
"""

from __future__ import annotations

import sqlalchemy as sa

from ferry.persistence.models import METADATA

# A migration's job on the board.
JOBS = sa.Table(
    "ferry_jobs",
    METADATA,
    sa.Column("migration_id", sa.String(36), primary_key=True),
    sa.Column("job_uuid", sa.String(64), index=True),
    sa.Column("job_name", sa.String(255)),
    sa.Column("board", sa.String(512)),  # URL, password masked
    sa.Column("posted_at", sa.Float),
    sa.Column("dispatches", sa.Integer, default=0, nullable=False),
    sa.Column("last_owner", sa.String(255)),
    sa.Column("last_dispatch_at", sa.Float),
    sa.Column("consumed_at", sa.Float, index=True),
    sa.Column("consumed_by", sa.String(255)),
    sa.Column("outcome", sa.String(32)),
)


# How many migrations hold a slot of ``key`` (``total``, ``source:H``, ``destination:H``).
COUNTERS = sa.Table(
    "ferry_slot_counters",
    METADATA,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("used", sa.Integer, default=0, nullable=False),
)


# Migration ``migration_id`` holds a slot of ``key``.
SLOTS = sa.Table(
    "ferry_slots",
    METADATA,
    sa.Column("migration_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True, index=True),
    sa.Column("acquired_at", sa.Float, nullable=False),
)
