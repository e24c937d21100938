"""One XAPI session per pool master, used through the PyPI ``XenAPI`` SDK.

* The SDK is imported here, on first use, through :func:`load_sdk` (it has no type stubs: it is
  ``Any`` to mypy). Missing, it is a :class:`~ferry.errors.ConfigError` naming the extra.
* The login is lazy and repeated whenever the session was lost: the SDK itself logs in again on
  ``SESSION_INVALID`` (it keeps the login parameters in memory); a transport error or an
  exhausted re-login drops the session so that the next call starts a fresh one.
* TLS is verified (the system CAs, or ``ca_file``) unless the pool says ``verify_tls = false``.
  Every call has a timeout.
* The SDK's session object is not thread-safe: calls to one pool are serialised by a lock.
* Nothing here logs or returns a secret: the password is read when logging in, the session ref
  and the password are registered with the driver's :class:`~.faults.Redactor`, and errors are
  this package's :class:`~.faults.XapiError` / :class:`~.faults.XapiUnreachable` with redacted
  messages.
"""

from __future__ import annotations

import http.client
import importlib
import logging
import ssl
import threading
import xmlrpc.client
from typing import Any

from ferry.errors import ConfigError

from .config import PoolConfig
from .faults import Redactor, XapiError, XapiUnreachable

LOG = logging.getLogger("ferry.drivers.xenapi")

NULL_REF = "OpaqueRef:NULL"
#: the ``originator`` ferry logs in with (shows in XAPI's session records and audit log)
ORIGINATOR = "ferry"


def load_sdk() -> Any:
    """The ``XenAPI`` module. :raises ConfigError: it is not installed."""
    try:
        return importlib.import_module("XenAPI")
    except ImportError:
        raise ConfigError(
            "the xenapi driver needs the XenAPI SDK, which is not installed: "
            "pip install 'ferry[xenapi]'"
        ) from None


class _Transport(xmlrpc.client.Transport):
    """Plain HTTP with a per-call timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _SafeTransport(xmlrpc.client.SafeTransport):
    """HTTPS with a per-call timeout and ferry's TLS context."""

    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def make_transport(pool: PoolConfig) -> xmlrpc.client.Transport:
    """The transport for ``pool.url``: verified TLS unless ``verify_tls`` is false.

    :raises ConfigError: ``ca_file`` cannot be loaded.
    """
    if not pool.url.startswith("https:"):
        return _Transport(pool.timeout)
    if pool.verify_tls:
        try:
            context = ssl.create_default_context(cafile=pool.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"xenapi pool {pool.url}: ca_file {pool.ca_file} cannot be loaded: {exc}"
            ) from None
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return _SafeTransport(pool.timeout, context)


def _transport_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted ({exc.verify_message}); set ca_file, or "
            "verify_tls = false to accept it unverified"
        )
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return f"HTTP {exc.errcode} {exc.errmsg}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


class PoolSession:
    """Calls into one pool, through one SDK session (see the module doc)."""

    def __init__(self, pool: PoolConfig, sdk: Any, redact: Redactor) -> None:
        self.pool = pool
        self.url = pool.url
        self._sdk = sdk
        self._redact = redact
        self._session: Any = None
        self._lock = threading.RLock()
        #: how many logins this object made (tests and the log look at it, never at the refs)
        self.logins = 0

    # ------------------------------------------------------------------------ calls
    def call(self, method: str, *args: Any) -> Any:
        """``method`` (``"VM.get_record"``, ``"Async.VM.migrate_send"``...) with ``args``.

        :raises XapiError: XAPI answered with a Failure.
        :raises XapiUnreachable: no answer (refused, timed out, TLS, HTTP error, not XAPI).
        :raises ConfigError: the password cannot be read.
        """
        with self._lock:
            fresh = self._session is None
            session = self._login() if fresh else self._session
            try:
                result = session.xenapi_request(method, args)
            except self._sdk.Failure as exc:
                error = self._failure(method, exc.details)
                if error.code == "SESSION_AUTHENTICATION_FAILED" and not fresh:
                    # the SDK logged in again after SESSION_INVALID with the password it kept;
                    # the password may have been rotated since: log in anew, reading it again
                    return self.call(method, *args)
                raise error from None
            except xmlrpc.client.Fault as exc:
                # the SDK could not log in again (3 tries), or the reply was not XAPI's envelope
                self._drop()
                raise XapiUnreachable(
                    self.url, self._redact(f"XML-RPC fault {exc.faultCode}: {exc.faultString}")
                ) from None
            except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
                self._drop()
                raise XapiUnreachable(self.url, self._redact(_transport_reason(exc))) from None
            except (TypeError, KeyError, IndexError) as exc:  # a reply without Status (SDK bug)
                self._drop()
                raise XapiUnreachable(
                    self.url, f"malformed XAPI reply ({type(exc).__name__})"
                ) from None
            handle = getattr(session, "_session", None)  # the SDK may have logged in again
            if isinstance(handle, str):
                self._redact.add(handle)
            return result

    def raw_call(self, method: str, *args: Any) -> Any:
        """``method`` with exactly ``args`` (no session prepended), e.g. ``session.logout`` of
        another session. Same errors as :meth:`call`."""
        with self._lock:
            session = self._session if self._session is not None else self._login()
            try:
                reply = getattr(session, method)(*args)
                if not isinstance(reply, dict) or "Status" not in reply:
                    raise XapiUnreachable(self.url, "malformed XAPI reply")
                if reply["Status"] == "Success":
                    return reply.get("Value")
                raise self._failure(method, reply.get("ErrorDescription") or ["UNKNOWN"])
            except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
                self._drop()
                raise XapiUnreachable(self.url, self._redact(_transport_reason(exc))) from None

    def close(self) -> None:
        """Log out (best effort)."""
        with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            try:
                session.xenapi.session.logout()
            except Exception as exc:  # the pool may be gone: nothing to release then
                LOG.debug("xenapi pool %s: logout failed: %s", self.url, type(exc).__name__)

    # ------------------------------------------------------------------------ login
    def _login(self) -> Any:
        password = self.pool.read_password()
        self._redact.add(password)
        session = self._sdk.Session(self.url, transport=make_transport(self.pool))
        try:
            session.xenapi.login_with_password(self.pool.username, password, "1.1", ORIGINATOR)
        except self._sdk.Failure as exc:
            raise self._failure("session.login_with_password", exc.details) from None
        except xmlrpc.client.Fault as exc:
            raise XapiUnreachable(
                self.url, self._redact(f"XML-RPC fault {exc.faultCode}: {exc.faultString}")
            ) from None
        except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
            raise XapiUnreachable(self.url, self._redact(_transport_reason(exc))) from None
        handle = getattr(session, "_session", None)
        if isinstance(handle, str):
            self._redact.add(handle)
        self._session = session
        self.logins += 1
        LOG.info("xenapi pool %s: logged in as %s", self.url, self.pool.username)
        return session

    def _drop(self) -> None:
        self._session = None

    def _failure(self, method: str, details: Any) -> XapiError:
        details = list(details) if isinstance(details, list | tuple) else [str(details)]
        code = str(details[0]) if details else "UNKNOWN"
        params = [self._redact(str(p)) for p in details[1:]]
        if code in ("SESSION_INVALID", "SESSION_AUTHENTICATION_FAILED"):
            # the next call logs in again, reading the password anew (it may have been rotated)
            self._drop()
        return XapiError(method, code, params)

    def __repr__(self) -> str:
        return f"PoolSession({self.url!r})"
