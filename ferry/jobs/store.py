"""Posting migrations to the job board and reading it back (``ferry submit``, ``ferry jobs``).

A job's details are plain JSON: the migration id, the flow factory's import path and the store
the run starts with (the same inputs :meth:`Orchestrator.create` saved in the flow detail). No
secret is ever in them; the board URL is only shown with its password masked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from taskflow import exceptions as tf_exc, states as tf_states

from ferry.errors import JobBoardUnavailable
from ferry.model import MigrationStatus
from ferry.persistence.db import Database
from ferry.persistence.repository import M
from ferry.runner.engine import FLOW_FACTORY, STORE_META_KEY
from ferry.runner.runner import FINISHED_FLOW_STATES, Runner

from .board import open_board
from .limits import SlotRepository
from .tables import JOBS

LOG = logging.getLogger(__name__)

JOB_NAME_PREFIX = "live-migration"


def job_name(migration_id: str) -> str:
    return f"{JOB_NAME_PREFIX}:{migration_id}"


class JobRepository:
    """``ferry_jobs``: which migration was posted as which job, dispatches, consumption."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now

    def posted(self, migration_id: str, job_uuid: str, name: str, board: str) -> None:
        with self.db.connect() as conn:
            conn.execute(
                JOBS.insert().values(
                    migration_id=migration_id,
                    job_uuid=job_uuid,
                    job_name=name,
                    board=board,
                    posted_at=self.now(),
                    dispatches=0,
                )
            )

    def dispatched(self, migration_id: str, owner: str) -> None:
        with self.db.connect() as conn:
            conn.execute(
                JOBS.update()
                .where(JOBS.c.migration_id == migration_id)
                .values(
                    dispatches=JOBS.c.dispatches + 1, last_owner=owner, last_dispatch_at=self.now()
                )
            )

    def consumed(self, migration_id: str, owner: str, outcome: str | None) -> bool:
        """Record the consumption (once: False when it was recorded already)."""
        with self.db.connect() as conn:
            res = conn.execute(
                JOBS.update()
                .where(JOBS.c.migration_id == migration_id, JOBS.c.consumed_at.is_(None))
                .values(consumed_at=self.now(), consumed_by=owner, outcome=outcome)
            )
            return res.rowcount == 1

    def unconsumed_open(self) -> list[dict[str, Any]]:
        """The job rows of migrations not finished yet whose jobs were never consumed."""
        open_statuses = [s.value for s in MigrationStatus if not s.terminal]
        q = (
            sa.select(JOBS)
            .join(M, M.c.id == JOBS.c.migration_id)
            .where(JOBS.c.consumed_at.is_(None), M.c.status.in_(open_statuses))
            .order_by(JOBS.c.posted_at)
        )
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def swap_job(self, migration_id: str, old_uuid: str | None, new_uuid: str) -> bool:
        """Replace the job id ``old_uuid`` by ``new_uuid`` (once: False when another process
        replaced it first)."""
        with self.db.connect() as conn:
            res = conn.execute(
                JOBS.update()
                .where(
                    JOBS.c.migration_id == migration_id,
                    JOBS.c.consumed_at.is_(None),
                    JOBS.c.job_uuid == old_uuid
                    if old_uuid is not None
                    else JOBS.c.job_uuid.is_(None),
                )
                .values(job_uuid=new_uuid, posted_at=self.now())
            )
            return res.rowcount == 1

    def get(self, migration_id: str) -> dict[str, Any] | None:
        with self.db.connect() as conn:
            row = (
                conn.execute(sa.select(JOBS).where(JOBS.c.migration_id == migration_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(JOBS)).mappings().all()]

    def done(self, limit: int | None = None) -> list[dict[str, Any]]:
        q = (
            sa.select(JOBS, M.c.status, M.c.instance_name)
            .join(M, M.c.id == JOBS.c.migration_id, isouter=True)
            .where(JOBS.c.consumed_at.is_not(None))
            .order_by(JOBS.c.consumed_at.desc())
        )
        if limit:
            q = q.limit(limit)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]


