"""The XenAPI driver (XenServer / XCP-ng pools), on the PyPI ``XenAPI`` SDK.

* :class:`XenAPIDriver` -- the driver; ``XenAPIDriver.from_host_configs(settings.hosts...)``
  builds one for every ``[[hosts]]`` entry with ``driver = "xenapi"``;
* :func:`parse_hosts` -- those entries validated (see :mod:`ferry.drivers.xenapi.config` for the
  keys).

Importing this package does not import the SDK: building a driver does, and raises
:class:`~ferry.errors.ConfigError` (``pip install 'ferry[xenapi]'``) when it is missing.
"""

from ferry.drivers.xenapi.config import PoolConfig, XenHost, parse_hosts
from ferry.drivers.xenapi.driver import XenAPIDriver
from ferry.drivers.xenapi.networks import interim_network_name

__all__ = ["PoolConfig", "XenAPIDriver", "XenHost", "interim_network_name", "parse_hosts"]
