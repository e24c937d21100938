"""The ``[libvirt]`` transport options: parsing, their checks (every problem at once), the
per-run overrides, and the ``migrateToURI3`` flags and parameters they become."""

from __future__ import annotations

import pytest

from ferry.config import MigrationSettings, parse_settings
from ferry.errors import ConfigError
from ferry.transport import Transport


def test_libvirt_section_sets_the_transport() -> None:
    s = parse_settings(
        {
            "migration": {"live_migration_bandwidth": 100},
            "libvirt": {
                "tls": True,
                "parallel_connections": 4,
                "compression": "zstd",
                "compression_level": 3,
                "migration_network": "10.0.0.0/24",
            },
        }
    )
    assert s.migration.live_migration_bandwidth == 100
    assert Transport.of(s.migration) == Transport(True, 4, "zstd", 3, "10.0.0.0/24")
    assert Transport.of(MigrationSettings()).plain


def test_every_problem_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(
            {
                "libvirt": {
                    "parallel_connections": 256,
                    "compression": "lz4",
                    "migration_network": "ten/8",
                }
            }
        )
    text = str(info.value)
    assert "parallel_connections must be 0 (one stream) .. 255" in text
    assert "compression must be one of none, zstd, zlib, xbzrle" in text
    assert "migration_network must be a network like 10.0.0.0/24, not 'ten/8'" in text


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"compression": "zstd"}, "zstd is multifd compression: it needs parallel_connections"),
        ({"compression": "zlib", "parallel_connections": 2, "compression_level": 10}, "9 for zlib"),
        (
            {"compression": "zstd", "parallel_connections": 2, "compression_level": 21},
            "20 for zstd",
        ),
        ({"compression": "xbzrle", "compression_level": 1}, "xbzrle takes no compression_level"),
        ({"tls": "yes"}, "tls must be true or false"),
        ({"bogus": 1}, "[libvirt] takes only tls, parallel_connections"),
    ],
)
def test_refused_combinations(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"libvirt": table})
    assert fragment in str(info.value)


def test_per_run_overrides() -> None:
    policy = MigrationSettings().with_overrides({"tls": True, "parallel_connections": 8})
    assert (policy.tls, policy.parallel_connections) == (True, 8)
    with pytest.raises(ConfigError, match="needs parallel_connections"):
        MigrationSettings().with_overrides({"compression": "zlib"})
    stored = MigrationSettings.from_store({"tls": True, "unknown_later_key": 1})
    assert stored.tls is True


def test_flags_and_params() -> None:
    libvirt = pytest.importorskip("libvirt")
    from ferry.drivers.libvirt.transport import flags_and_params

    assert flags_and_params({}) == (0, {})
    settled = {
        **Transport(True, 4, "zstd", 5, "10.0.0.0/24").to_dict(),
        "migration_uri": "tcp://10.0.0.2",
        "listen_address": "10.0.0.2",
    }
    flags, params = flags_and_params({"transport": settled})
    assert flags == libvirt.VIR_MIGRATE_TLS | libvirt.VIR_MIGRATE_PARALLEL | (
        libvirt.VIR_MIGRATE_COMPRESSED
    )
    assert params == {
        "parallel.connections": 4,
        "compression": "zstd",
        "compression.zstd.level": 5,
        "migrate_uri": "tcp://10.0.0.2",
        "listen_address": "10.0.0.2",
    }
