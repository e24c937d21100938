"""Real servers for the job store tests: Redis (tests/infra/redis.py, or ``$FERRY_TEST_REDIS_URL``),
PostgreSQL (tests/infra/postgres.py through the integration fixtures) and, when one is reachable,
ZooKeeper (``$FERRY_TEST_ZOOKEEPER_URL``, else 127.0.0.1:2181). Each is skipped with the reason
printed when it is not available here."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.infra import redis as redis_infra, zookeeper as zk_infra
from tests.integration.conftest import pg_admin_url, pg_url  # noqa: F401 - shared fixtures


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A ``redis://`` URL: ``$FERRY_TEST_REDIS_URL``, else a throwaway server on loopback."""
    url = os.environ.get("FERRY_TEST_REDIS_URL")
    if url:
        yield url
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("redis-py is not installed (pip install 'redis>=7')")
    if redis_infra.redis_server_bin() is None:
        pytest.skip("no redis-server binary here (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="ferry-redis-")
    try:
        yield redis_infra.start(directory)
    finally:
        redis_infra.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def namespace() -> str:
    """A board namespace of this test's own (tests share one server)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def zookeeper_url() -> Iterator[str]:
    """A ``zookeeper://`` URL: ``$FERRY_TEST_ZOOKEEPER_URL``, else a throwaway server on loopback
    (Debian's ``zookeeper`` package), else a server already on 127.0.0.1:2181."""
    url = os.environ.get("FERRY_TEST_ZOOKEEPER_URL")
    if url:
        yield url
        return
    try:
        import kazoo  # noqa: F401
    except ImportError:
        pytest.skip("kazoo is not installed (pip install kazoo)")
    if zk_infra.zookeeper_bin() is not None:
        directory = tempfile.mkdtemp(prefix="ferry-zk-")
        try:
            yield zk_infra.start(directory)
        finally:
            zk_infra.stop(directory)
            shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        with socket.create_connection(("127.0.0.1", 2181), timeout=0.5):
            pass
    except OSError:
        pytest.skip(
            "no ZooKeeper server: Debian's zookeeper package is not installed (apt-get install "
            "zookeeper), none listens on 127.0.0.1:2181 and FERRY_TEST_ZOOKEEPER_URL is not set"
        )
    yield "zookeeper://127.0.0.1:2181"
