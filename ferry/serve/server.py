"""Serving ``ferry serve``: the listen address and its safety checks, TLS, the workers and the
recovery of unfinished migrations at start."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from typing import Any

from werkzeug.serving import make_server

from ferry import errors
from ferry.api import Orchestrator
from ferry.serve.app import create_service_app
from ferry.serve.tokens import TokenStore
from ferry.serve.workers import Workers

LOG = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise errors.ConfigError(f"--listen expects HOST:PORT, got {listen!r}")
    return host, int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, *, tls: bool, has_tokens: bool, insecure: bool) -> None:
    """Refuse (ConfigError, one line) to listen beyond loopback without TLS or without any
    token, unless ``insecure``."""
    if is_loopback(host) or insecure:
        return
    if not tls:
        raise errors.ConfigError(
            f"refusing to listen on {host} without TLS (--tls-cert/--tls-key); "
            "--insecure to do it anyway"
        )
    if not has_tokens:
        raise errors.ConfigError(
            f"refusing to listen on {host} with no API token (ferry token create); "
            "--insecure to do it anyway"
        )


class ServiceServer:
    """The service on ``listen`` (port 0 picks a free one), served by threads."""

    def __init__(
        self,
        orch: Orchestrator,
        listen: str = DEFAULT_LISTEN,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        insecure: bool = False,
        workers: int | None = None,
        refresh_seconds: float = 1.0,
        poll_seconds: float = 0.5,
        recover: bool = True,
    ) -> None:
        host, port = parse_listen(listen)
        if (tls_cert is None) != (tls_key is None):
            raise errors.ConfigError("give both --tls-cert and --tls-key")
        self.orch = orch
        self.tokens = TokenStore(orch.db)
        check_listen(
            host, tls=tls_cert is not None, has_tokens=self.tokens.any_active(), insecure=insecure
        )
        ssl_context: Any = None
        if tls_cert is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_context.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise errors.ConfigError(f"cannot load the TLS certificate: {exc}") from None
        self.stopping = threading.Event()
        self.workers = Workers(orch, workers)
        self.app = create_service_app(
            orch,
            self.workers,
            tokens=self.tokens,
            pages_open=is_loopback(host),
            refresh_seconds=refresh_seconds,
            poll_seconds=poll_seconds,
            stopping=self.stopping,
        )
        self.host = host
        self.scheme = "https" if ssl_context is not None else "http"
        try:
            # bound here: werkzeug prints and exits on a bind error, ferry says it in one line
            sock = socket.create_server((host, port), family=_family(host), backlog=128)
        except OSError as exc:
            self.workers.close()
            raise errors.ConfigError(f"cannot listen on {listen}: {exc.strerror}") from None
        with sock:
            self._server: Any = make_server(
                host, port, self.app, threaded=True, ssl_context=ssl_context, fd=sock.fileno()
            )
        self.port: int = self._server.port
        self._thread: threading.Thread | None = None
        self.recovered = self.workers.recover() if recover else []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> ServiceServer:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="ferry-serve", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.stopping.set()  # event streams end
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
        self.workers.close()

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
