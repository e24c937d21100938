"""TaskFlow's Redis and ZooKeeper job boards, with what a job store of migrations needs on top:

* claims that expire (Redis): :meth:`claim` uses the conductor's lease as the claim's expiry, and
  :meth:`extend_claim` renews it only while the caller still owns it (one Lua script: a conductor
  that lost its claim never prolongs the next owner's); a ZooKeeper claim is an ephemeral znode
  that goes with its owner's session;
* a claim filter, so a conductor does not claim jobs it already knows cannot start yet (a full
  concurrency limit) only to release them again;
* oldest-first iteration (TaskFlow's Redis board lists the newest jobs first).

:func:`open_board` connects one from ferry's settings; an unreachable board raises
:class:`~ferry.errors.JobBoardUnavailable` naming the URL with any password masked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from taskflow import exceptions as tf_exc
from taskflow.jobs import base as jobs_base

from ferry.board_url import BoardURL, parse_board_url
from ferry.config import JobBoardSettings
from ferry.errors import ConfigError, JobBoardUnavailable

from .url import board_conf

LOG = logging.getLogger(__name__)

ClaimFilter = Callable[[Any], bool]
_PRIORITIES = [
    p.value for p in jobs_base.JobPriority.reorder(*((p, p) for p in jobs_base.JobPriority))
]

_EXTEND_IF_OWNER = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    redis.call("pexpire", KEYS[1], ARGV[2])
    return 1
end
return 0
"""


def _fifo(jobs: list[Any]) -> list[Any]:
    def key(job: Any) -> tuple[int, int]:
        prio = getattr(job.priority, "value", job.priority)
        rank = _PRIORITIES.index(prio) if prio in _PRIORITIES else len(_PRIORITIES)
        return rank, int(getattr(job, "sequence", 0) or 0)

    return sorted(jobs, key=key)


