"""The job store's tables (on ferry's declarative ``Base``; Alembic revision ``0004_jobstore``
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

from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ferry.persistence.models import Base


class JobRow(Base):
    """A migration's job on the board."""

    __tablename__ = "ferry_jobs"

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    job_uuid: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    job_name: Mapped[str | None] = mapped_column(sa.String(255))
    board: Mapped[str | None] = mapped_column(sa.String(512))  # URL, password masked
    posted_at: Mapped[float | None] = mapped_column(sa.Float)
    dispatches: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_owner: Mapped[str | None] = mapped_column(sa.String(255))
    last_dispatch_at: Mapped[float | None] = mapped_column(sa.Float)
    consumed_at: Mapped[float | None] = mapped_column(sa.Float, index=True)
    consumed_by: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[str | None] = mapped_column(sa.String(32))


class SlotCounterRow(Base):
    """How many migrations hold a slot of ``key`` (``total``, ``source:H``, ``destination:H``)."""

    __tablename__ = "ferry_slot_counters"

    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    used: Mapped[int] = mapped_column(sa.Integer, default=0)


class SlotRow(Base):
    """Migration ``migration_id`` holds a slot of ``key``."""

    __tablename__ = "ferry_slots"

    migration_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True, index=True)
    acquired_at: Mapped[float] = mapped_column(sa.Float)


JOBS = cast(sa.Table, JobRow.__table__)
COUNTERS = cast(sa.Table, SlotCounterRow.__table__)
SLOTS = cast(sa.Table, SlotRow.__table__)
