"""The XenAPI driver (XenServer / XCP-ng pools), on the PyPI ``XenAPI`` SDK.

* :class:`XenAPIDriver` -- the driver; ``XenAPIDriver.from_host_configs(settings.hosts...)``
  builds one for every ``[[hosts]]`` entry with ``driver = "xenapi"``;
* :func:`parse_hosts` -- those entries validated (see :mod:`ferry.drivers.xenapi.config` for the
  keys).

Importing this package does not import the SDK: building a driver does, and raises
:class:`~ferry.errors.ConfigError` (``pip install 'ferry[xenapi]'``) when it is missing.
"""

from collections.abc import Sequence
from pathlib import Path

from ferry.config import HostConfig, Settings
from ferry.drivers.xenapi.config import PoolConfig, XenHost, parse_hosts
from ferry.drivers.xenapi.driver import XenAPIDriver
from ferry.drivers.xenapi.networks import interim_network_name
from ferry.persistence.db import Database


def build_driver(configs: Sequence[HostConfig], settings: Settings, db: Database) -> XenAPIDriver:
    """The ``xenapi`` entry point (:class:`~ferry.drivers.registry.DriverFactory`); relative
    ``password_file`` / ``ca_file`` paths are relative to the config file."""
    base_dir = Path(settings.path).parent if settings.path else None
    return XenAPIDriver.from_host_configs(configs, base_dir=base_dir)


__all__ = [
    "PoolConfig",
    "XenAPIDriver",
    "XenHost",
    "build_driver",
    "interim_network_name",
    "parse_hosts",
]
