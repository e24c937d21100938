"""Finding a guest on the libvirt hosts and reading what a host's libvirtd says about itself.

:class:`Lookup` owns the driver's connections (one :class:`HostConnection` per host) and the
static facts read once per connection; every other module of the driver asks libvirt through
it. A domain ferry found is a :class:`Found`: its host, state and the migration job it takes
part in, which tells the guest's home from the copy a migration is building or leaving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ferry.drivers.libvirt.connection import (
    HostConnection,
    HostSpec,
    Unreachable,
    error_code,
    libvirt_module,
    message,
)
from ferry.drivers.libvirt.xml import (
    GuestDescription,
    describe_guest,
    host_topology,
    host_uuid,
    numa_state,
)
from ferry.errors import DriverError, HostNotFound
from ferry.model import PowerState
from ferry.model.numa import HostNumaState, NumaTopology

LOG = logging.getLogger(__name__)

# virDomainState
RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7
ACTIVE = (RUNNING, BLOCKED, PAUSED, SHUTDOWN, PMSUSPENDED)
POWER = {
    RUNNING: PowerState.RUNNING,
    BLOCKED: PowerState.RUNNING,
    PAUSED: PowerState.PAUSED,
    SHUTDOWN: PowerState.RUNNING,
    SHUTOFF: PowerState.SHUTDOWN,
    CRASHED: PowerState.CRASHED,
    PMSUSPENDED: PowerState.PAUSED,
}
# reasons (virDomainPausedReason / virDomainRunningReason)
PAUSED_MIGRATION, PAUSED_STARTING_UP, PAUSED_POSTCOPY, RUNNING_POSTCOPY = 2, 11, 12, 10
JOB_UNBOUNDED = 2
OP_MIGRATION_IN, OP_MIGRATION_OUT = 4, 5


@functools.lru_cache(maxsize=512)
def describe(xml: str) -> GuestDescription:
    """describe_guest, once per distinct domain XML (the description is immutable)."""
    return describe_guest(xml)


def text(exc: BaseException) -> str:
    """An exception's message for a log line (libvirt's without its doubled prefixes)."""
    return message(exc) if hasattr(exc, "get_error_message") else str(exc)


@dataclass(frozen=True)
class Facts:
    """What a host's libvirtd reports that cannot change while one connection to it stays open
    (an upgraded or restarted daemon, a host rebooted with other memory: a new connection)."""

    hypervisor_type: str
    hypervisor_version: int
    memory_mb: int
    vcpus: int
    host_uuid: str
    topology: NumaTopology


@dataclass
class Found:
    """A domain of the guest on one host, with its state and migration job."""

    host: str
    dom: Any
    state: int
    reason: int
    job_op: int | None = None  # migration in/out while a job is active

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def incoming(self) -> bool:
        return self.job_op == OP_MIGRATION_IN and not self.switched_over

    @property
    def outgoing(self) -> bool:
        return self.job_op == OP_MIGRATION_OUT

    @property
    def switched_over(self) -> bool:
        """The destination side of a post-copy migration: the guest already runs here."""
        return self.state == RUNNING and self.reason == RUNNING_POSTCOPY

    @property
    def postcopy_source(self) -> bool:
        return self.state == PAUSED and self.reason == PAUSED_POSTCOPY


def state(dom: Any) -> tuple[int, int]:
    """``dom.state()``; a domain gone meanwhile is shut off."""
    lv = libvirt_module()
    try:
        st, reason = dom.state()
    except lv.libvirtError as exc:
        if error_code(exc) == lv.VIR_ERR_NO_DOMAIN:
            return SHUTOFF, 0
        raise
    return int(st), int(reason)


def job(dom: Any) -> dict[str, Any]:
    """``jobStats()`` of an active job, ``{}`` when there is none or the domain is gone."""
    lv = libvirt_module()
    try:
        stats = dom.jobStats()
    except lv.libvirtError as exc:
        if error_code(exc) in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_OPERATION_INVALID):
            return {}
        if error_code(exc) == lv.VIR_ERR_OPERATION_UNSUPPORTED:
            # QEMU: "migration statistics are available only on the source host"
            return {"type": JOB_UNBOUNDED, "operation": OP_MIGRATION_IN}
        raise
    return stats if stats.get("type") == JOB_UNBOUNDED else {}


def describe_all(host: str, doms: Iterable[Any]) -> list[GuestDescription]:
    """The descriptions of ``doms`` (domains listed on ``host``); a domain that went away
    between the listing and the read is left out (logged)."""
    lv = libvirt_module()
    out = []
    for dom in doms:
        try:
            out.append(describe(dom.XMLDesc(0)))
        except lv.libvirtError as exc:
            LOG.debug("host %s: domain %s left out: %s", host, dom.name(), message(exc))
    return out


class Lookup:
    """The configured hosts, one connection each, and the questions put to them."""

    def __init__(self, specs: dict[str, HostSpec]) -> None:
        self.specs = specs
        self.conns = {name: HostConnection(spec) for name, spec in specs.items()}
        #: per host: the connection the facts were read on, and the facts
        self._facts: dict[str, tuple[Any, Facts]] = {}

    def conn(self, host: str) -> HostConnection:
        try:
            return self.conns[host]
        except KeyError:
            raise HostNotFound(host) from None

    def call(self, host: str, op: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(conn)`` on ``host``; libvirt errors become DriverError naming the operation."""
        lv = libvirt_module()
        try:
            return self.conn(host).call(fn)
        except Unreachable as exc:
            raise DriverError(host, op, str(exc)) from None
        except lv.libvirtError as exc:
            raise DriverError(host, op, message(exc)) from None

    def domain(self, host: str, instance_uuid: str) -> Any | None:
        """The domain on ``host`` (any state), or None. Raises DriverError when unreachable."""
        lv = libvirt_module()

        def lookup(conn: Any) -> Any:
            try:
                return conn.lookupByUUIDString(instance_uuid)
            except lv.libvirtError as exc:
                if error_code(exc) == lv.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self.call(host, "look up the domain", lookup)

    def find(self, instance_uuid: str, hosts: Iterable[str] | None = None) -> list[Found]:
        """The guest's domains on ``hosts`` (all by default); a host that cannot be reached is
        left out (logged)."""
        found = []
        for host in hosts if hosts is not None else self.specs:
            try:
                dom = self.domain(host, instance_uuid)
                if dom is None:
                    continue
                st, reason = state(dom)
                f = Found(host, dom, st, reason)
                if f.active:
                    f.job_op = job(dom).get("operation")
                found.append(f)
            except DriverError as exc:
                LOG.debug("host %s: %s", host, exc)
        return found

    def facts(self, host: str, conn: Any) -> Facts:
        """The host's static facts, read once per connection (``getInfo``, ``getType``,
        ``getVersion``, ``getCapabilities``: host UUID and NUMA topology)."""
        cached = self._facts.get(host)
        if cached is not None and cached[0] is conn:
            return cached[1]
        info = conn.getInfo()
        caps = str(conn.getCapabilities())
        facts = Facts(
            hypervisor_type=str(conn.getType()).lower(),
            hypervisor_version=int(conn.getVersion()),
            memory_mb=int(info[1]),
            vcpus=int(info[2]),
            host_uuid=host_uuid(caps),
            topology=host_topology(caps),
        )
        self._facts[host] = (conn, facts)
        return facts

    def read_facts(self, host: str, op: str = "read the host facts") -> Facts:
        """:meth:`facts` of ``host`` on its connection (DriverError when unreachable)."""
        facts: Facts = self.call(host, op, lambda c: self.facts(host, c))
        return facts

    def numa_state(self, host: str) -> HostNumaState:
        """What the active domains on ``host`` pin, per NUMA cell."""
        doms = self.call(host, "list domains", lambda c: c.listAllDomains(1))
        guests = describe_all(host, doms)
        return numa_state(self.read_facts(host, "read the capabilities").topology, guests)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
