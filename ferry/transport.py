"""How guest memory crosses the network: the ``[libvirt]`` transport options (native TLS,
parallel connections, compression, a dedicated migration network).

They are per-migration settings like ``[migration]``'s (``--set tls=true`` overrides them for one
run) and are kept in :class:`~ferry.config.MigrationSettings`; this module holds their names,
their checks and :class:`Transport`, the plain value the libvirt driver is handed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

#: the ``[libvirt]`` keys (also accepted as ``--set KEY=VALUE``)
TRANSPORT_KEYS = (
    "tls",
    "parallel_connections",
    "compression",
    "compression_level",
    "migration_network",
)
#: compression methods; the multifd ones (zlib, zstd) need parallel connections
COMPRESSIONS = ("none", "zstd", "zlib", "xbzrle")
MULTIFD_COMPRESSIONS = ("zstd", "zlib")
#: the levels QEMU takes (multifd-zlib-level, multifd-zstd-level); 0 = QEMU's default
LEVELS = {"zlib": 9, "zstd": 20}
MAX_PARALLEL = 255


@dataclass(frozen=True)
class Transport:
    """The transport of one migration. ``parallel_connections`` 0 = one classic stream;
    ``compression_level`` 0 = QEMU's default; ``migration_network`` a CIDR or None."""

    tls: bool = False
    parallel_connections: int = 0
    compression: str = "none"
    compression_level: int = 0
    migration_network: str | None = None

    @classmethod
    def of(cls, settings: Any) -> Transport:
        """The transport of a :class:`~ferry.config.MigrationSettings` (or anything with the
        same attributes)."""
        return cls(**{k: getattr(settings, k) for k in TRANSPORT_KEYS})

    @property
    def plain(self) -> bool:
        return self == Transport()

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TRANSPORT_KEYS}


def transport_checks(t: Any) -> list[tuple[bool, str]]:
    """(ok, message) pairs for the transport options of ``t`` (a MigrationSettings)."""
    checks = [
        (
            0 <= t.parallel_connections <= MAX_PARALLEL,
            f"parallel_connections must be 0 (one stream) .. {MAX_PARALLEL}",
        ),
        (t.compression in COMPRESSIONS, f"compression must be one of {', '.join(COMPRESSIONS)}"),
    ]
    if t.compression in MULTIFD_COMPRESSIONS:
        top = LEVELS[t.compression]
        checks += [
            (
                t.parallel_connections >= 1,
                f"compression {t.compression} is multifd compression: it needs "
                "parallel_connections >= 1",
            ),
            (
                0 <= t.compression_level <= top,
                f"compression_level must be 0 (QEMU's default) .. {top} for {t.compression}",
            ),
        ]
    elif t.compression in COMPRESSIONS:
        checks.append(
            (
                t.compression_level == 0,
                f"compression {t.compression} takes no compression_level (leave it 0)",
            )
        )
    if t.migration_network is not None:
        checks.append((network_of(t.migration_network) is not None, _network_message(t)))
    return checks


def network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of ``cidr`` ("10.0.0.0/24"; host bits allowed), or None when it is none."""
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def _network_message(t: Any) -> str:
    return f"migration_network must be a network like 10.0.0.0/24, not {t.migration_network!r}"
