"""The one secret reader (:class:`ferry.secrets.SecretRef`) and the three places that use it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferry.config import HostConfig, parse_settings
from ferry.drivers.libvirt import HostSpec
from ferry.drivers.xenapi import parse_hosts
from ferry.errors import ConfigError
from ferry.secrets import SecretRef

SECRET = "hunter2-not-in-messages"


def test_env_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_T_SECRET", SECRET)
    ref = SecretRef(env="FERRY_T_SECRET")
    assert ref.read("here") == SECRET
    assert ref.describe() == "environment variable FERRY_T_SECRET (password_env)"


@pytest.mark.parametrize("value", [None, ""])
def test_env_unset_or_empty(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("FERRY_T_SECRET", raising=False)
    else:
        monkeypatch.setenv("FERRY_T_SECRET", value)
    with pytest.raises(ConfigError) as err:
        SecretRef(env="FERRY_T_SECRET").read("[jobboard]")
    assert str(err.value) == (
        "[jobboard]: the environment variable FERRY_T_SECRET named by password_env "
        "is not set or empty"
    )


def test_file_first_line(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(f"  {SECRET}  \nsecond line ignored\n")
    ref = SecretRef(file=str(f))
    assert ref.read("here") == SECRET
    assert ref.describe() == f"file {f} (password_file)"


def test_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^here: password_file .*nope does not exist$"):
        SecretRef(file=str(tmp_path / "nope")).read("here")


def test_file_unreadable(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(SECRET)
    f.chmod(0)
    if os.access(f, os.R_OK):  # root reads anything: a directory cannot be read as a file
        f = tmp_path
    with pytest.raises(ConfigError, match=r"^here: password_file .* cannot be read: ") as err:
        SecretRef(file=str(f)).read("here")
    assert SECRET not in str(err.value)


def test_file_not_text_or_empty(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read: not UTF-8 text"):
        SecretRef(file=str(binary)).read("here")
    empty = tmp_path / "empty"
    empty.write_text("\nsecret on the second line\n")
    with pytest.raises(ConfigError, match=r"password_file .*empty is empty"):
        SecretRef(file=str(empty)).read("here")


def test_file_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pw").write_text(SECRET)
    assert SecretRef(file="~/pw").read("here") == SECRET


def test_neither_given_reads_none() -> None:
    ref = SecretRef()
    assert not ref.given
    assert ref.read("here") is None
    ref.validate("here")  # optional: fine


def test_both_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SecretRef(env="A", file="b")
    with pytest.raises(ConfigError, match=r"^here: give password_env or password_file, not both$"):
        ref.validate("here")
    with pytest.raises(ConfigError, match=r"^here: set exactly one of password_env"):
        ref.validate("here", required=True)
    with pytest.raises(ConfigError, match=r"^here: set exactly one of password_env"):
        SecretRef().validate("here", required=True)
    monkeypatch.setenv("A", SECRET)
    assert ref.read("here") == SECRET  # validated before; the variable wins if not


def test_the_three_users_read_through_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job board, a libvirt host and a XenAPI pool: same rules, their own prefix, and
    relative files resolved against the config file's directory where they were before."""
    monkeypatch.delenv("FERRY_T_SECRET", raising=False)
    (tmp_path / "pw").write_text(SECRET + "\n")
    board = parse_settings(
        {"jobboard": {"url": "redis://h", "password_file": "pw"}}, base_dir=tmp_path
    ).jobboard
    assert board.password() == SECRET
    env_board = parse_settings({"jobboard": {"password_env": "FERRY_T_SECRET"}}).jobboard
    with pytest.raises(ConfigError, match=r"^\[jobboard\]: the environment variable"):
        env_board.password()
    spec = HostSpec.from_options("a", {"uri": "qemu:///system", "password_env": "FERRY_T_SECRET"})
    with pytest.raises(ConfigError, match=r"^host 'a': the environment variable FERRY_T_SECRET"):
        spec.password()
    with pytest.raises(ConfigError, match="not both"):
        HostSpec.from_options(
            "a", {"uri": "qemu:///system", "password_env": "X", "password_file": "y"}
        )
    (xen,) = parse_hosts(
        [
            HostConfig(
                "x",
                "xenapi",
                {"url": "https://pool.example", "username": "root", "password_file": "pw"},
            )
        ],
        base_dir=tmp_path,
    )
    assert xen.pool.read_password() == SECRET
    assert xen.pool.password_source == f"file {tmp_path / 'pw'} (password_file)"
