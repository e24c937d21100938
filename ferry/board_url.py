"""Job board URLs: ``redis://[user@]host[:port][/db]`` (``rediss://`` for TLS) or
``zookeeper://host[:port][,host[:port]...][/path]``. Parsed without importing a client library, so
the configuration (which validates them) can import this module; passwords are masked whenever a
URL is shown. TaskFlow's board configuration for one is :func:`ferry.jobs.url.board_conf`."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from ferry.errors import ConfigError

REDIS_SCHEMES = ("redis", "rediss")
ZOOKEEPER_SCHEMES = ("zookeeper", "zk")
SCHEMES = REDIS_SCHEMES + ZOOKEEPER_SCHEMES
DEFAULT_REDIS_PORT = 6379
DEFAULT_ZOOKEEPER_PORT = 2181
DEFAULT_ZOOKEEPER_PATH = "/ferry/jobs"


@dataclass(frozen=True)
class BoardURL:
    """A parsed job board URL. ``password`` is never part of :meth:`safe`."""

    kind: str  # "redis" or "zookeeper"
    scheme: str
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    path: str = DEFAULT_ZOOKEEPER_PATH
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def safe(self) -> str:
        """The URL for messages and logs: any password replaced by ``***``."""
        hosts = ",".join(f"{host_text(h)}:{p}" for h, p in self.hosts)
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        tail = f"/{self.db}" if self.kind == "redis" else self.path
        return f"{self.scheme}://{auth}{hosts}{tail}"

    def with_password(self, password: str | None) -> BoardURL:
        return BoardURL(
            self.kind,
            self.scheme,
            self.hosts,
            self.db,
            self.path,
            self.username,
            password,
            dict(self.query),
        )

    def __str__(self) -> str:
        return self.safe()


def host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def safe_board_url(url: str) -> str:
    """``url`` with any password masked; never raises (an unparsable URL is not echoed)."""
    try:
        return parse_board_url(url).safe()
    except ConfigError:
        return "<invalid job board URL>"


def parse_board_url(url: str) -> BoardURL:
    """Parse and validate a board URL. Raises :class:`ConfigError` (without the password)."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            "the job board URL must look like redis://HOST:PORT/DB or zookeeper://HOST:PORT/PATH"
        )
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unsupported job board URL scheme {scheme!r}; use redis://, rediss:// or zookeeper://"
        )
    netloc, slash, tail = rest.partition("/")
    path_part, _, query_text = (slash + tail).partition("?")
    auth, at, hostpart = netloc.rpartition("@")
    if not at:
        auth, hostpart = "", netloc
    username: str | None = None
    password: str | None = None
    if auth:
        user, colon, pw = auth.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(pw) if colon else None
    kind = "redis" if scheme in REDIS_SCHEMES else "zookeeper"
    default_port = DEFAULT_REDIS_PORT if kind == "redis" else DEFAULT_ZOOKEEPER_PORT
    hosts = tuple(_parse_host(h, default_port) for h in hostpart.split(",") if h)
    if not hosts:
        raise ConfigError(f"the job board URL {scheme}://... names no host")
    if kind == "redis" and len(hosts) > 1:
        raise ConfigError("a redis:// job board URL takes one host")
    query = {k: v for k, v in urllib.parse.parse_qsl(query_text, keep_blank_values=True)}
    db = 0
    path = DEFAULT_ZOOKEEPER_PATH
    if kind == "redis":
        db_text = path_part.strip("/")
        if db_text:
            if not db_text.isdigit():
                raise ConfigError(f"the redis job board database must be a number, not {db_text!r}")
            db = int(db_text)
    elif path_part.strip("/"):
        path = "/" + path_part.strip("/")
    return BoardURL(kind, scheme, hosts, db, path, username, password, query)


def _parse_host(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [ipv6]:port
        host, _, port_text = text[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError("the job board URL has an empty host name")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"the job board URL has a bad port {port_text!r}")
    return host, int(port_text)
