"""Servers of a fault test's own (each test restarts or stops them): Redis, ZooKeeper and
PostgreSQL started by the project's tests/infra scripts on 127.0.0.1; skipped with the reason
where the binaries are missing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.infra import postgres as pg_infra, redis as redis_infra, zookeeper as zk_infra


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    """A Redis server of this test's own (it is restarted): its directory and port."""
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=7')")
    if redis_infra.redis_server_bin() is None:
        pytest.skip("no redis-server binary here (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="ferry-redis-fault-")
    port = redis_infra.free_port()
    try:
        yield directory, port
    finally:
        redis_infra.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_zookeeper() -> Iterator[tuple[str, int]]:
    """A ZooKeeper server of this test's own (it is restarted): its directory and port."""
    pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")
    if zk_infra.zookeeper_bin() is None:
        pytest.skip("no ZooKeeper here (apt-get install zookeeper)")
    directory = tempfile.mkdtemp(prefix="ferry-zk-fault-")
    port = zk_infra.free_port()
    try:
        yield directory, port
    finally:
        zk_infra.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, int, str]]:
    """A PostgreSQL server of this test's own (it is restarted): its directory, port and the
    URL of a database of ferry's on it."""
    pytest.importorskip(
        "psycopg", reason="psycopg is not installed (pip install 'ferry[postgres]')"
    )
    if pg_infra.pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries here (apt-get install postgresql)")
    directory = tempfile.mkdtemp(prefix="ferry-pg-fault-")
    port = pg_infra.free_port()
    try:
        admin = pg_infra.start(directory, port)
        yield directory, port, admin
    finally:
        pg_infra.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)
