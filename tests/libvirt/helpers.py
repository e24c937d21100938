"""Building ferry's libvirt driver and orchestrator on the real test hosts."""

from __future__ import annotations

import dataclasses
from typing import Any

from ferry import Orchestrator
from ferry.config import HostConfig, MigrationSettings, Settings
from ferry.drivers.libvirt import LibvirtDriver


def host_configs(
    libvirt_hosts: dict[str, dict[str, Any]], **per_host: dict[str, Any]
) -> list[HostConfig]:
    """``[[hosts]]`` entries for lv-a, lv-b, lv-c (options per host name override, e.g.
    ``lv_b={"reserved_host_memory_mb": 5000}``)."""
    out = []
    for name, h in sorted(libvirt_hosts.items()):
        options = {k: v for k, v in h["config"].items() if k not in ("name", "driver")}
        options.setdefault("reserved_host_memory_mb", 0)
        options.update(per_host.get(name.replace("-", "_"), {}))
        out.append(HostConfig(name=name, driver="libvirt", options=options))
    return out


def make_driver(
    libvirt_hosts: dict[str, dict[str, Any]], **per_host: dict[str, Any]
) -> LibvirtDriver:
    return LibvirtDriver.from_host_configs(host_configs(libvirt_hosts, **per_host))


def make_orchestrator(
    db_url: str,
    libvirt_hosts: dict[str, dict[str, Any]],
    per_host: dict[str, dict[str, Any]] | None = None,
    **migration: Any,
) -> Orchestrator:
    migration.setdefault("poll_interval", 0.2)
    migration.setdefault("post_retry_delay", 0.0)
    settings = Settings(
        migration=dataclasses.replace(MigrationSettings(), **migration),
        hosts=tuple(host_configs(libvirt_hosts, **(per_host or {}))),
    )
    return Orchestrator(db_url, settings=settings)


def toml_hosts(configs: list[HostConfig]) -> str:
    lines = []
    for c in configs:
        lines += ["[[hosts]]", f'name = "{c.name}"', 'driver = "libvirt"']
        for k, v in c.options.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {v}")
        lines.append("")
    return "\n".join(lines)


def running_copies(libvirt_connect: Any, uuid: str) -> dict[str, tuple[int, int]]:
    """Host key -> (state, reason) of every *active* domain with this UUID."""
    import libvirt

    out = {}
    for key in ("A", "B", "C"):
        conn = libvirt_connect(key)
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            out[key] = tuple(dom.state())
    return out