class JobStore:
    """The job board of one :class:`~ferry.runner.Runner`'s database and settings (opened on
    first use)."""

    def __init__(self, runner: Runner, board: Any = None) -> None:
        self.runner = runner
        self.settings = runner.settings.jobboard
        self.jobs = JobRepository(runner.db)
        self._board: Any = board  # a connected board of the caller's (a conductor's), or None
        self._lock = threading.Lock()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:client"

    @property
    def board(self) -> Any:
        """The connected board. :raises ConfigError: :raises JobBoardUnavailable:"""
        with self._lock:
            if self._board is None:
                self._board = open_board(
                    self.settings, "ferry-client", persistence=self.runner.backend
                )
            return self._board

    @property
    def safe_url(self) -> str:
        return str(self.board.safe_url)

    def _failure(self, exc: BaseException) -> JobBoardUnavailable:
        cause = exc.__cause__ or exc
        return JobBoardUnavailable(self.safe_url, " ".join(str(cause).split()))

    # ------------------------------------------------------------------ posting
    def post(self, migration_id: str) -> str:
        """Post the migration's job (its logbook and flow detail exist); returns the job id."""
        job_uuid = self._post_job(migration_id)
        self.jobs.posted(migration_id, job_uuid, job_name(migration_id), self.safe_url)
        LOG.info("migration %s posted as job %s on %s", migration_id, job_uuid, self.safe_url)
        return job_uuid

    def _post_job(self, migration_id: str) -> str:
        board = self.board
        with contextlib.closing(self.runner.backend.get_connection()) as conn:
            book = conn.get_logbook(migration_id)
        fd = book.find(migration_id)
        store = dict((fd.meta or {}).get(STORE_META_KEY, {}))
        details = {
            "migration_id": migration_id,
            "flow_uuid": migration_id,
            "flow_factory": FLOW_FACTORY,
            "store": store,
        }
        try:
            job = board.post(job_name(migration_id), book=book, details=details)
        except tf_exc.TaskFlowException as exc:
            raise self._failure(exc) from None
        return str(job.uuid)

    def rebuild(self) -> list[str]:
        """Post again the job of every migration the database says is waiting for a conductor
        (posted, never consumed, not finished) that the board does not hold: a board that lost
        its data (Redis restarted without persistence, a ZooKeeper path removed) is rebuilt from
        the database, which is the truth. Returns the migrations posted again.

        Idempotent and safe to race: the job row is switched to the new job in one conditional
        write before anything is posted, so of two processes rebuilding at once only one posts
        (a process killed between the two leaves a job posted twice at worst: a conductor
        consumes the second one unrun once the migration is finished)."""
        rows = self.jobs.unconsumed_open()  # the database first: a job posted after is listed
        if not rows:
            return []
        on_board = {str((job.details or {}).get("migration_id") or "") for job in self.board_jobs()}
        reposted: list[str] = []
        for row in rows:
            mid = row["migration_id"]
            if mid in on_board:
                continue
            marker = f"reposting:{self.owner}:{time.time():.6f}"
            if not self.jobs.swap_job(mid, row["job_uuid"], marker):
                continue  # another process is posting it again
            job_uuid = self._post_job(mid)
            self.jobs.swap_job(mid, marker, job_uuid)
            self.runner.migrations.note(
                mid, f"job posted again on {self.safe_url}: the board had lost it"
            )
            LOG.warning("migration %s: its job was not on the board; posted again", mid)
            reposted.append(mid)
        return reposted

    # ------------------------------------------------------------------ reading
    def board_jobs(self) -> list[Any]:
        try:
            return list(self.board.iterjobs(only_unclaimed=False, ensure_fresh=True))
        except tf_exc.TaskFlowException as exc:
            raise self._failure(exc) from None

    def find(self, migration_id: str) -> Any | None:
        """The board's job of this migration (None: not on the board)."""
        for job in self.board_jobs():
            if (job.details or {}).get("migration_id") == migration_id:
                return job
        return None

    def listing(self, done: int = 10) -> dict[str, Any]:
        """What ``ferry jobs`` shows: every job on the board (posted or claimed: by whom, until
        when, and what it waits for) and the ``done`` most recently consumed ones."""
        board = self.board
        rows: list[dict[str, Any]] = []
        known = {r["migration_id"]: r for r in self.jobs.all()}
        slots = SlotRepository(self.runner.db, self.runner.settings.limits)
        usage = slots.usage()
        held = slots.held()
        for job in self.board_jobs():
            mid = str((job.details or {}).get("migration_id") or "")
            try:
                state = job.state
                owner = board.find_owner(job) if state == tf_states.CLAIMED else None
                expires = board.claim_expires_in(job) if owner else None
            except (tf_exc.TaskFlowException, TypeError):
                continue  # consumed meanwhile
            record = None
            with contextlib.suppress(Exception):
                record = self.runner.migrations.get(mid) if mid else None
            waiting = None
            if record is not None and not record.done and state != tf_states.CLAIMED:
                blocked = slots.would_block(
                    slots.needed(record.source, record.destination), usage, held.get(mid, [])
                )
                waiting = str(blocked) if blocked else None
            rows.append(
                {
                    "job": job.uuid,
                    "name": job.name,
                    "migration_id": mid,
                    "instance": record.instance_name if record else None,
                    "source": record.source if record else None,
                    "destination": record.destination if record else None,
                    "state": "claimed" if state == tf_states.CLAIMED else "posted",
                    "owner": owner,
                    "claim_expires_in": round(expires, 1) if expires is not None else None,
                    "claimed_until": time.time() + expires if expires is not None else None,
                    "status": record.status if record else None,
                    "waiting_for": waiting,
                    "posted_at": (known.get(mid) or {}).get("posted_at"),
                    "dispatches": (known.get(mid) or {}).get("dispatches", 0),
                }
            )
        on_board = {r["migration_id"] for r in rows}
        for mid, row in known.items():
            if row["consumed_at"] is None and mid not in on_board and row["job_uuid"]:
                # posted, never consumed, gone from the board (a board that lost its data)
                record = None
                with contextlib.suppress(Exception):
                    record = self.runner.migrations.get(mid)
                rows.append(
                    {
                        "job": row["job_uuid"],
                        "name": row["job_name"],
                        "migration_id": mid,
                        "instance": record.instance_name if record else None,
                        "state": "missing",
                        "owner": row["last_owner"],
                        "status": record.status if record else None,
                        "waiting_for": "not on the board: a conductor posts it again",
                        "posted_at": row["posted_at"],
                        "dispatches": row["dispatches"],
                    }
                )
        finished = [
            {
                "job": r["job_uuid"],
                "name": r["job_name"],
                "migration_id": r["migration_id"],
                "instance": r["instance_name"],
                "state": "done",
                "owner": r["consumed_by"],
                "status": r["status"],
                "outcome": r["outcome"],
                "consumed_at": r["consumed_at"],
                "posted_at": r["posted_at"],
                "dispatches": r["dispatches"],
            }
            for r in (self.jobs.done(done) if done else [])
        ]
        return {"board": self.safe_url, "jobs": rows, "done": finished, "slots": usage}

    # ------------------------------------------------------------------ cleanup
    def retire(self, migration_id: str) -> bool:
        """Take a finished migration's job off the board (after an abort done by this process):
        claim it if nobody has, and consume it. True when consumed here. Best effort: a job
        claimed by a conductor is left to it (it consumes finished jobs without running them)."""
        if self.runner.flow_state(migration_id) not in FINISHED_FLOW_STATES:
            return False
        job = self.find(migration_id)
        if job is None:
            return False
        board = self.board
        try:
            board.claim(job, self.owner)
        except (tf_exc.UnclaimableJob, tf_exc.NotFound):
            return False
        try:
            board.consume(job, self.owner)
        except (tf_exc.JobFailure, tf_exc.NotFound):
            LOG.warning("migration %s: could not consume its job %s", migration_id, job.uuid)
            with contextlib.suppress(Exception):
                board.abandon(job, self.owner)
            return False
        self.jobs.consumed(
            migration_id, self.owner, self.runner.migrations.get(migration_id).status
        )
        return True

    def close(self) -> None:
        with self._lock:
            if self._board is not None:
                with contextlib.suppress(Exception):
                    self._board.close()
                self._board = None


__all__ = ["FINISHED_FLOW_STATES", "FLOW_FACTORY", "JobRepository", "JobStore", "job_name"]
