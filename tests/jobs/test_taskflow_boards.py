"""TaskFlow's own job-board tests (``BoardTestMixin`` and the Redis and ZooKeeper test cases,
shipped in the taskflow wheel under taskflow/tests/unit/jobs/) against the boards ferry builds
(:func:`ferry.jobs.board.make_board`), on the real servers tests/infra starts.

Each board is run twice: as a client builds it (``ferry submit``, ``ferry jobs``, the server) and
as a conductor configures it (:func:`ferry.jobs.board.for_conductor`: claims that expire, a claim
filter, only unclaimed jobs listed). A TaskFlow test that cannot apply is skipped with the reason;
TaskFlow's tests of the Redis client's construction run against ferry's board class too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("testtools", reason="TaskFlow's test base needs testtools (ferry[test])")
pytest.importorskip("fixtures", reason="TaskFlow's test base needs fixtures (ferry[test])")
pytest.importorskip("oslotest", reason="TaskFlow's test base needs oslotest (ferry[test])")
pytest.importorskip("etcd3gw", reason="TaskFlow's test utilities import etcd3gw (ferry[test])")


@contextlib.contextmanager
def _taskflow_says_available(kind: str) -> Iterator[None]:
    """TaskFlow's test modules probe localhost's default ports when imported (30 s for
    ZooKeeper); the servers here are tests/infra's, so the probe is answered by its env var."""
    old = os.environ.get("TAKSFLOW_TEST_URL")
    os.environ["TAKSFLOW_TEST_URL"] = f"{kind}://"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TAKSFLOW_TEST_URL", None)
        else:
            os.environ["TAKSFLOW_TEST_URL"] = old


with _taskflow_says_available("redis"):
    from taskflow.tests.unit.jobs import test_redis_job
with _taskflow_says_available("zookeeper"):
    from taskflow.tests.unit.jobs import test_zk_job

from taskflow.jobs.backends import impl_redis  # noqa: E402
from taskflow.utils import kazoo_utils  # noqa: E402

from ferry.config import JobBoardSettings  # noqa: E402
from ferry.jobs import board as ferry_board  # noqa: E402
from ferry.jobs.url import board_conf  # noqa: E402

CONDUCTOR_LISTS_UNCLAIMED_ONLY = (
    "a conductor's board lists only unclaimed jobs (for_conductor: it never tries to claim a "
    "claimed one), and this test lists a claimed job; it passes on the client's board"
)


class _LiveClient:
    """The board's Redis client as it is now: TaskFlow's Redis board makes a new client on every
    connect() when it owns it (ferry's boards do), so the tests' ``client`` must follow it."""

    def __init__(self, board: Any) -> None:
        self._board = board

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board._client, name)


def _admit_all(_job: Any) -> bool:
    return True


class _FerryRedisBoard(test_redis_job.RedisJobboardTest):
    __test__ = False
    __unittest_skip__ = False  # TaskFlow's class is skipped without a server on :6379
    redis_url: str
    conductor = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: str) -> None:
        self.redis_url = redis_server

    def create_board(self, persistence: Any = None) -> tuple[Any, Any]:
        settings = JobBoardSettings(url=self.redis_url, namespace=f"tf{uuid.uuid4().hex}")
        board = ferry_board.make_board(settings, "test-board", persistence=persistence)
        if self.conductor:
            ferry_board.for_conductor(board, ttl=30.0, claim_filter=_admit_all)
        self.addCleanup(board.close)
        return _LiveClient(board), board

    def _with_ferry_class(self, test: str) -> None:
        """Run TaskFlow's client-construction test ``test`` on ferry's board class (it names
        ``impl_redis.RedisJobBoard``; ferry's subclass adds a bounded retry to the client)."""
        cls = ferry_board._redis_board_class()
        with mock.patch.object(impl_redis, "RedisJobBoard", cls):
            getattr(super(), test)()

    def test__make_client(self) -> None:
        self._with_ferry_class("test__make_client")

    def test__make_client_retry_health(self) -> None:
        self._with_ferry_class("test__make_client_retry_health")

    def test__make_client_retry_health_string_conversion(self) -> None:
        self._with_ferry_class("test__make_client_retry_health_string_conversion")

    def test__make_client_sentinel(self) -> None:
        self._with_ferry_class("test__make_client_sentinel")

    def test__make_client_sentinel_fallbacks(self) -> None:
        self._with_ferry_class("test__make_client_sentinel_fallbacks")

    def test__make_client_sentinel_retry_health(self) -> None:
        self._with_ferry_class("test__make_client_sentinel_retry_health")

    def test__make_client_sentinel_ssl(self) -> None:
        self._with_ferry_class("test__make_client_sentinel_ssl")


@pytest.mark.redis
class TestFerryRedisBoard(_FerryRedisBoard):
    """The Redis board a client builds (``make_board`` with ferry's settings)."""

    __test__ = True


