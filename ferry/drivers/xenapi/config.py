"""``[[hosts]]`` entries with ``driver = "xenapi"`` -> validated pool and host settings.

One entry per ferry host::

    [[hosts]]
    name = "xs-a1"                       # ferry's name for the host
    driver = "xenapi"
    url = "https://pool-a-master.example"  # the pool master (every host of a pool names it)
    username = "root"
    password_env = "FERRY_POOL_A_PASSWORD"  # or: password_file = "/etc/ferry/pool-a.secret"
    verify_tls = true                    # default; false accepts any certificate
    ca_file = "/etc/ferry/pool-a-ca.pem" # optional: CA bundle that signed the master's cert
    host = "xenserver-a1"                # optional: the XAPI name_label when it differs
    pool = "pool-a"                      # optional, informational: the XAPI pool's name
    timeout = 60                         # optional: seconds per XAPI call

Hosts naming the same ``url`` share one session and must agree on the credentials and TLS
settings. The password itself is never part of the configuration: it is read from the
environment variable or the file each time the driver logs in, and kept in process memory only.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.config import HostConfig
from ferry.errors import ConfigError
from ferry.secrets import SecretRef

#: the keys an ``[[hosts]]`` entry of the xenapi driver may carry (besides name and driver)
OPTION_KEYS = frozenset(
    {
        "url",
        "username",
        "password_env",
        "password_file",
        "verify_tls",
        "ca_file",
        "host",
        "pool",
        "timeout",
    }
)
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PoolConfig:
    """How to reach one pool master. Holds where the password is, never the password."""

    url: str
    username: str
    password_env: str | None = None
    password_file: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def secret(self) -> SecretRef:
        return SecretRef(self.password_env, self.password_file)

    @property
    def password_source(self) -> str:
        """Where the password is read from, for messages (never the password)."""
        return self.secret.describe()

    def read_password(self) -> str:
        """The password, read now from the environment or the file (its first line).

        :raises ConfigError: the variable is unset or empty, the file is missing, unreadable or
            empty. The message names where the password should be, never its value.
        """
        value = self.secret.read(f"xenapi pool {self.url}")
        assert value is not None  # parse_hosts requires one of the two
        return value


@dataclass(frozen=True)
class XenHost:
    """One ferry host served by the xenapi driver."""

    name: str
    #: the host's ``name_label`` in XAPI
    label: str
    pool: PoolConfig


def parse_hosts(configs: Iterable[HostConfig], base_dir: Path | None = None) -> list[XenHost]:
    """Validate the xenapi ``[[hosts]]`` entries (see the module doc).

    ``base_dir`` resolves relative ``password_file`` / ``ca_file`` paths (the config file's
    directory); the current directory when ``None``.

    :raises ConfigError: unknown or missing keys, wrong types, a bad URL, both or neither of
        ``password_env`` / ``password_file``, two hosts of one pool with different settings, or
        two entries for the same XAPI host.
    """
    hosts: list[XenHost] = []
    pools: dict[str, tuple[str, PoolConfig]] = {}
    labels: dict[tuple[str, str], str] = {}
    for cfg in configs:
        if cfg.driver != "xenapi":
            raise ConfigError(f"host {cfg.name!r}: driver is {cfg.driver!r}, not 'xenapi'")
        pool, label = _parse_one(cfg, base_dir)
        first = pools.get(pool.url)
        if first is None:
            pools[pool.url] = (cfg.name, pool)
        elif first[1] != pool:
            diff = sorted(
                k for k in vars(pool) if k != "url" and getattr(pool, k) != getattr(first[1], k)
            )
            raise ConfigError(
                f"hosts {first[0]!r} and {cfg.name!r} name the same pool master {pool.url} but "
                f"differ in {', '.join(diff)}; the hosts of one pool share one session"
            )
        other = labels.get((pool.url, label))
        if other is not None:
            raise ConfigError(
                f"hosts {other!r} and {cfg.name!r} both name the XAPI host {label!r} "
                f"of the pool at {pool.url}"
            )
        labels[(pool.url, label)] = cfg.name
        hosts.append(XenHost(name=cfg.name, label=label, pool=pools[pool.url][1]))
    return hosts


def _parse_one(cfg: HostConfig, base_dir: Path | None) -> tuple[PoolConfig, str]:
    where = f"host {cfg.name!r} (driver xenapi)"
    opts: dict[str, Any] = dict(cfg.options)
    unknown = sorted(set(opts) - OPTION_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_KEYS))}"
        )
    url = _string(opts, "url", where, required=True)
    username = _string(opts, "username", where, required=True)
    password_env = _string(opts, "password_env", where)
    password_file = _string(opts, "password_file", where)
    ca_file = _string(opts, "ca_file", where)
    label = _string(opts, "host", where) or cfg.name
    _string(opts, "pool", where)  # informational only
    verify = opts.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{where}: verify_tls must be true or false, not {verify!r}")
    timeout = opts.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"{where}: timeout must be a number of seconds > 0, not {timeout!r}")
    SecretRef(password_env, password_file).validate(where, required=True)
    assert url is not None and username is not None
    url = _check_url(url, verify, where)
    if ca_file is not None and not verify:
        raise ConfigError(f"{where}: ca_file is set but verify_tls = false ignores it")
    pool = PoolConfig(
        url=url,
        username=username,
        password_env=password_env,
        password_file=_resolve(password_file, base_dir),
        verify_tls=verify,
        ca_file=_resolve(ca_file, base_dir),
        timeout=float(timeout),
    )
    return pool, label


def _string(opts: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = opts.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: {key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _resolve(path: str | None, base_dir: Path | None) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p)


def _check_url(url: str, verify_tls: bool, where: str) -> str:
    """Normalised ``scheme://host[:port][/path]``. Plain ``http://`` is accepted for a
    loopback address (a local simulator or a tunnel) or with ``verify_tls = false``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where}: url must be https://HOST[:PORT] (the pool master), not {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{where}: url must not carry credentials; use username and password_env/password_file"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: url must not have a query or a fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{where}: url has an invalid port") from None
    if parts.scheme == "http" and verify_tls and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{where}: url {url!r} is unencrypted http; use https:// (or set verify_tls = false "
            "to accept an unverified, unencrypted connection)"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
