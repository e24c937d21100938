"""The libvirt driver (``ferry[libvirt]``): live migration of QEMU/KVM guests between libvirt
hosts. libvirt-python is imported when a connection is first needed, never by ``import ferry``."""

from collections.abc import Sequence

from ferry.config import HostConfig, Settings
from ferry.drivers.libvirt.connection import HostSpec
from ferry.drivers.libvirt.driver import LibvirtDriver
from ferry.persistence.db import Database


def build_driver(configs: Sequence[HostConfig], settings: Settings, db: Database) -> LibvirtDriver:
    """The ``libvirt`` entry point (:class:`~ferry.drivers.registry.DriverFactory`)."""
    return LibvirtDriver.from_host_configs(configs)


__all__ = ["HostSpec", "LibvirtDriver", "build_driver"]
