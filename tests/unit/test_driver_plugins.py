"""Drivers are found through the ``ferry.drivers`` entry points: a third-party driver registers by
being installed (here: a distribution's metadata and module put on ``sys.path`` for one test)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ferry.config import parse_settings
from ferry.drivers.registry import DriverRegistry, load_factory
from ferry.drivers.simulated import SimulatedDriver
from ferry.errors import ConfigError
from ferry.persistence.db import Database
from ferry.plugins import driver_names

FAKE_MODULE = """
from ferry.drivers.base import Driver


def _unused(self, *args, **kwargs):
    raise NotImplementedError


def _init(self, names):
    self.names = names


def _from_settings(cls, configs, settings, db):
    return cls([c.name for c in configs])


FakeDriver = type(
    "FakeDriver",
    (Driver,),
    {
        **{name: _unused for name in Driver.__abstractmethods__},
        "name": "fake",
        "__init__": _init,
        "hosts": lambda self: list(self.names),
        "from_settings": classmethod(_from_settings),
    },
)
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """A distribution ``fake-ferry-driver`` with ``entry_points`` (and its module) on sys.path."""
    (tmp_path / "fake_ferry_driver.py").write_text(FAKE_MODULE)
    dist = tmp_path / "fake_ferry_driver-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ferry-driver\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_ferry_driver", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'ferry.db'}")


def test_ferry_registers_its_own_drivers() -> None:
    assert {"simulated", "libvirt", "xenapi"} <= set(driver_names())


def test_no_hosts_is_the_simulated_cluster(db: Database) -> None:
    registry = DriverRegistry.from_settings(parse_settings({}), db)
    assert [type(d) for d in registry.drivers] == [SimulatedDriver]


def test_an_installed_third_party_driver_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    data = {"hosts": [{"name": "f1", "driver": "fake"}, {"name": "f2", "driver": "fake"}]}
    with pytest.raises(ConfigError, match="driver must be one of"):
        parse_settings(data)  # not installed yet
    install(
        tmp_path,
        monkeypatch,
        """
        [ferry.drivers]
        fake = fake_ferry_driver:FakeDriver.from_settings
        """,
    )
    assert "fake" in driver_names()
    registry = DriverRegistry.from_settings(parse_settings(data), db)
    (driver,) = registry.drivers
    assert type(driver).__name__ == "FakeDriver"
    assert registry.hosts() == ["f1", "f2"]
    assert registry.driver_for("f2") is driver


def test_an_unknown_driver_lists_the_installed_ones(db: Database) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"hosts": [{"name": "h", "driver": "vmware"}]}, "ferry.toml")
    assert "host 'h': driver must be one of" in str(err.value)
    assert "libvirt" in str(err.value) and "xenapi" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_factory("vmware")
    assert "no driver named 'vmware' is installed; installed: " in str(err.value)
    assert "simulated" in str(err.value)


def test_a_driver_that_cannot_be_imported_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    install(
        tmp_path,
        monkeypatch,
        """
        [ferry.drivers]
        broken = fake_ferry_driver_missing_module:build
        """,
    )
    data = {"hosts": [{"name": "b1", "driver": "broken"}]}
    with pytest.raises(ConfigError, match=r"host 'b1': the broken driver .* cannot be imported"):
        DriverRegistry.from_settings(parse_settings(data), db)


def test_a_missing_extra_still_names_it(monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
    monkeypatch.setitem(sys.modules, "XenAPI", None)
    host = {"name": "x1", "driver": "xenapi", "url": "https://pool.example", "username": "root"}
    data = {"hosts": [{**host, "password_env": "FERRY_T_PW"}]}
    with pytest.raises(ConfigError, match=r"pip install 'ferry\[xenapi\]'"):
        DriverRegistry.from_settings(parse_settings(data), db)
