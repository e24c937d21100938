"""Shared fixtures: a fresh SQLite database, the simulated cluster on stepped time, an
Orchestrator wired to both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry import Orchestrator
from ferry.config import MigrationSettings, Settings, SimulatedSettings
from ferry.drivers.simulated import SimulatedDriver


def fast_settings(**migration: object) -> Settings:
    """Stepped simulated time (transfers take no wall time) and no real backoff."""
    return Settings(
        simulated=SimulatedSettings(speed=0.0),
        migration=MigrationSettings(post_retry_delay=0.0, **migration),  # type: ignore[arg-type]
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ferry.db'}"


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    o = Orchestrator(db_url, settings=fast_settings())
    yield o
    o.close()


@pytest.fixture
def sim(orch: Orchestrator) -> SimulatedDriver:
    driver = orch.drivers.drivers[0]
    assert isinstance(driver, SimulatedDriver)
    return driver