@pytest.mark.redis
class TestFerryRedisConductorBoard(_FerryRedisBoard):
    """The Redis board as a conductor configures it."""

    __test__ = True
    conductor = True

    def test_posting_claim_diff_owner(self) -> None:
        self.skipTest(CONDUCTOR_LISTS_UNCLAIMED_ONLY)

    def test_posting_claim_same_owner(self) -> None:
        self.skipTest(CONDUCTOR_LISTS_UNCLAIMED_ONLY)

    def test_claim_expires_by_default(self) -> None:
        """ferry's addition: a conductor's claim expires by itself (its lease), unlike
        TaskFlow's default claim, which never does."""
        with test_redis_job.base.connect_close(self.board):
            self.board.post("test", test_redis_job.p_utils.temporary_log_book())
            [job] = list(self.board.iterjobs(only_unclaimed=True))
            self.board.claim(job, self.board.name)
            left = self.board.claim_expires_in(job)
            assert left is not None and 0 < left <= 30.0
            assert self.board.extend_claim(job, self.board.name, 60.0)
            assert not self.board.extend_claim(job, "someone-else", 60.0)
            assert 30.0 < self.board.claim_expires_in(job) <= 60.0

    def test_a_filtered_job_is_not_claimed(self) -> None:
        """ferry's addition: the claim filter refuses a job without touching the board."""
        refused: list[str] = []
        ferry_board.for_conductor(
            self.board,
            ttl=30.0,
            claim_filter=lambda job: False,
            claim_failed=lambda job: refused.append(job.uuid),
        )
        with test_redis_job.base.connect_close(self.board):
            posted = self.board.post("test", test_redis_job.p_utils.temporary_log_book())
            [job] = list(self.board.iterjobs(only_unclaimed=True))
            with pytest.raises(test_redis_job.excp.UnclaimableJob):
                self.board.claim(job, self.board.name)
            assert job.state == test_redis_job.states.UNCLAIMED
            assert refused == []  # refused before any claim was tried
            assert posted.uuid == job.uuid


class _FerryZookeeperBoard(test_zk_job.ZookeeperJobboardTest):
    __test__ = False
    __unittest_skip__ = False  # TaskFlow's class is skipped without a server on :2181
    zk_url: str
    conductor = False

    @pytest.fixture(autouse=True)
    def _server(self, zookeeper_url: str) -> None:
        self.zk_url = zookeeper_url.rstrip("/")

    def create_board(self, persistence: Any = None) -> tuple[Any, Any]:
        # a parent of this test's own: the board's trash is a sibling of its path
        self.path = f"/taskflow/board-test-{uuid.uuid4().hex}/jobs"
        settings = JobBoardSettings(url=f"{self.zk_url}{self.path}")
        # TaskFlow's tests read the server through the board's client after closing the board,
        # so it is theirs (made from the configuration ferry's board makes its own client from)
        url = ferry_board.board_url(settings)
        conf = board_conf(url, namespace=settings.namespace, timeout=10.0)
        client = kazoo_utils.make_client(conf)
        board = ferry_board.make_board(
            settings, "test-board", persistence=persistence, client=client
        )
        if self.conductor:
            ferry_board.for_conductor(board, ttl=30.0, claim_filter=_admit_all)

        def cleanup_path() -> None:
            if client.connected:
                client.delete(self.path.rsplit("/", 1)[0], recursive=True)

        self.addCleanup(cleanup_path)
        self.addCleanup(board.close)
        self.addCleanup(self.close_client, client)
        return client, board

    def test_the_board_owns_its_client_by_default(self) -> None:
        """ferry's boards make their own client from the board URL (as in production)."""
        settings = JobBoardSettings(url=f"{self.zk_url}{self.path}")
        board = ferry_board.make_board(settings, "own-client")
        board.connect(timeout=10.0)
        try:
            board.post("test", test_zk_job.p_utils.temporary_log_book())
            assert [j.name for j in board.iterjobs(ensure_fresh=True)] == ["test"]
        finally:
            board.close()
        assert not board._client.connected  # closed with the board it belongs to


@pytest.mark.zookeeper
class TestFerryZookeeperBoard(_FerryZookeeperBoard):
    """The ZooKeeper board a client builds."""

    __test__ = True


@pytest.mark.zookeeper
class TestFerryZookeeperConductorBoard(_FerryZookeeperBoard):
    """The ZooKeeper board as a conductor configures it."""

    __test__ = True
    conductor = True

    def test_posting_claim_diff_owner(self) -> None:
        self.skipTest(CONDUCTOR_LISTS_UNCLAIMED_ONLY)

    def test_board_iter(self) -> None:
        self.skipTest(
            "asserts that iterjobs() lists claimed jobs too by default; a conductor's board "
            "lists only unclaimed ones (for_conductor); it passes on the client's board"
        )
