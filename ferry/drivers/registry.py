"""Host name -> driver, built from the config (tests pass their own drivers)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ferry.config import HostConfig, Settings
from ferry.drivers.base import Driver
from ferry.errors import ConfigError, HostNotFound, InstanceNotFound
from ferry.model import Host, Instance
from ferry.persistence.db import Database

LOG = logging.getLogger(__name__)


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
        for d in self.drivers:
            inst = d.find_instance(ref)
            if inst is not None:
                return inst
        raise InstanceNotFound(ref)

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
        """Build the drivers the settings name. The simulated cluster is used when no real
        hosts are configured; real drivers import their extras only here."""
        drivers: list[Driver] = []
        real = [h for h in settings.hosts if h.driver != "simulated"]
        by_driver: dict[str, list[HostConfig]] = {}
        for h in real:
            by_driver.setdefault(h.driver, []).append(h)
        for name, configs in sorted(by_driver.items()):
            drivers.append(_real_driver(name, configs, settings))
        if not real or any(h.driver == "simulated" for h in settings.hosts):
            from ferry.drivers.simulated import SimulatedDriver

            drivers.append(
                SimulatedDriver(
                    db, cluster_file=settings.simulated.cluster, speed=settings.simulated.speed
                )
            )
        return cls(drivers)


def _real_driver(name: str, configs: list[HostConfig], settings: Settings) -> Driver:
    """The driver serving ``configs`` (all of one kind); its library is imported only now and a
    missing one is a ConfigError naming the extra to install."""
    if name == "libvirt":
        from ferry.drivers.libvirt import LibvirtDriver

        return LibvirtDriver.from_host_configs(configs)
    if name == "xenapi":
        from ferry.drivers.xenapi import XenAPIDriver

        # relative password_file / ca_file paths are relative to the config file
        base_dir = Path(settings.path).parent if settings.path else None
        return XenAPIDriver.from_host_configs(configs, base_dir=base_dir)
    raise ConfigError(
        f"host {configs[0].name!r}: the {name} driver is not part of this ferry release yet"
    )
