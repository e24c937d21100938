"""Simulated ("hypervisor") time, persisted so that every process agrees on it.

One row holds ``sim_epoch``, ``wall_epoch`` and ``speed``; simulated time is
``sim_epoch + (time.time() - wall_epoch) * speed``:

* ``speed > 0``: simulated time runs at ``speed`` x wall time; ``sleep(s)`` really sleeps
  ``s / speed`` wall seconds.
* ``speed == 0`` (*stepped*, for tests): time stands still; ``sleep(s)`` advances the persisted
  time by ``s`` at once (one atomic ``UPDATE .. SET sim_epoch = sim_epoch + s``), so a test that
  polls a transfer while "sleeping" runs instantly, and another process sees the same time.

A process opening the clock with another speed re-anchors it (continuously: the time does not
jump), so the last opener's speed is the one every process follows.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from ferry.errors import ConfigError
from ferry.persistence.db import Database

from .tables import CLOCK, ensure_schema, insert_ignore

_ROW = 1


class SimClock:
    """A :class:`ferry.clock.Clock` whose time lives in the database (see module doc)."""

    def __init__(self, db: Database, speed: float = 1.0) -> None:
        if not speed >= 0:
            raise ConfigError(f"the simulated speed must be >= 0 (0 = stepped), not {speed}")
        self.db = db
        self.speed = float(speed)
        self._anchored = False
        self._lock = threading.Lock()

    @property
    def stepped(self) -> bool:
        """True when time only moves by :meth:`sleep` / :meth:`advance`."""
        return self.speed == 0

    # ------------------------------------------------------------------ Clock protocol
    def now(self) -> float:
        """Current simulated time (seconds)."""
        self.prepare()
        with self.db.connect() as conn:
            return self.now_in(conn)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (instantly in stepped mode)."""
        if seconds <= 0:
            return
        if self.stepped:
            self.advance(seconds)
        else:
            time.sleep(seconds / self.speed)

    # ----------------------------------------------------------------------- extras
    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` at once (any mode), for every process."""
        if seconds < 0:
            raise ValueError("the simulated clock cannot go backwards")
        self.prepare()
        with self.db.connect() as conn:
            conn.execute(
                sa.update(CLOCK)
                .where(CLOCK.c.id == _ROW)
                .values(sim_epoch=CLOCK.c.sim_epoch + float(seconds))
            )

    def now_in(self, conn: sa.Connection) -> float:
        """Current simulated time read inside the caller's transaction (one small query).

        The caller must have called :meth:`prepare` first (outside any transaction).
        """
        row = conn.execute(
            sa.select(CLOCK.c.sim_epoch, CLOCK.c.wall_epoch, CLOCK.c.speed).where(
                CLOCK.c.id == _ROW
            )
        ).one()
        if row.speed == 0:
            return float(row.sim_epoch)
        return float(row.sim_epoch + (time.time() - row.wall_epoch) * row.speed)

    # ---------------------------------------------------------------------- internals
    def prepare(self) -> None:
        """Create the clock row on first use, or re-anchor it to this process's speed.

        Idempotent and cheap after the first call; must not run inside a transaction of ``db``.
        """
        if self._anchored:
            return
        with self._lock:
            if self._anchored:
                return
            ensure_schema(self.db)
            wall = time.time()
            with self.db.connect() as conn:
                created = insert_ignore(
                    conn,
                    CLOCK,
                    [{"id": _ROW, "sim_epoch": wall, "wall_epoch": wall, "speed": self.speed}],
                )
                if not created:
                    # Keep the time continuous: fold the time run so far into the epoch.
                    run_so_far = (wall - CLOCK.c.wall_epoch) * CLOCK.c.speed
                    conn.execute(
                        sa.update(CLOCK)
                        .where(CLOCK.c.id == _ROW, CLOCK.c.speed != self.speed)
                        .values(
                            sim_epoch=CLOCK.c.sim_epoch + run_so_far,
                            wall_epoch=wall,
                            speed=self.speed,
                        )
                    )
            self._anchored = True

    def __repr__(self) -> str:
        mode = "stepped" if self.stepped else f"x{self.speed:g}"
        return f"SimClock({self.db!r}, {mode})"
