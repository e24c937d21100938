"""Drivers are plugins: every installed distribution may declare entry points in the group
``ferry.drivers`` (ferry's own: simulated, libvirt, xenapi)::

    [project.entry-points."ferry.drivers"]
    mydriver = "mypackage.driver:MyDriver.from_settings"

The name is what ``[[hosts]] driver = ...`` says; the object is a
:class:`~ferry.drivers.registry.DriverFactory`, loaded (imported) only when a host names it.
Only the names are read here, without importing any driver, so the configuration can check them.
"""

from __future__ import annotations

from importlib import metadata

DRIVER_GROUP = "ferry.drivers"


def driver_entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed drivers by name (the first distribution found wins a name twice taken)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=DRIVER_GROUP):
        found.setdefault(ep.name, ep)
    return found


def driver_names() -> list[str]:
    """The names of the installed drivers, sorted."""
    return sorted(driver_entry_points())
