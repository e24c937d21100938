"""One libvirt connection per host, opened lazily and reopened when it drops.

``libvirt`` (libvirt-python, the ``ferry[libvirt]`` extra) is imported here and only here, the
first time a connection is needed, so ``import ferry`` works without libvirt's C library.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ferry.errors import ConfigError
from ferry.secrets import SecretRef

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_libvirt: Any = None


def libvirt_module() -> Any:
    """The ``libvirt`` module, or a ConfigError naming the extra to install."""
    global _libvirt
    if _libvirt is None:
        try:
            import libvirt  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                "the libvirt driver needs libvirt-python: pip install 'ferry[libvirt]' "
                f"(it builds against libvirt's headers: apt-get install libvirt-dev pkg-config) "
                f"[{exc}]"
            ) from None
        # libvirt prints every error to stderr by default; ferry reports them itself
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _libvirt = libvirt
    return _libvirt


_events_lock = threading.Lock()
_events_running: bool | None = None  # None: not tried yet


def event_loop() -> bool:
    """Make sure libvirt's event loop runs in this process (once; a daemon thread running
    ``virEventRunDefaultImpl``) and say whether it does. ferry needs it for one thing: the
    source's job-completed event, the only place libvirt reports a post-copy migration's
    downtime. Connections opened before the loop started get no events; the driver registers
    for them on the connection it opens for each transfer. An application that registered its
    own loop first keeps it (libvirt ignores a second registration) and must run it."""
    global _events_running
    with _events_lock:
        if _events_running is None:
            libvirt = libvirt_module()
            try:
                libvirt.virEventRegisterDefaultImpl()
            except libvirt.libvirtError as exc:
                LOG.warning("libvirt's event loop could not be started: %s", message(exc))
                _events_running = False
                return False
            threading.Thread(target=_run_events, name="ferry-libvirt-events", daemon=True).start()
            _events_running = True
        return _events_running


def _run_events() -> None:
    libvirt = libvirt_module()
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception as exc:  # pragma: no cover - libvirt's loop does not fail in practice
            LOG.warning("libvirt's event loop: %s", _exc_text(exc))
            threading.Event().wait(0.1)


def _exc_text(exc: BaseException) -> str:
    return message(exc) if hasattr(exc, "get_error_message") else f"{type(exc).__name__}: {exc}"


def redact_uri(uri: str) -> str:
    """A libvirt URI fit for logs: no password in the authority or the query."""
    uri = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", uri)
    return re.sub(r"((?:password|passwd|secret)=)[^&]*", r"\1***", uri, flags=re.IGNORECASE)


@dataclass(frozen=True)
class HostSpec:
    """A libvirt host from the config (``[[hosts]]`` with ``driver = "libvirt"``).

    ``uri`` is what ferry connects to; ``peer_uri`` is what the *source* libvirtd connects to for a
    peer-to-peer migration (default: ``uri``; set it when ferry reaches the host by a unix socket
    or an SSH tunnel the hosts themselves cannot use); ``migration_uri`` optionally names the
    address of the migration data stream (``tcp://10.0.0.2``). ``instances_path`` is the
    directory holding instance directories (shared between hosts or not -- detected, not
    configured). ``reserved_host_memory_mb`` is kept free for the host (Nova's option).
    """

    name: str
    uri: str
    peer_uri: str | None = None
    migration_uri: str | None = None
    instances_path: str = "/var/lib/ferry/instances"
    reserved_host_memory_mb: int = 512
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    enabled: bool = True
    tls_cert_dir: str = "/etc/pki/qemu"
    addresses: tuple[str, ...] = ()

    KEYS = (
        "uri",
        "peer_uri",
        "migration_uri",
        "instances_path",
        "reserved_host_memory_mb",
        "username",
        "password_env",
        "password_file",
        "enabled",
        "tls_cert_dir",
        "addresses",
    )

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> HostSpec:
        where = f"host {name!r} (libvirt)"
        unknown = sorted(set(options) - set(cls.KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        uri = options.get("uri")
        if not isinstance(uri, str) or not uri:
            raise ConfigError(f"{where}: needs uri (e.g. qemu+tcp://{name}/system)")
        for key in ("peer_uri", "migration_uri", "instances_path", "username", "tls_cert_dir"):
            if key in options and not isinstance(options[key], str):
                raise ConfigError(f"{where}: {key} must be a string")
        reserved = options.get("reserved_host_memory_mb", 512)
        if isinstance(reserved, bool) or not isinstance(reserved, int) or reserved < 0:
            raise ConfigError(f"{where}: reserved_host_memory_mb must be an integer >= 0")
        SecretRef(options.get("password_env"), options.get("password_file")).validate(where)
        enabled = options.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}: enabled must be true or false")
        path = options.get("instances_path", cls.instances_path)
        if not path.startswith("/"):
            raise ConfigError(f"{where}: instances_path must be absolute")
        if not options.get("tls_cert_dir", "/").startswith("/"):
            raise ConfigError(f"{where}: tls_cert_dir must be absolute")
        addresses = options.get("addresses", [])
        if not isinstance(addresses, list) or not all(is_ip(a) for a in addresses):
            raise ConfigError(f"{where}: addresses must be a list of IP addresses")
        return cls(
            name=name,
            uri=uri,
            peer_uri=options.get("peer_uri"),
            migration_uri=options.get("migration_uri"),
            instances_path=path.rstrip("/") or "/",
            reserved_host_memory_mb=reserved,
            username=options.get("username"),
            password_env=options.get("password_env"),
            password_file=options.get("password_file"),
            enabled=enabled,
            tls_cert_dir=options.get("tls_cert_dir", cls.tls_cert_dir),
            addresses=tuple(addresses),
        )

    def password(self) -> str | None:
        """The SASL password, read when a connection opens (never stored by ferry)."""
        return SecretRef(self.password_env, self.password_file).read(f"host {self.name!r}")


def is_ip(value: Any) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (as text)."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Unreachable(Exception):
    """The host's libvirtd cannot be reached (message already redacted)."""


class HostConnection:
    """A libvirt connection to one host: opened on first use, reopened after a drop.

    :meth:`call` runs a function with the connection and retries it once on a fresh connection
    when the failure was the connection itself (daemon restarted, socket reset).
    """

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self._conn: Any = None
        self._lock = threading.Lock()

    def open_new(self) -> Any:
        """A new connection of its own (the caller closes it)."""
        libvirt = libvirt_module()
        try:
            if self.spec.username or self.spec.password_env or self.spec.password_file:
                return libvirt.openAuth(self.spec.uri, self._auth(libvirt), 0)
            return libvirt.open(self.spec.uri)
        except libvirt.libvirtError as exc:
            raise Unreachable(
                f"cannot connect to {redact_uri(self.spec.uri)}: {message(exc)}"
            ) from None

    def _auth(self, libvirt: Any) -> list[Any]:
        spec = self.spec

        def answer(creds: list[list[Any]], _opaque: Any) -> int:
            for cred in creds:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = spec.username or ""
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                    cred[4] = spec.password() or ""
                else:
                    return -1
            return 0

        return [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]

    def get(self) -> Any:
        libvirt = libvirt_module()
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive() == 1:
                        return self._conn
                except libvirt.libvirtError as exc:
                    LOG.debug("host %s: connection is dead: %s", self.spec.name, message(exc))
                self._drop_locked()
            self._conn = self.open_new()
            return self._conn

    def drop(self) -> None:
        """Forget the connection (the next call opens a new one)."""
        with self._lock:
            self._drop_locked()

    def _drop_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            libvirt = libvirt_module()
            try:
                conn.close()
            except libvirt.libvirtError as exc:
                LOG.debug("host %s: closing the connection: %s", self.spec.name, message(exc))

    def call(self, fn: Callable[[Any], T]) -> T:
        libvirt = libvirt_module()
        for attempt in (1, 2):
            conn = self.get()
            try:
                return fn(conn)
            except libvirt.libvirtError as exc:
                if attempt == 2 or not is_connection_error(exc):
                    raise
                LOG.warning(
                    "host %s: connection lost (%s); reconnecting", self.spec.name, message(exc)
                )
                self.drop()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.drop()


def message(exc: BaseException) -> str:
    """libvirt's message without its doubled prefixes."""
    get = getattr(exc, "get_error_message", None)
    text = (get() if get else None) or str(exc)
    return text.strip()


def error_code(exc: BaseException) -> int | None:
    get = getattr(exc, "get_error_code", None)
    return get() if get else None


def is_connection_error(exc: BaseException) -> bool:
    libvirt = libvirt_module()
    code = error_code(exc)
    domain = getattr(exc, "get_error_domain", lambda: None)()
    return code in (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
    ) or domain in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
