"""Hostile input, generated: the config loader, the cluster file and ``--set`` never raise anything
but one-line ConfigErrors (or accept the input), and a refused ``ferry migrate`` changes nothing."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from ferry.cli import cli
from ferry.cli.common import parse_overrides
from ferry.config import MigrationSettings, load_settings, parse_settings
from ferry.drivers.simulated.cluster import load_cluster, parse_cluster
from ferry.errors import ConfigError

SECTIONS = ["database", "migration", "simulated", "runner", "scheduler", "jobboard"]
SECTIONS += ["conductor", "limits", "hosts", "bogus"]
KEYS = [f.name for f in MigrationSettings.__dataclass_fields__.values()]
KEYS += ["url", "speed", "cluster", "lease_seconds", "weigher", "groups", "max_jobs"]
KEYS += ["poll_interval", "per_source", "total", "name", "driver", "password", "", "x y"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=12,
)
tables = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6) | values,
    max_size=6,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(exc: ConfigError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


@FUZZ
@given(tables)
def test_settings_from_any_table(data: dict[str, Any]) -> None:
    try:
        s = parse_settings(data, "fuzz.toml")
    except ConfigError as exc:
        one_line(exc)
        return
    for number in (
        s.migration.poll_interval,
        s.migration.post_retry_delay,
        s.simulated.speed,
        s.runner.lease_seconds,
        s.conductor.poll_interval,
        s.scheduler.host_state_ttl,
    ):
        assert math.isfinite(number)
    assert s.migration.poll_interval >= 0.01 and s.conductor.poll_interval >= 0.01


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_config_file_of_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "ferry.toml"
    path.write_bytes(raw)
    try:
        load_settings(path)
    except ConfigError as exc:
        one_line(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(["hosts", "instances", "faults", "x"]), values, max_size=4))
def test_cluster_from_any_table(data: dict[str, Any]) -> None:
    try:
        parse_cluster(data, "fuzz-cluster.toml")
    except ConfigError as exc:
        one_line(exc)


@FUZZ
@given(st.binary(max_size=200))
def test_cluster_file_of_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cluster") / "cluster.toml"
    path.write_bytes(raw)
    try:
        load_cluster(path)
    except ConfigError as exc:
        one_line(exc)


set_items = st.lists(
    st.one_of(
        st.text(alphabet=string.printable, max_size=30),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from(KEYS),
            st.one_of(
                st.sampled_from(["Infinity", "-Infinity", "NaN", "1e308", "1e-9", "-1", "0"]),
                scalars.map(json.dumps),
                st.text(max_size=10),
            ),
        ),
    ),
    max_size=4,
)


@FUZZ
@given(set_items)
def test_set_items_are_settings_or_one_line_errors(items: list[str]) -> None:
    try:
        policy = MigrationSettings().with_overrides(parse_overrides(tuple(items)))
    except ConfigError as exc:
        one_line(exc)
        return
    assert math.isfinite(policy.poll_interval) and policy.poll_interval >= 0.01


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tmp / "ferry.toml"
    cfg.write_text("[simulated]\nspeed = 0\n[migration]\npost_retry_delay = 0\n")
    return {"FERRY_DB": f"sqlite:///{tmp / 'fuzz.db'}", "FERRY_CONFIG": str(cfg)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(set_items.filter(bool))
def test_migrate_with_bad_set_changes_nothing(cli_env: dict[str, str], items: list[str]) -> None:
    try:
        MigrationSettings().with_overrides(parse_overrides(tuple(items)))
    except ConfigError:
        pass
    else:
        return  # a valid policy: not what this test is about
    args = ["migrate", "web-1", "--json"]
    for item in items:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args, env=cli_env, catch_exceptions=False)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    listed = CliRunner().invoke(cli, ["list", "--json"], env=cli_env, catch_exceptions=False)
    assert json.loads(listed.stdout) == []


def test_named_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(
        "[migration]\npoll_interval = inf\npost_retries = 0\n"
        "[conductor]\npoll_interval = 0.000001\n[runner]\nlease_seconds = 1e9\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    text = str(info.value)
    assert "poll_interval must be a finite number" in text
    assert "[conductor]: poll_interval must be 0.01 .. 60" in text
    assert "lease_seconds must be 1 .. 3600" in text
    assert "\n" not in text


def test_every_problem_of_a_section_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"migration": {"post_retries": 0, "poll_interval": 1e-6}})
    assert "post_retries must be 1 .. 100" in str(info.value)
    assert "poll_interval must be 0.01 .. 60" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_settings({"migration": {"bogus": 1, "max_attempts": "x"}, "runner": []})
    text = str(info.value)
    assert "unknown key(s) bogus" in text and "max_attempts must be an integer" in text
    assert "[runner] must be a table" in text


def test_set_without_a_key_names_it() -> None:
    with pytest.raises(ConfigError, match="the key before '=' is missing"):
        parse_overrides(("=5",))


def test_config_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "ferry.toml"
    cfg.write_bytes(b"[migration]\nmax_attempts = 1 # \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_settings(cfg)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "list"], catch_exceptions=False)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
