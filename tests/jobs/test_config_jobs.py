"""[jobboard], [conductor], [limits]: parsing, validation with one-line errors, URL masking; and a
board that cannot be reached (no server needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferry.board_url import parse_board_url, safe_board_url
from ferry.cli import cli
from ferry.config import load_settings, parse_settings
from ferry.errors import ConfigError, JobBoardUnavailable
from ferry.jobs.board import board_url, open_board


def test_sections_parse(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(
        """
[jobboard]
url = "redis://ferry@redis.example:6380/2"
namespace = "prod-ferry"
password_file = "pw"
[conductor]
name = "c-a"
max_jobs = 8
lease_seconds = 10
poll_interval = 0.25
[limits]
per_source = 2
per_destination = 3
total = 10
"""
    )
    s = load_settings(cfg)
    assert s.jobboard.namespace == "prod-ferry"
    assert s.jobboard.password_file == str(tmp_path / "pw")
    assert (s.conductor.name, s.conductor.max_jobs, s.conductor.lease_seconds) == ("c-a", 8, 10.0)
    assert (s.limits.per_source, s.limits.per_destination, s.limits.total) == (2, 3, 10)
    url = board_url(s.jobboard)
    assert (url.hosts, url.db, url.username, url.password) == (
        (("redis.example", 6380),),
        2,
        "ferry",
        "s3cret",
    )
    assert url.safe() == "redis://ferry:***@redis.example:6380/2"
    assert "s3cret" not in repr(url)


def test_defaults() -> None:
    s = parse_settings({})
    assert s.jobboard.url is None
    assert (s.conductor.max_jobs, s.conductor.lease_seconds) == (4, 30.0)
    assert (s.limits.per_source, s.limits.per_destination, s.limits.total) == (1, 2, 0)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"jobboard": {"url": "redis://:pw@h:6379/0"}}, "put no password in the url"),
        ({"jobboard": {"url": "amqp://h"}}, "unsupported job board URL scheme"),
        ({"jobboard": {"url": "redis://h:99999/0"}}, "bad port"),
        ({"jobboard": {"url": "redis://h/x"}}, "must be a number"),
        ({"jobboard": {"url": "redis://h", "bogus": 1}}, "unknown key"),
        ({"jobboard": {"namespace": "a b"}}, "namespace"),
        ({"jobboard": {"password_env": "A", "password_file": "b"}}, "not both"),
        ({"conductor": {"max_jobs": 0}}, "max_jobs"),
        ({"conductor": {"lease_seconds": 0.5}}, "lease_seconds"),
        ({"conductor": {"name": "a:b"}}, "name"),
        ({"conductor": {"poll_interval": 0}}, "poll_interval"),
        ({"limits": {"per_source": -1}}, "per_source"),
        ({"limits": {"total": "many"}}, "must be an integer"),
    ],
)
def test_bad_values_are_one_line_errors(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "ferry.toml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("ferry.toml")
    assert "\n" not in str(err.value)
    assert "pw@" not in str(err.value)


def test_urls() -> None:
    zk = parse_board_url("zookeeper://zk1:2181,zk2,[::1]:2182/ferry/jobs")
    assert zk.kind == "zookeeper"
    assert zk.hosts == (("zk1", 2181), ("zk2", 2181), ("::1", 2182))
    assert zk.path == "/ferry/jobs"
    assert zk.safe() == "zookeeper://zk1:2181,zk2:2181,[::1]:2182/ferry/jobs"
    assert safe_board_url("rediss://u:p%40ss@h/3") == "rediss://u:***@h:6379/3"
    assert parse_board_url("rediss://u:p%40ss@h/3").password == "p@ss"
    assert safe_board_url("nonsense") == "<invalid job board URL>"


def test_password_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_settings({"jobboard": {"url": "redis://h", "password_env": "FERRY_T_PW"}})
    monkeypatch.delenv("FERRY_T_PW", raising=False)
    with pytest.raises(ConfigError, match="FERRY_T_PW named by password_env is not set"):
        board_url(s.jobboard)
    monkeypatch.setenv("FERRY_T_PW", "hunter2")
    assert board_url(s.jobboard).password == "hunter2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_board_names_the_url_without_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("FERRY_T_PW", "hunter2")
    settings = parse_settings(
        {"jobboard": {"url": f"redis://ops@127.0.0.1:{port}/0", "password_env": "FERRY_T_PW"}}
    )
    with pytest.raises(JobBoardUnavailable) as err:
        open_board(settings.jobboard, "t", timeout=2)
    assert f"redis://ops:***@127.0.0.1:{port}/0" in str(err.value)
    assert "hunter2" not in str(err.value)

    cfg = tmp_path / "ferry.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "f.db"}"
[simulated]
speed = 0
[jobboard]
url = "redis://ops@127.0.0.1:{port}/0"
password_env = "FERRY_T_PW"
"""
    )
    runner = CliRunner()
    for args in (["submit", "web-1"], ["jobs"], ["conductor"]):
        result = runner.invoke(cli, ["--config", str(cfg), *args])
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith("ferry: error: cannot reach the job board redis://ops:***@")
        assert "hunter2" not in result.output
    # nothing was created by the refused submit
    listed = runner.invoke(cli, ["--config", str(cfg), "list", "--json"])
    assert listed.exit_code == 0 and listed.output.strip() == "[]"


def test_no_board_configured(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'f.db'}", "submit", "web-1"])
    assert result.exit_code == 2
    assert "no job board is configured" in result.output
