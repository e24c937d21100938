"""Host name -> driver, built from the config (tests pass their own drivers).

Drivers are found by name among the installed ``ferry.drivers`` entry points
(:mod:`ferry.plugins`): a third-party driver registers by being installed. Each entry point is a
:class:`DriverFactory`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from ferry.config import HostConfig, Settings
from ferry.drivers.base import Driver
from ferry.errors import ConfigError, DriverError, HostNotFound, InstanceNotFound
from ferry.model import Host, Instance
from ferry.persistence.db import Database
from ferry.plugins import driver_entry_points

LOG = logging.getLogger(__name__)

#: the driver used when no hosts are configured (the simulated demo cluster)
DEFAULT_DRIVER = "simulated"


class DriverFactory(Protocol):
    """Builds the driver serving ``configs`` (all ``[[hosts]]`` entries naming it; empty for the
    default driver) from them and the settings; ``db`` is ferry's database, for a driver that
    keeps state there. A driver class exposes it as a classmethod (the entry point then names
    ``package.module:DriverClass.from_settings``) or its package as a function.

    :raises ConfigError: invalid host entries, or a library the driver needs is missing (the
        message names the extra to install)."""

    def __call__(
        self, configs: Sequence[HostConfig], settings: Settings, db: Database
    ) -> Driver: ...


class DriverRegistry:
    """Which driver serves which host; finds instances by asking every driver."""

    def __init__(self, drivers: Iterable[Driver]) -> None:
        self.drivers: list[Driver] = list(drivers)
        self._by_host: dict[str, Driver] = {}
        for d in self.drivers:
            for h in d.hosts():
                if h in self._by_host:
                    raise ConfigError(f"host {h!r} is served by two drivers")
                self._by_host[h] = d

    def hosts(self) -> list[str]:
        return sorted(self._by_host)

    def driver_for(self, host: str) -> Driver:
        try:
            return self._by_host[host]
        except KeyError:
            raise HostNotFound(host) from None

    def has_host(self, host: str) -> bool:
        return host in self._by_host

    def host_info(self, host: str) -> Host:
        return self.driver_for(host).host_info(host)

    def host_status(self, host: str) -> Host:
        return self.driver_for(host).host_status(host)

    def host_infos(self) -> list[Host]:
        """Every host's info, each driver asked once for all of its hosts."""
        infos: list[Host] = []
        for d in self.drivers:
            names = [h for h, owner in self._by_host.items() if owner is d]
            try:
                infos.extend(d.host_infos(names))
            except Exception as exc:  # an unreachable hypervisor is down hosts, not a crash
                LOG.warning("driver %s: cannot read host info: %s", d.name, exc)
        return sorted(infos, key=lambda h: h.name)

    def find_instance(self, ref: str) -> Instance:
        """The instance from whichever driver has it; InstanceNotFound (naming any hosts that
        could not be asked, and why) when none has it."""
        unasked: list[str] = []
        for d in self.drivers:
            try:
                inst = d.find_instance(ref)
            except DriverError as exc:
                unasked.append(str(exc))
                continue
            if inst is not None:
                return inst
        raise InstanceNotFound(ref, unasked)

    def list_instances(self) -> list[Instance]:
        out: list[Instance] = []
        for d in self.drivers:
            out.extend(d.list_instances())
        return sorted(out, key=lambda i: (i.host or "", i.name))

    def close(self) -> None:
        for d in self.drivers:
            try:
                d.close()
            except Exception:  # pragma: no cover - best effort on shutdown
                LOG.exception("closing driver %s", d.name)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> DriverRegistry:
        """Build the drivers the settings' hosts name, each through its installed factory
        (:mod:`ferry.plugins`; a driver's extras are imported only then). The simulated cluster
        is used when no hosts are configured; it comes after the other drivers."""
        by_driver: dict[str, list[HostConfig]] = {}
        for h in settings.hosts:
            by_driver.setdefault(h.driver, []).append(h)
        if not settings.hosts:
            by_driver[DEFAULT_DRIVER] = []
        names = sorted(by_driver, key=lambda n: (n == DEFAULT_DRIVER, n))
        return cls(load_factory(n, by_driver[n])(by_driver[n], settings, db) for n in names)


def load_factory(name: str, configs: Sequence[HostConfig] = ()) -> DriverFactory:
    """The installed factory of the driver ``name``.

    :raises ConfigError: no installed driver has that name (the message lists those that are
        installed), or its module cannot be imported."""
    where = f"host {configs[0].name!r}: " if configs else ""
    installed = driver_entry_points()
    ep = installed.get(name)
    if ep is None:
        raise ConfigError(
            f"{where}no driver named {name!r} is installed; installed: "
            f"{', '.join(sorted(installed)) or 'none (is ferry itself installed?)'}"
        )
    try:
        factory: DriverFactory = ep.load()
    except ImportError as exc:
        raise ConfigError(
            f"{where}the {name} driver ({ep.value}) cannot be imported: {exc}"
        ) from None
    return factory
