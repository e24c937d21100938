"""XAPI failures as readable sentences, and the secrets kept out of every message.

The driver's internal errors (:class:`XapiError`, :class:`XapiUnreachable`) never leave the
package: :mod:`ferry.drivers.xenapi.driver` turns them into ferry's typed errors (``raise ... from
None``, so no chained exception carries the raw details into TaskFlow's persisted failures or into
a logged traceback).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence

MIB = 1024 * 1024

#: ``session_id=...`` in a URL (the xenops URL of ``host.migrate_receive`` carries one)
_SESSION_IN_URL = re.compile(r"(session_id=)[^&\s'\"]+")
REDACTED = "***"


class Redactor:
    """Known secrets (passwords, session refs, migrate-receive session ids), replaced by ``***``
    in every message the driver produces. Thread-safe; bounded."""

    MAX = 256

    def __init__(self) -> None:
        self._secrets: dict[str, None] = {}
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < 4:
            return
        with self._lock:
            self._secrets.pop(secret, None)
            self._secrets[secret] = None
            while len(self._secrets) > self.MAX:
                self._secrets.pop(next(iter(self._secrets)))

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SESSION_IN_URL.sub(r"\1" + REDACTED, text)


class XapiError(Exception):
    """A XAPI ``Failure``: ``code`` and ``params`` of its ErrorDescription (already redacted)."""

    def __init__(self, method: str, code: str, params: Sequence[str]) -> None:
        self.method = method
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(describe(code, self.params))

    @property
    def message(self) -> str:
        return str(self)


class XapiUnreachable(Exception):
    """The pool master could not be reached or answered with something that is not XAPI."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the XAPI pool master at {url}: {reason}")


def _mib(value: str) -> str:
    try:
        return f"{int(value) // MIB} MiB"
    except ValueError:
        return value


def _p(params: Sequence[str], i: int) -> str:
    return params[i] if i < len(params) else "?"


# code -> sentence built from the parameters (the codes of the reference, section 4)
_SENTENCES: dict[str, Callable[[Sequence[str]], str]] = {
    "HOST_NOT_ENOUGH_FREE_MEMORY": lambda p: (
        f"not enough free memory on the destination: {_mib(_p(p, 0))} needed, "
        f"{_mib(_p(p, 1))} available"
    ),
    "VDI_NOT_IN_MAP": lambda p: f"disk VDI {_p(p, 0)} is not mapped to a destination SR",
    "VIF_NOT_IN_MAP": lambda p: f"network interface VIF {_p(p, 0)} is not mapped to a network",
    "MIRROR_FAILED": lambda p: f"the storage mirror of VDI {_p(p, 0)} failed",
    "VM_MIGRATE_FAILED": lambda p: (
        f"the migration of VM {_p(p, 0)} from {_p(p, 1)} to {_p(p, 2)} failed: {_p(p, 3)}"
    ),
    "CANNOT_CONTACT_HOST": lambda p: f"cannot contact host {_p(p, 0)}",
    "HOST_OFFLINE": lambda p: f"host {_p(p, 0)} is offline",
    "HOST_DISABLED": lambda p: f"host {_p(p, 0)} is disabled",
    "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED": lambda p: (
        "the source pool could not contact the destination pool's migration service"
    ),
    "VM_HOST_INCOMPATIBLE_VERSION_MIGRATE": lambda p: (
        "the destination runs an older XAPI version than the VM's host"
    ),
    "VM_INCOMPATIBLE_WITH_THIS_HOST": lambda p: f"the VM cannot run on that host: {_p(p, 2)}",
    "NOT_SUPPORTED_DURING_UPGRADE": lambda p: "not supported while the pool is being upgraded",
    "OTHER_OPERATION_IN_PROGRESS": lambda p: (
        f"another operation ({_p(p, 2)}) is in progress on the {_p(p, 0)}"
    ),
    "OPERATION_NOT_ALLOWED": lambda p: f"operation not allowed: {_p(p, 0)}",
    "VM_BAD_POWER_STATE": lambda p: (
        f"the VM is {_p(p, 2).lower()}; the operation needs it {_p(p, 1).lower()}"
    ),
    "VM_LACKS_FEATURE": lambda p: "the VM lacks a feature live migration needs (PV drivers?)",
    "VM_NON_SUSPENDABLE": lambda p: f"the VM cannot be suspended: {_p(p, 1)}",
    "VM_IS_TEMPLATE": lambda p: "the VM is a template",
    "VM_HAS_PCI_ATTACHED": lambda p: "the VM has PCI devices attached",
    "VM_REQUIRES_SR": lambda p: f"the target host cannot see SR {_p(p, 1)} the VM needs",
    "VM_REQUIRES_NETWORK": lambda p: f"the target host cannot see network {_p(p, 1)} the VM needs",
    "SR_DOES_NOT_SUPPORT_MIGRATION": lambda p: f"SR {_p(p, 0)} does not support storage migration",
    "TOO_MANY_STORAGE_MIGRATES": lambda p: (
        f"too many storage migrations in progress (XAPI allows {_p(p, 0)})"
    ),
    "LICENCE_RESTRICTION": lambda p: f"the pool's licence does not allow {_p(p, 0)}",
    "TASK_CANCELLED": lambda p: "the task was cancelled",
    "HOST_CANNOT_ATTACH_NETWORK": lambda p: (
        f"host {_p(p, 0)} cannot attach the migration network {_p(p, 1)}"
    ),
    "PIF_HAS_NO_NETWORK_CONFIGURATION": lambda p: (
        f"the management interface {_p(p, 0)} has no network configuration"
    ),
    "INTERFACE_HAS_NO_IP": lambda p: f"the management interface {_p(p, 0)} has no IP address",
    "SESSION_AUTHENTICATION_FAILED": lambda p: (
        f"authentication as {_p(p, 0)!r} failed (check the password source in the config)"
    ),
    "HOST_IS_SLAVE": lambda p: (
        f"the url names a pool member, not the pool master (the master is {_p(p, 0)}); "
        "set url to the pool master"
    ),
    "HANDLE_INVALID": lambda p: f"the {_p(p, 0)} {_p(p, 1)} no longer exists",
    "UUID_INVALID": lambda p: f"there is no {_p(p, 0)} with uuid {_p(p, 1)}",
    "INTERNAL_ERROR": lambda p: f"XAPI internal error: {_p(p, 0)}",
    "MESSAGE_METHOD_UNKNOWN": lambda p: f"XAPI does not know the call {_p(p, 0)}",
    "SR_HAS_PBD": lambda p: f"SR {_p(p, 0)} still has plugged PBDs",
    "NETWORK_CONTAINS_VIF": lambda p: "the network still has VIFs attached",
    "VDI_IN_USE": lambda p: f"VDI {_p(p, 0)} is in use",
}


def describe(code: str, params: Sequence[str]) -> str:
    """``"<sentence> (CODE)"``; unknown codes keep their raw parameters."""
    sentence = _SENTENCES.get(code)
    if sentence is not None:
        try:
            return f"{sentence(params)} ({code})"
        except Exception:  # pragma: no cover - a malformed parameter list
            pass
    shown = ", ".join(params)
    return f"XAPI error {code}" + (f" [{shown}]" if shown else "")