def _reason(exc: BaseException) -> str:
    """The innermost cause's message (TaskFlow wraps client errors in JobFailure)."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip() or type(seen).__name__
    return " ".join(text.split())


def _redis_board_class() -> type:
    from taskflow.jobs.backends import impl_redis

    class FerryRedisJobBoard(impl_redis.RedisJobBoard):
        """TaskFlow's Redis board with expiring claims, a claim filter and FIFO order."""

        claim_expiry: float | None = None
        claim_filter: ClaimFilter | None = None
        claim_failed: Callable[[Any], None] | None = None
        supports_expiry = True
        #: a conductor's board skips claimed jobs while scanning (no claim attempt on them)
        #: unless asked for every job (``iterjobs(only_unclaimed=False)``)
        only_unclaimed = False

        def iterjobs(self, only_unclaimed: bool | None = None, ensure_fresh: bool = False) -> Any:
            return super().iterjobs(
                only_unclaimed=self.only_unclaimed if only_unclaimed is None else only_unclaimed,
                ensure_fresh=ensure_fresh,
            )

        @classmethod
        def _make_client(cls, conf: dict[str, Any]) -> Any:
            # redis-py retries a refused connection with up to 10 s backoffs: an unreachable
            # board must fail in a moment (the conductor's loop retries on its own)
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            client = super()._make_client(conf)
            if hasattr(client, "set_retry"):
                client.set_retry(Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
            return client

        def claim(self, job: Any, who: str, expiry: float | None = None) -> None:
            if self.claim_filter is not None and not self.claim_filter(job):
                raise tf_exc.UnclaimableJob(f"job {job.uuid} cannot start yet")
            try:
                super().claim(job, who, expiry=self.claim_expiry if expiry is None else expiry)
            except BaseException:
                if self.claim_failed is not None:
                    self.claim_failed(job)
                raise

        def extend_claim(self, job: Any, who: str, expiry: float) -> bool:
            """Renew ``who``'s claim for ``expiry`` seconds; False when ``who`` lost it."""
            script = self._scripts.get("ferry_extend")
            if script is None:
                script = self._scripts["ferry_extend"] = self._client.register_script(
                    _EXTEND_IF_OWNER
                )
            with impl_redis._translate_failures():
                done = script(
                    keys=[job.owner_key], args=[self._encode_owner(who), int(expiry * 1000)]
                )
            return bool(done)

        def claim_expires_in(self, job: Any) -> float | None:
            """Seconds until the claim expires (None: unclaimed or no expiry)."""
            with impl_redis._translate_failures():
                ms = self._client.pttl(job.owner_key)
            return ms / 1000.0 if ms is not None and ms >= 0 else None

        def _fetch_jobs(self) -> list[Any]:
            return _fifo(super()._fetch_jobs())

    return FerryRedisJobBoard


def _zookeeper_board_class() -> type:
    from taskflow.jobs.backends import impl_zookeeper

    class FerryZookeeperJobBoard(impl_zookeeper.ZookeeperJobBoard):
        """TaskFlow's ZooKeeper board (ephemeral claims) with a claim filter and FIFO order."""

        claim_expiry: float | None = None
        claim_filter: ClaimFilter | None = None
        claim_failed: Callable[[Any], None] | None = None
        supports_expiry = False
        only_unclaimed = False

        def iterjobs(self, only_unclaimed: bool | None = None, ensure_fresh: bool = False) -> Any:
            return super().iterjobs(
                only_unclaimed=self.only_unclaimed if only_unclaimed is None else only_unclaimed,
                ensure_fresh=ensure_fresh,
            )

        def claim(self, job: Any, who: str) -> None:
            if self.claim_filter is not None and not self.claim_filter(job):
                raise tf_exc.UnclaimableJob(f"job {job.uuid} cannot start yet")
            try:
                super().claim(job, who)
            except BaseException:
                if self.claim_failed is not None:
                    self.claim_failed(job)
                raise

        def extend_claim(self, job: Any, who: str, expiry: float) -> bool:
            """An ephemeral claim lives as long as the session: just check it is still ours."""
            try:
                return bool(self.find_owner(job) == who)
            except tf_exc.NotFound:
                return False

        def claim_expires_in(self, job: Any) -> float | None:
            return None

        def _fetch_jobs(self, ensure_fresh: bool = False) -> list[Any]:
            return _fifo(super()._fetch_jobs(ensure_fresh=ensure_fresh))

    return FerryZookeeperJobBoard


def for_conductor(
    board: Any,
    *,
    ttl: float,
    claim_filter: ClaimFilter | None,
    claim_failed: Callable[[Any], None] | None = None,
) -> Any:
    """Configure ``board`` as a conductor uses it: its claims expire after ``ttl`` seconds
    (Redis; a ZooKeeper claim goes with the session), jobs ``claim_filter`` refuses are not
    claimed (``claim_failed`` is told of a claim that failed), and only unclaimed jobs are
    listed."""
    if board.supports_expiry:
        board.claim_expiry = ttl
    board.claim_filter = claim_filter
    board.claim_failed = claim_failed
    board.only_unclaimed = True
    return board


def board_url(settings: JobBoardSettings) -> BoardURL:
    """The configured board URL with its password (from password_env / password_file)."""
    if not settings.url:
        raise ConfigError(
            'no job board is configured: set [jobboard] url = "redis://HOST:6379/0" '
            "(or zookeeper://HOST:2181/PATH) in the config file"
        )
    url = parse_board_url(settings.url)
    password = settings.password()
    return url.with_password(password) if password is not None else url


def make_board(
    settings: JobBoardSettings,
    name: str,
    *,
    persistence: Any = None,
    timeout: float = 10.0,
    session_timeout: float | None = None,
    client: Any = None,
) -> Any:
    """The board (Redis or ZooKeeper) for ``settings``, not connected yet (:func:`open_board`
    connects it). ``client``: a client of the caller's that the board uses and does not close
    (TaskFlow's boards take one; by default each board makes and owns its own).

    :raises ConfigError: no or a bad URL, or the client library is missing.
    """
    url = board_url(settings)
    conf = board_conf(
        url, namespace=settings.namespace, timeout=timeout, session_timeout=session_timeout
    )
    try:
        cls = _redis_board_class() if url.kind == "redis" else _zookeeper_board_class()
    except ImportError as exc:
        extra = "redis>=7" if url.kind == "redis" else "kazoo"
        raise ConfigError(
            f"the job board {url.safe()} needs the Python module {exc.name!r} "
            f"(pip install 'ferry[jobstore]' or '{extra}')"
        ) from None
    board = cls(name, conf, client=client, persistence=persistence)
    board.safe_url = url.safe()
    board.kind = url.kind
    return board


def open_board(
    settings: JobBoardSettings,
    name: str,
    *,
    persistence: Any = None,
    timeout: float = 10.0,
    session_timeout: float | None = None,
) -> Any:
    """A connected board (Redis or ZooKeeper) for ``settings``.

    :raises ConfigError: no or a bad URL. :raises JobBoardUnavailable: cannot connect.
    """
    board = make_board(
        settings, name, persistence=persistence, timeout=timeout, session_timeout=session_timeout
    )
    try:
        if board.kind == "zookeeper":
            board.connect(timeout=timeout)
        else:
            board.connect()
    except Exception as exc:  # every client error: one line naming the URL, no password
        raise JobBoardUnavailable(board.safe_url, _reason(exc)) from None
    return board
