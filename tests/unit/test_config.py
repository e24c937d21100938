from pathlib import Path

import pytest

from ferry.config import MigrationSettings, load_settings, parse_settings
from ferry.errors import ConfigError


def test_defaults_are_novas() -> None:
    s = load_settings(None)
    m = s.migration
    assert (
        m.live_migration_downtime,
        m.live_migration_downtime_steps,
        m.live_migration_downtime_delay,
    ) == (500, 10, 75)
    assert m.live_migration_completion_timeout == 800
    assert m.live_migration_timeout_action == "abort"
    assert m.max_attempts == 0


def test_full_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(
        """
[database]
url = "sqlite:///x.db"
[migration]
max_attempts = 2
live_migration_downtime = 800
[simulated]
cluster = "cluster.toml"
speed = 0
[runner]
lease_seconds = 10
[[hosts]]
name = "compute-a"
driver = "libvirt"
uri = "qemu+tcp://compute-a/system"
"""
    )
    s = load_settings(cfg)
    assert s.database_url == "sqlite:///x.db"
    assert s.migration.max_attempts == 2
    assert s.migration.live_migration_downtime == 800
    assert s.simulated.cluster == str(tmp_path / "cluster.toml")
    assert s.simulated.speed == 0.0
    assert s.runner.lease_seconds == 10
    assert s.hosts[0].name == "compute-a" and s.hosts[0].options["uri"].startswith("qemu+tcp")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[migration]\nmax_attempts = -1", "max_attempts"),
        ("[migration]\nbogus = 1", "unknown key"),
        ("[nope]\n", "unknown section"),
        ("[migration]\nlive_migration_timeout_action = 'explode'", "live_migration_timeout_action"),
        ("[migration]\nlive_migration_downtime = 'fast'", "must be an integer"),
        ("[migration]\nlive_migration_auto_converge_initial = 100", "0 (hypervisor default) .. 99"),
        ("[migration]\nlive_migration_auto_converge_increment = -5", "0 (hypervisor default) .."),
        ("[[hosts]]\nname = 'a'\ndriver = 'vmware'", "driver must be one of"),
        ("[[hosts]]\nname = 'a'\ndriver = 'xenapi'\npassword = 'hunter2'", "no password"),
        ("[migration\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/ferry.toml")


def test_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text("[migration]\nmax_attempts = 3\n")
    monkeypatch.setenv("FERRY_CONFIG", str(cfg))
    assert load_settings().migration.max_attempts == 3


def test_overrides_validated() -> None:
    m = MigrationSettings()
    assert m.with_overrides({"live_migration_downtime": 900}).live_migration_downtime == 900
    with pytest.raises(ConfigError):
        m.with_overrides({"live_migration_downtime": 1})
    with pytest.raises(ConfigError):
        m.with_overrides({"no_such": 1})


def test_parse_settings_hosts_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_settings(
            {"hosts": [{"name": "a", "driver": "libvirt"}, {"name": "a", "driver": "libvirt"}]}
        )
