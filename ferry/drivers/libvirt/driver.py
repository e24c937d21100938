"""The libvirt driver: real QEMU guests moved between libvirt hosts with ``migrateToURI3``.

One :class:`LibvirtDriver` serves every ``driver = "libvirt"`` host of the config, with one
connection per host URI (:class:`~ferry.drivers.libvirt.connection.HostConnection`). The phases:

* **checks** -- destination: reachable, not the source (host UUIDs differ), same hypervisor type
  and a version >= the source's, the guest's CPU model accepted (``compareHypervisorCPU``), free
  memory after ``reserved_host_memory_mb``, the guest's networks present and active, and for a
  pinned guest one NUMA cell with enough free pCPUs and memory (a new pinning is computed).
  Shared storage is detected by writing a marker file into the destination's ``instances_path``
  (through a libvirt storage pool, so no shell access is needed) and looking for it from the
  source; block migration follows when the request leaves it open. Source: the domain is active,
  and block migration is refused for shared storage (and the other way round for local disks).
* **pre_live_migration** -- the instance directory (and, for a block migration, empty disk
  images of the right size) on the destination; its rollback removes exactly that and any partial
  domain the transfer left.
* **transfer** -- ``migrateToURI3`` with ``PEER2PEER | LIVE | PERSIST_DEST | UNDEFINE_SOURCE``
  (+ ``NON_SHARED_DISK``, ``POSTCOPY``, ``AUTO_CONVERGE`` as the request and policy say), run in
  a thread of its own on a connection of its own; ferry's monitor polls :meth:`transfer_progress`
  (``jobStats``), raises the max downtime in steps, forces completion (post-copy or pause) or
  aborts (``abortJob``). Between two polls it waits in :meth:`wait_transfer_end`, which returns
  as soon as that call does, so the switchover is not seen up to a poll interval late.
* **crash reconciliation** -- a peer-to-peer migration runs inside the source libvirtd, which
  carries on when ferry dies. After a restart nothing is known in memory, so every question is
  put to libvirt: an outgoing job on the source -> the transfer is still running (the monitor
  re-attaches); the domain active on the destination and gone from the source -> done (roll
  forward); neither -> the transfer is reported as never started and the transfer task **starts
  it again** (the source guest is untouched, so a restart is safe and cheaper than a revert).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from ferry.config import HostConfig
from ferry.drivers.base import Driver, InstanceLocation, TransferPolicy
from ferry.drivers.libvirt.connection import (
    HostConnection,
    HostSpec,
    Unreachable,
    error_code,
    event_loop,
    is_connection_error,
    libvirt_module,
    message,
)
from ferry.drivers.libvirt.xml import (
    GuestDescription,
    describe_guest,
    host_topology,
    host_uuid,
    numa_state,
    rewrite_pinning,
)
from ferry.errors import (
    DriverError,
    HostNotFound,
    InstanceNotFound,
    MigrationPreCheckError,
    TransferFailed,
)
from ferry.model import Host, Instance, MigrateData, PowerState, TransferProgress
from ferry.model.numa import GuestRequest, HostNumaState, NumaTopology, Pinning

LOG = logging.getLogger(__name__)

MIB = 1024 * 1024
#: host info reads the instances' file system size from a pool refreshed at most this long ago (s)
POOL_INFO_AGE = 5.0
GIB = 1024 * MIB
#: how long a finished ``migrateToURI3`` call waits for the source's job-completed event
COMPLETED_EVENT_WAIT = 2.0

# virDomainState
_RUNNING, _BLOCKED, _PAUSED, _SHUTDOWN, _SHUTOFF, _CRASHED, _PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7
_ACTIVE = (_RUNNING, _BLOCKED, _PAUSED, _SHUTDOWN, _PMSUSPENDED)
_POWER = {
    _RUNNING: PowerState.RUNNING,
    _BLOCKED: PowerState.RUNNING,
    _PAUSED: PowerState.PAUSED,
    _SHUTDOWN: PowerState.RUNNING,
    _SHUTOFF: PowerState.SHUTDOWN,
    _CRASHED: PowerState.CRASHED,
    _PMSUSPENDED: PowerState.PAUSED,
}
# reasons (virDomainPausedReason / virDomainRunningReason)
_PAUSED_MIGRATION, _PAUSED_POSTCOPY, _RUNNING_POSTCOPY = 2, 12, 10
_JOB_UNBOUNDED = 2
_OP_MIGRATION_IN, _OP_MIGRATION_OUT = 4, 5


@dataclass(frozen=True)
class _Facts:
    """What a host's libvirtd reports that cannot change while one connection to it stays open
    (an upgraded or restarted daemon, a host rebooted with other memory: a new connection)."""

    hypervisor_type: str
    hypervisor_version: int
    memory_mb: int
    vcpus: int
    host_uuid: str
    topology: NumaTopology


@functools.lru_cache(maxsize=512)
def _describe(xml: str) -> GuestDescription:
    """describe_guest, once per distinct domain XML (the description is immutable)."""
    return describe_guest(xml)


@dataclass
class _Transfer:
    """A transfer this process started (or re-attached to after a restart)."""

    key: str
    instance_uuid: str
    source: str
    destination: str
    memory_mb: float
    post_copy: bool = False
    pinning: Pinning | None = None
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    #: None while running; completed | failed | cancelled | lost (the call lost its connection:
    #: libvirt is asked what became of it)
    outcome: str | None = None
    error: str | None = None
    lever: str | None = None
    last: TransferProgress | None = None
    final: TransferProgress | None = None
    downtime_ms: int | None = None
    #: the source's job-completed event (its statistics: downtime, time_elapsed, memory_*)
    completed: dict[str, Any] | None = None
    completed_seen: threading.Event = field(default_factory=threading.Event)

    def placeholder(self) -> TransferProgress:
        return self.last or TransferProgress(
            state="running",
            memory_total_mb=self.memory_mb,
            memory_remaining_mb=self.memory_mb,
        )


@dataclass
class _Found:
    host: str
    dom: Any
    state: int
    reason: int
    job_op: int | None = None  # migration in/out while a job is active

    @property
    def active(self) -> bool:
        return self.state in _ACTIVE

    @property
    def incoming(self) -> bool:
        return self.job_op == _OP_MIGRATION_IN and not self.switched_over

    @property
    def outgoing(self) -> bool:
        return self.job_op == _OP_MIGRATION_OUT

    @property
    def switched_over(self) -> bool:
        """The destination side of a post-copy migration: the guest already runs here."""
        return self.state == _RUNNING and self.reason == _RUNNING_POSTCOPY

    @property
    def postcopy_source(self) -> bool:
        return self.state == _PAUSED and self.reason == _PAUSED_POSTCOPY


class LibvirtDriver(Driver):
    """Live migration between libvirt hosts (QEMU/KVM) through libvirt-python."""

    name = "libvirt"

    #: how long an abort waits for libvirt to end the job (seconds)
    abort_timeout = 60.0
    #: how long an abort / force-complete right after the start waits for the job to show
    start_timeout = 10.0

    def __init__(self, hosts: Iterable[HostSpec]) -> None:
        self.specs: dict[str, HostSpec] = {}
        for spec in hosts:
            if spec.name in self.specs:
                raise ValueError(f"host {spec.name!r} given twice")
            self.specs[spec.name] = spec
        self._conns = {name: HostConnection(spec) for name, spec in self.specs.items()}
        self._transfers: dict[str, _Transfer] = {}
        self._lock = threading.Lock()
        #: per host: the connection the facts were read on, and the facts
        self._facts: dict[str, tuple[Any, _Facts]] = {}
        #: per host: the connection, its instances_path pool and when that was last refreshed
        self._pools: dict[str, tuple[Any, Any, float]] = {}
        self._events = False  # libvirt's event loop runs (started with the first transfer)
        libvirt_module()  # fail at construction with the extra's name when libvirt is missing

    @classmethod
    def from_host_configs(cls, configs: Iterable[HostConfig]) -> LibvirtDriver:
        return cls(HostSpec.from_options(c.name, dict(c.options)) for c in configs)

    # ------------------------------------------------------------------ plumbing
    def _conn(self, host: str) -> HostConnection:
        try:
            return self._conns[host]
        except KeyError:
            raise HostNotFound(host) from None

    def _call(self, host: str, op: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(conn)`` on ``host``; libvirt errors become DriverError naming the operation."""
        lv = libvirt_module()
        try:
            return self._conn(host).call(fn)
        except Unreachable as exc:
            raise DriverError(host, op, str(exc)) from None
        except lv.libvirtError as exc:
            raise DriverError(host, op, message(exc)) from None

    def _domain(self, host: str, instance_uuid: str) -> Any | None:
        """The domain on ``host`` (any state), or None. Raises DriverError when unreachable."""
        lv = libvirt_module()

        def lookup(conn: Any) -> Any:
            try:
                return conn.lookupByUUIDString(instance_uuid)
            except lv.libvirtError as exc:
                if error_code(exc) == lv.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self._call(host, "look up the domain", lookup)

    def _state(self, dom: Any) -> tuple[int, int]:
        lv = libvirt_module()
        try:
            state, reason = dom.state()
        except lv.libvirtError as exc:
            if error_code(exc) == lv.VIR_ERR_NO_DOMAIN:
                return _SHUTOFF, 0
            raise
        return int(state), int(reason)

    def _job(self, dom: Any) -> dict[str, Any]:
        """``jobStats()`` of an active job, ``{}`` when there is none or the domain is gone."""
        lv = libvirt_module()
        try:
            stats = dom.jobStats()
        except lv.libvirtError as exc:
            if error_code(exc) in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_OPERATION_INVALID):
                return {}
            if error_code(exc) == lv.VIR_ERR_OPERATION_UNSUPPORTED:
                # QEMU: "migration statistics are available only on the source host"
                return {"type": _JOB_UNBOUNDED, "operation": _OP_MIGRATION_IN}
            raise
        return stats if stats.get("type") == _JOB_UNBOUNDED else {}

    def _find(self, instance_uuid: str, hosts: Iterable[str] | None = None) -> list[_Found]:
        found = []
        for host in hosts if hosts is not None else self.specs:
            try:
                dom = self._domain(host, instance_uuid)
                if dom is None:
                    continue
                state, reason = self._state(dom)
                f = _Found(host, dom, state, reason)
                if f.active:
                    f.job_op = self._job(dom).get("operation")
                found.append(f)
            except DriverError as exc:
                LOG.debug("host %s: %s", host, exc)
        return found

    def _host_facts(self, host: str, conn: Any) -> _Facts:
        """The host's static facts, read once per connection (``getInfo``, ``getType``,
        ``getVersion``, ``getCapabilities``: host UUID and NUMA topology)."""
        cached = self._facts.get(host)
        if cached is not None and cached[0] is conn:
            return cached[1]
        info = conn.getInfo()
        caps = str(conn.getCapabilities())
        facts = _Facts(
            hypervisor_type=str(conn.getType()).lower(),
            hypervisor_version=int(conn.getVersion()),
            memory_mb=int(info[1]),
            vcpus=int(info[2]),
            host_uuid=host_uuid(caps),
            topology=host_topology(caps),
        )
        self._facts[host] = (conn, facts)
        return facts

    def _topology(self, host: str) -> NumaTopology:
        facts: _Facts = self._call(
            host, "read the capabilities", lambda c: self._host_facts(host, c)
        )
        return facts.topology

    @staticmethod
    def _key(data: MigrateData) -> str:
        return str(
            data.driver_data.get("transfer_id")
            or f"{data.instance_uuid}:{data.source}:{data.destination}"
        )

    # ------------------------------------------------------------- storage pools
    def _pool(self, host: str, path: str | None = None, *, max_age: float = 0.0) -> Any:
        """A (transient) directory pool on ``path`` (the host's instances_path by default),
        refreshed so files written by another host are seen -- unless it was refreshed less
        than ``max_age`` seconds ago. The instances_path pool is kept per connection (one
        round trip instead of three: look up, is-active, refresh)."""
        lv = libvirt_module()
        target = path or self.specs[host].instances_path
        name = "ferry-" + uuidlib.uuid5(uuidlib.NAMESPACE_URL, target).hex[:12]
        keep = path is None

        def get(conn: Any) -> Any:
            now = time.monotonic()
            cached = self._pools.get(host) if keep else None
            if cached is not None and cached[0] is conn:
                _conn, pool, refreshed = cached
                if now - refreshed <= max_age:
                    return pool
                try:
                    pool.refresh(0)
                except lv.libvirtError as exc:
                    if error_code(exc) not in (
                        lv.VIR_ERR_NO_STORAGE_POOL,
                        lv.VIR_ERR_OPERATION_INVALID,
                    ):
                        raise
                    # destroyed or stopped by someone else: open it again below
                else:
                    self._pools[host] = (conn, pool, now)
                    return pool
            try:
                pool = conn.storagePoolLookupByName(name)
            except lv.libvirtError as exc:
                if error_code(exc) != lv.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = self._existing_pool(conn, target)
                if pool is None:
                    xml = (
                        f"<pool type='dir'><name>{name}</name>"
                        f"<target><path>{_esc(target)}</path></target></pool>"
                    )
                    try:
                        pool = conn.storagePoolCreateXML(xml, lv.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
                    except lv.libvirtError:
                        pool = self._existing_pool(conn, target)  # created meanwhile
                        if pool is None:
                            raise
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            if keep:
                self._pools[host] = (conn, pool, now)
            return pool

        return self._call(host, f"open the storage pool on {target}", get)

    @staticmethod
    def _existing_pool(conn: Any, target: str) -> Any | None:
        for pool in conn.listAllStoragePools(0):
            try:
                xml = pool.XMLDesc(0)
            except Exception:
                continue
            if f"<path>{_esc(target)}</path>" in xml:
                return pool
        return None

    def _volume(self, pool: Any, name: str) -> Any | None:
        lv = libvirt_module()
        try:
            return pool.storageVolLookupByName(name)
        except lv.libvirtError as exc:
            if error_code(exc) == lv.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    def _instance_dir(self, host: str, instance_uuid: str) -> str:
        return f"{self.specs[host].instances_path}/{instance_uuid}"

    def _has_instance_dir(self, host: str, instance_uuid: str) -> bool:
        pool = self._pool(host)
        return self._volume(pool, instance_uuid) is not None

    def _make_instance_dir(self, host: str, instance_uuid: str) -> bool:
        """Create the instance directory; False when it existed already."""
        lv = libvirt_module()
        pool = self._pool(host)
        if self._volume(pool, instance_uuid) is not None:
            return False
        xml = (
            f"<volume type='dir'><name>{instance_uuid}</name><capacity>0</capacity>"
            "<target><format type='dir'/><permissions><mode>0755</mode></permissions></target>"
            "</volume>"
        )
        try:
            pool.createXML(xml, 0)
        except lv.libvirtError as exc:
            if self._volume(self._pool(host), instance_uuid) is None:
                raise DriverError(host, "create the instance directory", message(exc)) from None
            return False
        return True

    def _remove_instance_dir(self, host: str, instance_uuid: str) -> None:
        """Remove the instance directory and the files in it (idempotent)."""
        lv = libvirt_module()
        path = self._instance_dir(host, instance_uuid)
        pool = self._pool(host)
        vol = self._volume(pool, instance_uuid)
        if vol is None:
            return
        try:
            inner = self._pool(host, path)
            for v in inner.listAllVolumes(0):
                v.delete(0)
            inner.destroy()
            vol.delete(0)
        except lv.libvirtError as exc:
            raise DriverError(host, f"remove {path}", message(exc)) from None

    def _markers(self, host: str, instance_uuid: str | None = None) -> list[str]:
        prefix = ".ferry-shared-check-" + (instance_uuid or "")
        pool = self._pool(host)
        return sorted(n for n in pool.listVolumes() if n.startswith(prefix))

    # ---------------------------------------------------------------- inventory
    def hosts(self) -> list[str]:
        return sorted(self.specs)

    def host_info(self, host: str) -> Host:
        return self._read_host(host, self._host_info)

    def host_status(self, host: str) -> Host:
        """One round trip (free memory: the daemon answers) and the connection's static facts;
        no guest listing."""

        def status(host: str, conn: Any) -> Host:
            conn.getFreeMemory()
            facts = self._host_facts(host, conn)
            return Host(
                name=host,
                driver=self.name,
                hypervisor_type=facts.hypervisor_type,
                hypervisor_version=facts.hypervisor_version,
                vcpus=facts.vcpus,
                memory_mb=facts.memory_mb,
                disk_gb=0,
                up=True,
                enabled=self.specs[host].enabled,
                labels={"host_uuid": facts.host_uuid},
            )

        return self._read_host(host, status)

    def _read_host(self, host: str, read: Callable[[str, Any], Host]) -> Host:
        """``read(host, conn)``; a host whose libvirtd cannot be reached is returned down."""
        spec = self.specs.get(host)
        if spec is None:
            raise HostNotFound(host)
        try:
            return self._conn(host).call(lambda conn: read(host, conn))
        except Exception as exc:
            LOG.info("host %s is down: %s", host, _text(exc))
            return Host(
                name=host,
                driver=self.name,
                hypervisor_type="qemu",
                hypervisor_version=0,
                vcpus=0,
                memory_mb=0,
                disk_gb=0,
                up=False,
                enabled=spec.enabled,
            )

    def _host_info(self, host: str, conn: Any) -> Host:
        lv = libvirt_module()
        spec = self.specs[host]
        facts = self._host_facts(host, conn)
        memory_mb, vcpus = facts.memory_mb, facts.vcpus
        used_mb, used_vcpus = spec.reserved_host_memory_mb, 0
        guests = []
        for dom in conn.listAllDomains(1):  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
            _state, max_kib, _mem, ncpu, _t = dom.info()
            used_mb += int(max_kib) // 1024
            used_vcpus += int(ncpu)
            if facts.topology.cells:
                try:
                    guests.append(_describe(dom.XMLDesc(0)))
                except Exception:
                    continue
        labels: dict[str, str] = {"host_uuid": facts.host_uuid}
        numa = numa_state(facts.topology, guests) if facts.topology.cells else None
        disk_gb = disk_used = 0
        try:
            # the size of the instances' file system; a pool refreshed within the last
            # seconds is recent enough for that
            _s, capacity, _alloc, available = self._pool(host, max_age=POOL_INFO_AGE).info()
            disk_gb = int(capacity // GIB)
            disk_used = int((capacity - available) // GIB)
        except lv.libvirtError as exc:
            # the kept pool was destroyed by someone else since its last refresh: open it again
            # next time; the host itself answered
            self._pools.pop(host, None)
            LOG.debug("host %s: partial host info: %s", host, message(exc))
        except DriverError as exc:
            LOG.debug("host %s: partial host info: %s", host, exc)
        return Host(
            name=host,
            driver=self.name,
            hypervisor_type=facts.hypervisor_type,
            hypervisor_version=facts.hypervisor_version,
            vcpus=vcpus,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            vcpus_used=used_vcpus,
            memory_mb_used=min(used_mb, memory_mb),
            disk_gb_used=disk_used,
            up=True,
            enabled=spec.enabled,
            labels=labels,
            numa=numa,
        )

    def list_instances(self, host: str | None = None) -> list[Instance]:
        hosts = [host] if host is not None else self.hosts()
        if host is not None and host not in self.specs:
            raise HostNotFound(host)
        out: list[Instance] = []
        for h in hosts:
            try:
                doms = self._call(h, "list domains", lambda c: c.listAllDomains(1))
            except DriverError as exc:
                LOG.info("host %s: cannot list instances: %s", h, exc)
                continue
            for dom in doms:
                try:
                    inst = self._instance(h, dom)
                except Exception as exc:
                    LOG.debug("host %s: skipping a domain: %s", h, _text(exc))
                    continue
                if inst is not None:
                    out.append(inst)
        return sorted(out, key=lambda i: (i.host, i.name))

    def _instance(self, host: str, dom: Any) -> Instance | None:
        """The instance a domain on ``host`` is, or None for a copy that is not the guest's home
        (the incoming side of a migration, the old side of a post-copy one)."""
        state, reason = self._state(dom)
        if state not in _ACTIVE:
            return None
        found = _Found(host, dom, state, reason)
        if state == _PAUSED and reason in (_PAUSED_MIGRATION, 11):  # 11: starting up
            found.job_op = self._job(dom).get("operation")
        if found.incoming or found.postcopy_source:
            return None
        desc = _describe(dom.XMLDesc(0))
        return self._to_instance(host, desc, state, dom)

    def _to_instance(self, host: str, desc: GuestDescription, state: int, dom: Any) -> Instance:
        disk_bytes = 0
        for disk in desc.local_disks:
            try:
                disk_bytes += int(dom.blockInfo(disk.target)[0])
            except Exception:
                continue
        extra: dict[str, Any] = {"virt_type": desc.virt_type}
        if desc.pinned:
            extra.update(
                pinned=True, cpu_policy="dedicated", pinned_pcpus=sorted(desc.pinned_pcpus)
            )
        return Instance(
            uuid=desc.uuid,
            name=desc.name,
            host=host,
            power_state=_POWER.get(state, PowerState.NOSTATE).value,
            vcpus=desc.vcpus,
            memory_mb=desc.memory_mb,
            disk_gb=math.ceil(disk_bytes / GIB),
            vifs=[{"type": i.kind, "source": i.source} for i in desc.interfaces],
            extra=extra,
        )

    def find_instance(self, ref: str) -> Instance | None:
        lv = libvirt_module()
        for host in self.hosts():

            def lookup(conn: Any, ref: str = ref) -> Any:
                for fn in (conn.lookupByUUIDString, conn.lookupByName):
                    try:
                        return fn(ref)
                    except lv.libvirtError as exc:
                        if error_code(exc) not in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_INVALID_ARG):
                            raise
                return None

            try:
                dom = self._call(host, "look up the domain", lookup)
                inst = self._instance(host, dom) if dom is not None else None
            except (DriverError, lv.libvirtError):
                continue
            if inst is not None:
                return inst
        return None

    def locate(self, instance_uuid: str) -> InstanceLocation:
        return self._locate(instance_uuid, self._find(instance_uuid))

    def _locate(self, instance_uuid: str, found: list[_Found]) -> InstanceLocation:
        if not found:
            raise InstanceNotFound(instance_uuid)
        active = [f for f in found if f.active]
        home = next((f for f in active if f.switched_over), None)
        if home is None:
            home = next((f for f in active if f.outgoing), None)
        if home is None:
            home = next((f for f in active if not f.incoming and not f.postcopy_source), None)
        if home is None:
            home = active[0] if active else found[0]
        outgoing = next((f for f in active if f.outgoing), None)
        incoming = next((f for f in active if f.job_op == _OP_MIGRATION_IN), None)
        destination = incoming.host if incoming else None
        if outgoing is not None and destination is None:
            with self._lock:
                t = next(
                    (
                        t
                        for t in self._transfers.values()
                        if t.instance_uuid == instance_uuid and t.outcome is None
                    ),
                    None,
                )
            destination = t.destination if t else None
        power = _POWER.get(home.state, PowerState.NOSTATE).value
        if home.state == _PAUSED and home.outgoing and home.reason == _PAUSED_MIGRATION:
            power = PowerState.RUNNING.value  # the stop-and-copy pause of a live guest
        return InstanceLocation(
            instance_uuid=instance_uuid,
            host=home.host,
            power_state=power,
            transfer_in_flight=outgoing is not None,
            transfer_destination=destination if outgoing is not None else None,
        )

    def artifacts(self, host: str, instance_uuid: str) -> list[str]:
        """What ``instance_uuid`` has on ``host``: its domain definition, instance directory and
        check markers (tests use it to prove a rollback leaves nothing behind)."""
        out = []
        dom = self._domain(host, instance_uuid)
        if dom is not None:
            out.append(f"domain {dom.name()}")
        if self._has_instance_dir(host, instance_uuid):
            out.append(f"dir {self._instance_dir(host, instance_uuid)}")
        out.extend(f"marker {m}" for m in self._markers(host, instance_uuid))
        return out

    # -------------------------------------------------------------------- checks
    def check_can_live_migrate_destination(
        self, instance: Instance, destination: str, block_migration: bool | None
    ) -> MigrateData:
        if destination not in self.specs:
            raise HostNotFound(destination)
        source = instance.host

        def reject(reason: str) -> MigrationPreCheckError:
            return MigrationPreCheckError(destination, reason, "check_destination")

        dest = self.host_info(destination)
        if not dest.up:
            raise reject("libvirtd cannot be reached")
        if not dest.enabled:
            raise reject("host is disabled")
        src_dom = self._domain(source, instance.uuid)
        if src_dom is None:
            raise InstanceNotFound(instance.uuid)
        desc = _describe(src_dom.XMLDesc(0))
        # the source's identity, type and version: its static facts (no guest listing)
        src = self._call(source, "read the host facts", lambda c: self._host_facts(source, c))
        if dest.labels.get("host_uuid") and dest.labels.get("host_uuid") == src.host_uuid:
            raise reject(f"it is the same libvirt host as {source} ({dest.labels['host_uuid']})")
        if dest.hypervisor_type != src.hypervisor_type:
            raise reject(f"hypervisor {dest.hypervisor_type} differs from {src.hypervisor_type}")
        if dest.hypervisor_version < src.hypervisor_version:
            raise reject(
                f"hypervisor version {_version(dest.hypervisor_version)} is older than the "
                f"source's {_version(src.hypervisor_version)}"
            )
        if self._domain(destination, instance.uuid) is not None:
            raise reject(f"a domain with the UUID of {instance.name} is already defined there")
        # what is left after the reserve and the guests' allocations, and what the hypervisor
        # really has free (other processes use memory too): the smaller counts
        free = dest.free_memory_mb
        real_free = int(
            self._call(destination, "read free memory", lambda c: c.getFreeMemory()) // MIB
        )
        if min(free, real_free) < desc.memory_mb:
            raise reject(
                f"not enough free memory: {max(free, 0)} MiB unallocated "
                f"(reserved {self.specs[destination].reserved_host_memory_mb} MiB), "
                f"{real_free} MiB free on the host; {instance.name} needs {desc.memory_mb} MiB"
            )
        self._check_cpu(destination, desc, reject)
        missing = self._missing_networks(destination, desc)
        if missing:
            raise reject("; ".join(missing))
        driver_data: dict[str, Any] = {}
        pinning: Pinning | None = None
        if desc.pinned:
            fitted = self._fit_pinning(destination, desc)
            if isinstance(fitted, str):
                raise reject(fitted)
            pinning = fitted
        shared = self._shared_storage(instance.uuid, source, destination)
        block = (not shared) if block_migration is None else bool(block_migration)
        driver_data["instances_path"] = self.specs[destination].instances_path
        # names this attempt's transfer (a later attempt of the same move is another transfer)
        driver_data["transfer_id"] = uuidlib.uuid4().hex
        return MigrateData(
            instance_uuid=instance.uuid,
            source=source,
            destination=destination,
            block_migration=block,
            shared_storage=shared,
            driver_data=driver_data,
            pinning=pinning,
        )

    def _check_cpu(
        self,
        destination: str,
        desc: GuestDescription,
        reject: Callable[[str], MigrationPreCheckError],
    ) -> None:
        if desc.cpu_xml is None:
            return
        lv = libvirt_module()

        def compare(conn: Any) -> int:
            try:
                return int(
                    conn.compareHypervisorCPU(
                        desc.emulator, desc.arch, desc.machine, desc.virt_type, desc.cpu_xml, 0
                    )
                )
            except lv.libvirtError as exc:
                if error_code(exc) == lv.VIR_ERR_NO_SUPPORT:
                    return int(conn.compareCPU(desc.cpu_xml, 0))
                raise

        lv_err = libvirt_module().libvirtError
        try:
            result = self._conn(destination).call(compare)
        except lv_err as exc:
            raise reject(f"the guest's CPU is not accepted: {message(exc)}") from None
        except Unreachable as exc:
            raise reject(str(exc)) from None
        if result == lv.VIR_CPU_COMPARE_INCOMPATIBLE:
            raise reject("the guest's CPU model is not compatible with this host")

    def _missing_networks(self, host: str, desc: GuestDescription) -> list[str]:
        lv = libvirt_module()
        missing = []
        for iface in desc.interfaces:
            if iface.kind == "network" and iface.source:

                def active(conn: Any, name: str = iface.source) -> bool | None:
                    try:
                        return bool(conn.networkLookupByName(name).isActive())
                    except lv.libvirtError as exc:
                        if error_code(exc) == lv.VIR_ERR_NO_NETWORK:
                            return None
                        raise

                state = self._call(host, "look up a network", active)
                if state is None:
                    missing.append(f"network {iface.source} does not exist")
                elif not state:
                    missing.append(f"network {iface.source} is not active")
            elif iface.kind == "bridge" and iface.source:

                def bridge(conn: Any, name: str = iface.source) -> bool | None:
                    try:
                        return bool(conn.interfaceLookupByName(name).isActive())
                    except lv.libvirtError as exc:
                        if error_code(exc) == lv.VIR_ERR_NO_INTERFACE:
                            return False
                        return None  # no interface backend: cannot tell, do not block

                if self._call(host, "look up a bridge", bridge) is False:
                    missing.append(f"bridge {iface.source} does not exist")
        return missing

    def _numa_state(self, host: str) -> HostNumaState:
        """What the active domains on ``host`` pin, per NUMA cell."""
        guests = []
        for dom in self._call(host, "list domains", lambda c: c.listAllDomains(1)):
            try:
                guests.append(_describe(dom.XMLDesc(0)))
            except Exception:
                continue  # vanished meanwhile
        return numa_state(self._topology(host), guests)

    def _fit_pinning(self, destination: str, desc: GuestDescription) -> Pinning | str:
        state = self._numa_state(destination)
        with self._lock:
            inbound = [
                t.pinning
                for t in self._transfers.values()
                if t.destination == destination and t.outcome is None and t.pinning is not None
            ]
        for p in inbound:
            state = state.with_pinning(p)
        return state.fit(GuestRequest(desc.vcpus, desc.memory_mb, pinned=True))

    def _shared_storage(self, instance_uuid: str, source: str, destination: str) -> bool:
        """Write a marker into the destination's instances_path and look for it from the
        source (Nova's ``_check_shared_storage_test_file``)."""
        if self.specs[source].instances_path != self.specs[destination].instances_path:
            return False
        lv = libvirt_module()
        marker = f".ferry-shared-check-{instance_uuid}-{uuidlib.uuid4().hex[:8]}"
        pool = self._pool(destination)
        try:
            pool.createXML(
                f"<volume><name>{marker}</name><capacity>0</capacity>"
                "<target><format type='raw'/></target></volume>",
                0,
            )
        except lv.libvirtError as exc:
            raise MigrationPreCheckError(
                destination,
                f"cannot write to {self.specs[destination].instances_path}: {message(exc)}",
                "check_destination",
            ) from None
        try:
            return self._volume(self._pool(source), marker) is not None
        finally:
            try:
                vol = self._volume(pool, marker)  # created through this pool: no refresh needed
                if vol is not None:
                    vol.delete(0)
            except (lv.libvirtError, DriverError) as exc:
                LOG.warning("host %s: marker %s left behind: %s", destination, marker, _text(exc))

    def cleanup_live_migration_destination_check(self, destination: str, data: MigrateData) -> None:
        lv = libvirt_module()
        pool = self._pool(destination)
        for name in self._markers(destination, data.instance_uuid):
            vol = self._volume(pool, name)
            if vol is not None:
                try:
                    vol.delete(0)
                except lv.libvirtError as exc:
                    raise DriverError(destination, f"remove marker {name}", message(exc)) from None

    def check_can_live_migrate_source(self, instance: Instance, data: MigrateData) -> MigrateData:
        dom = self._domain(data.source, instance.uuid)
        if dom is None:
            raise InstanceNotFound(instance.uuid)
        state, _reason = self._state(dom)
        if state not in _ACTIVE:
            raise MigrationPreCheckError(
                data.source, f"{instance.name} is not active on {data.source}", "check_source"
            )
        desc = _describe(dom.XMLDesc(0))
        path = self.specs[data.source].instances_path
        if data.block_migration and data.shared_storage:
            raise MigrationPreCheckError(
                data.destination,
                f"block migration requested but {path} is shared between {data.source} and "
                f"{data.destination}: migrate without --block-migrate",
                "check_source",
            )
        if not data.block_migration and not data.shared_storage and desc.local_disks:
            disks = ", ".join(d.target for d in desc.local_disks)
            raise MigrationPreCheckError(
                data.destination,
                f"{instance.name} has local disks ({disks}) and {path} is not shared with "
                f"{data.destination}: use block migration",
                "check_source",
            )
        if desc.local_disks:
            data = data.with_driver_data(has_local_disks=True)
        if data.block_migration and desc.local_disks:
            data = data.with_driver_data(
                migrate_disks=[d.target for d in desc.local_disks],
                disks=[
                    {
                        "target": d.target,
                        "source": d.source,
                        "format": d.driver_type,
                        "bytes": int(dom.blockInfo(d.target)[0]),
                    }
                    for d in desc.local_disks
                ],
            )
        return data

    # ------------------------------------------------------------------- prepare
    def pre_live_migration(self, instance: Instance, data: MigrateData) -> MigrateData:
        dom = self._domain(data.source, instance.uuid)
        if dom is None:
            raise InstanceNotFound(instance.uuid)
        desc = _describe(dom.XMLDesc(0))
        missing = self._missing_networks(data.destination, desc)
        if missing:
            raise DriverError(data.destination, "pre_live_migration", "; ".join(missing))
        if not data.shared_storage:
            for name in self._instance_dirs(instance.uuid, data):
                self._make_instance_dir(data.destination, name)
            for disk in data.driver_data.get("disks", []):
                self._precreate_disk(data.destination, disk)
        return data

    def _instance_dirs(self, instance_uuid: str, data: MigrateData) -> list[str]:
        """The directories (names in ``instances_path``) this instance has on a host: its own
        (named by UUID) and those holding its local disks."""
        names = {instance_uuid}
        root = self.specs[data.destination].instances_path + "/"
        for disk in data.driver_data.get("disks", []):
            rel = str(disk["source"])[len(root) :] if str(disk["source"]).startswith(root) else ""
            if rel.count("/") == 1:
                names.add(rel.split("/", 1)[0])
        return sorted(names)

    def _precreate_disk(self, host: str, disk: dict[str, Any]) -> None:
        """An empty image of the source disk's size at the same path (QEMU's drive mirror
        writes into it). Only disks in a directory of ``instances_path`` are created here."""
        lv = libvirt_module()
        source = str(disk["source"])
        directory = source.rsplit("/", 1)[0]
        if directory.rsplit("/", 1)[0] != self.specs[host].instances_path:
            return
        pool = self._pool(host, directory)
        name = source.rsplit("/", 1)[1]
        try:
            if self._volume(pool, name) is None:
                pool.createXML(
                    f"<volume><name>{_esc(name)}</name><capacity>{int(disk['bytes'])}</capacity>"
                    f"<target><format type='{_esc(str(disk['format']))}'/></target></volume>",
                    0,
                )
        except lv.libvirtError as exc:
            raise DriverError(host, f"create {source}", message(exc)) from None
        finally:
            with contextlib.suppress(lv.libvirtError):
                pool.destroy()

    def rollback_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        lv = libvirt_module()
        t = self._transfer(data)
        if t is not None and t.outcome is None:
            self.abort_transfer(instance, data)
        found = {f.host: f for f in self._find(instance.uuid, [data.source, data.destination])}
        src, dst = found.get(data.source), found.get(data.destination)
        if dst is not None:
            if dst.active and not dst.incoming and not (src is not None and src.active):
                raise DriverError(
                    data.destination,
                    "rollback at destination",
                    f"{instance.name} switched over to {data.destination} already; "
                    "its only copy is not destroyed",
                )
            if dst.outgoing or (src is not None and src.outgoing):
                self.abort_transfer(instance, data)
            try:
                if dst.active:
                    dst.dom.destroy()
                if dst.dom.isPersistent():
                    dst.dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
            except lv.libvirtError as exc:
                if error_code(exc) != lv.VIR_ERR_NO_DOMAIN:
                    raise DriverError(
                        data.destination, "remove the partial domain", message(exc)
                    ) from None
        if not data.shared_storage:
            for name in self._instance_dirs(instance.uuid, data):
                self._remove_instance_dir(data.destination, name)
        self.cleanup_live_migration_destination_check(data.destination, data)

    # ------------------------------------------------------------------ transfer
    def _transfer(self, data: MigrateData) -> _Transfer | None:
        with self._lock:
            return self._transfers.get(self._key(data))

    def start_transfer(self, instance: Instance, data: MigrateData, policy: TransferPolicy) -> None:
        lv = libvirt_module()
        key = self._key(data)
        with self._lock:
            known = self._transfers.get(key)
            if known is not None and known.outcome != "lost":
                return  # in flight, or finished (a failed transfer is not silently restarted)
        found = {f.host: f for f in self._find(instance.uuid, [data.source, data.destination])}
        src, dst = found.get(data.source), found.get(data.destination)
        pinning = data.pinning
        if src is not None and src.outgoing:
            LOG.info("%s: re-attaching to the transfer running on %s", instance.name, data.source)
            self._register(
                _Transfer(key, instance.uuid, data.source, data.destination, instance.memory_mb)
            )
            return
        if dst is not None and dst.active and not dst.incoming:
            LOG.info("%s: already switched over to %s", instance.name, data.destination)
            return
        if src is None or not src.active:
            raise TransferFailed(data.source, f"{instance.name} is not running on {data.source}")

        flags = (
            lv.VIR_MIGRATE_LIVE
            | lv.VIR_MIGRATE_PEER2PEER
            | lv.VIR_MIGRATE_PERSIST_DEST
            | lv.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        params: dict[str, Any] = {}
        if data.shared_storage and data.driver_data.get("has_local_disks"):
            # ferry proved the instance path shared (the marker test); libvirt only trusts the
            # filesystems it knows (NFS, Ceph, GFS2, ...) and would refuse the move as unsafe
            flags |= lv.VIR_MIGRATE_UNSAFE
        if data.block_migration:
            flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
            disks = data.driver_data.get("migrate_disks")
            if disks:
                params[lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disks)
        if policy.permit_post_copy:
            flags |= lv.VIR_MIGRATE_POSTCOPY
        elif policy.permit_auto_converge:
            flags |= lv.VIR_MIGRATE_AUTO_CONVERGE
            if policy.auto_converge_initial:
                params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = policy.auto_converge_initial
            if policy.auto_converge_increment:
                params[lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = (
                    policy.auto_converge_increment
                )
        if policy.bandwidth_mbps > 0:
            params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = max(1, int(policy.bandwidth_mbps))
        dest_spec = self.specs[data.destination]
        if dest_spec.migration_uri:
            params[lv.VIR_MIGRATE_PARAM_URI] = dest_spec.migration_uri
        if pinning is not None:
            # the pinning was chosen at the check (or claimed by the scheduler); a guest started
            # on the destination since then by anyone else may have taken some of those pCPUs
            taken = set().union(*self._numa_state(data.destination).pinned_by_cell.values())
            if taken & pinning.pcpus:
                raise TransferFailed(
                    data.destination,
                    f"pCPUs {sorted(taken & pinning.pcpus)} chosen for {instance.name} have been "
                    "pinned by another guest since the destination check",
                )
            xml = rewrite_pinning(src.dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE), pinning)
            params[lv.VIR_MIGRATE_PARAM_DEST_XML] = xml
            params[lv.VIR_MIGRATE_PARAM_PERSIST_XML] = xml
        try:
            src.dom.migrateSetMaxDowntime(int(policy.initial_downtime_ms), 0)
        except lv.libvirtError as exc:
            LOG.debug("%s: initial max downtime not set: %s", instance.name, message(exc))

        t = _Transfer(
            key,
            instance.uuid,
            data.source,
            data.destination,
            instance.memory_mb,
            post_copy=policy.permit_post_copy,
            pinning=pinning,
            downtime_ms=int(policy.initial_downtime_ms),
        )
        peer = dest_spec.peer_uri or dest_spec.uri
        self._events = event_loop()  # before the transfer's connection is opened
        t.thread = threading.Thread(
            target=self._migrate,
            args=(t, peer, params, flags),
            name=f"ferry-migrate-{instance.name}",
            daemon=True,
        )
        self._register(t)
        t.thread.start()

    def _register(self, t: _Transfer) -> None:
        with self._lock:
            # one transfer per instance: older records of it are history now
            for k in [k for k, o in self._transfers.items() if o.instance_uuid == t.instance_uuid]:
                if self._transfers[k].outcome is not None:
                    del self._transfers[k]
            self._transfers[t.key] = t

    def _migrate(self, t: _Transfer, peer: str, params: dict[str, Any], flags: int) -> None:
        """The blocking ``migrateToURI3`` call, on a connection of its own."""
        lv = libvirt_module()
        conn = None
        watching: int | None = None
        try:
            conn = self._conn(t.source).open_new()
            dom = conn.lookupByUUIDString(t.instance_uuid)
            watching = self._watch_completion(conn, dom, t)
            dom.migrateToURI3(peer, params, flags)
            if watching is not None:
                # libvirtd sends the event around the time the call returns, not before it
                waited = time.monotonic()
                if not t.completed_seen.wait(COMPLETED_EVENT_WAIT):
                    LOG.warning(
                        "%s: no job-completed event from %s within %.0f s",
                        t.instance_uuid,
                        t.source,
                        COMPLETED_EVENT_WAIT,
                    )
                LOG.debug(
                    "%s: job-completed event %.1f ms after the call returned",
                    t.instance_uuid,
                    (time.monotonic() - waited) * 1000,
                )
            t.final = self._completed_progress(t)
            t.outcome = "completed"
        except Unreachable as exc:
            t.outcome, t.error = "failed", str(exc)
        except lv.libvirtError as exc:
            if error_code(exc) == lv.VIR_ERR_OPERATION_ABORTED:
                t.outcome = "cancelled"
            elif is_connection_error(exc):
                LOG.warning(
                    "transfer of %s: lost the connection to %s (%s); asking libvirt",
                    t.instance_uuid,
                    t.source,
                    message(exc),
                )
                t.outcome = "lost"
            else:
                t.outcome, t.error = "failed", message(exc)
        except Exception as exc:
            t.outcome, t.error = "failed", _text(exc)
        finally:
            if conn is not None:
                # a registered callback holds a reference on the connection: without the
                # deregistration close() leaves the socket open
                if watching is not None:
                    with contextlib.suppress(Exception):
                        conn.domainEventDeregisterAny(watching)
                with contextlib.suppress(Exception):
                    conn.close()
            t.done.set()

    def _watch_completion(self, conn: Any, dom: Any, t: _Transfer) -> int | None:
        """Have the source's job-completed event land in ``t.completed``: the callback's id
        (for ``domainEventDeregisterAny``), or None if it cannot."""
        lv = libvirt_module()
        if not self._events:
            return None

        def completed(_conn: Any, _dom: Any, params: dict[str, Any], _opaque: Any) -> None:
            t.completed = dict(params)
            t.completed_seen.set()

        try:
            return int(
                conn.domainEventRegisterAny(
                    dom, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, completed, None
                )
            )
        except lv.libvirtError as exc:
            LOG.debug("no job-completed event for %s: %s", t.instance_uuid, message(exc))
            return None

    def _completed_progress(self, t: _Transfer) -> TransferProgress:
        """The finished job's statistics: the source's job-completed event when this process
        ran the call (the whole job, and the only downtime figure after a post-copy switch),
        else the destination's completed-job statistics (which libvirt fills from the
        source's at the switchover: complete for pre-copy, without downtime after post-copy)."""
        lv = libvirt_module()
        stats: dict[str, Any] = dict(t.completed or {})
        try:
            dom = None if stats else self._domain(t.destination, t.instance_uuid)
            if dom is not None:
                stats = dom.jobStats(
                    lv.VIR_DOMAIN_JOB_STATS_COMPLETED | lv.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
                )
        except (lv.libvirtError, DriverError) as exc:
            LOG.debug("no completed job stats for %s: %s", t.instance_uuid, _text(exc))
        base = _progress("completed", stats) if stats else t.placeholder()
        total = base.memory_total_mb or t.memory_mb
        return TransferProgress(
            state="completed",
            memory_total_mb=total,
            memory_processed_mb=max(base.memory_processed_mb, total),
            memory_remaining_mb=0.0,
            dirty_rate_mbps=base.dirty_rate_mbps,
            iteration=base.iteration,
            downtime_ms=base.downtime_ms,
            elapsed_s=base.elapsed_s,
        )

    def transfer_progress(self, instance: Instance, data: MigrateData) -> TransferProgress:
        t = self._transfer(data)
        if t is not None and t.outcome is None:
            src = self._source_domain(t)
            stats = self._job(src) if src is not None else {}
            if stats.get("operation") in (None, _OP_MIGRATION_OUT) and stats:
                t.last = _progress("running", stats)
                return t.last
            # no job (yet, or any more): give a running call a moment to report its outcome
            if t.thread is not None and not t.done.wait(0.5):
                return t.placeholder()
        if t is not None and t.outcome in ("completed", "failed", "cancelled"):
            return self._final(t)
        return self._ask_libvirt(instance, data, t)

    def wait_transfer_end(self, instance: Instance, data: MigrateData, timeout: float) -> bool:
        """Waits on the ``migrateToURI3`` call this process runs, so the switchover is seen at
        once. Without such a call (re-attached after a restart, or the call lost its connection
        and libvirt is asked instead) there is nothing to wait on: False, the monitor sleeps."""
        t = self._transfer(data)
        if t is None or t.thread is None or t.outcome == "lost":
            return False
        t.done.wait(timeout)
        return True

    def _source_domain(self, t: _Transfer) -> Any | None:
        try:
            return self._domain(t.source, t.instance_uuid)
        except DriverError:
            return None

    def _final(self, t: _Transfer) -> TransferProgress:
        if t.outcome == "completed":
            return t.final or self._completed_progress(t)
        last = t.last or t.placeholder()
        return TransferProgress(
            state=str(t.outcome),
            memory_total_mb=last.memory_total_mb,
            memory_processed_mb=last.memory_processed_mb,
            memory_remaining_mb=last.memory_remaining_mb,
            iteration=last.iteration,
            elapsed_s=last.elapsed_s,
            error=t.error,
        )

    def _ask_libvirt(
        self, instance: Instance, data: MigrateData, t: _Transfer | None
    ) -> TransferProgress:
        """The transfer's state from libvirt alone (after a restart, or a lost connection)."""
        found = {f.host: f for f in self._find(instance.uuid, [data.source, data.destination])}
        src, dst = found.get(data.source), found.get(data.destination)
        if src is not None and src.outgoing:
            stats = self._job(src.dom)
            if stats:
                p = _progress("running", stats)
                if t is not None:
                    t.last = p
                return p
        if dst is not None and dst.active and not dst.incoming and not (src and src.active):
            probe = t or _Transfer("", instance.uuid, data.source, data.destination, 0)
            probe.memory_mb = probe.memory_mb or instance.memory_mb
            p = self._completed_progress(probe)
            if t is not None:
                t.outcome, t.final = "completed", p
            return p
        if t is not None:
            # we watched it (or re-attached to it) and it ended without a switchover
            t.outcome = "failed"
            t.error = t.error or "the transfer ended without a switchover"
            return self._final(t)
        return TransferProgress(state="none")

    def _await_job(self, t: _Transfer | None) -> None:
        """Between ``start_transfer`` returning and libvirt showing the migration job there is
        a short window (the call is on its way to libvirtd): wait until the job is visible on
        the source or the call has ended, so an abort or force-complete in that window acts on
        the transfer instead of finding nothing in flight."""
        if t is None or t.thread is None or t.outcome is not None:
            return
        deadline = time.monotonic() + self.start_timeout
        while not t.done.is_set() and time.monotonic() < deadline:
            src = self._source_domain(t)
            if src is None or self._job(src):
                return
            t.done.wait(0.02)  # libvirt offers no wait for a job to begin without events

    def set_max_downtime(self, instance: Instance, data: MigrateData, downtime_ms: int) -> None:
        lv = libvirt_module()
        t = self._transfer(data)
        self._await_job(t)
        if t is None or t.outcome is not None:
            return
        src = self._source_domain(t)
        if src is None:
            return
        try:
            src.migrateSetMaxDowntime(int(downtime_ms), 0)
            t.downtime_ms = int(downtime_ms)
        except lv.libvirtError as exc:
            if error_code(exc) != lv.VIR_ERR_OPERATION_INVALID:  # the job just ended
                raise DriverError(data.source, "set the max downtime", message(exc)) from None

    def force_complete(self, instance: Instance, data: MigrateData) -> str:
        lv = libvirt_module()
        t = self._transfer(data)
        self._await_job(t)
        if t is not None and t.lever is not None:
            return t.lever
        src = self._source_domain(t) if t is not None else self._domain(data.source, instance.uuid)
        if src is None or not self._job(src) or (t is not None and t.outcome is not None):
            raise DriverError(data.source, "force complete", "no transfer is in flight")
        lever = "pause"
        try:
            if t is None or t.post_copy:
                try:
                    src.migrateStartPostCopy(0)
                    lever = "post-copy"
                except lv.libvirtError as exc:
                    if t is not None:
                        raise
                    LOG.info("post-copy unavailable (%s); pausing the guest", message(exc))
            if lever == "pause":
                state, _ = self._state(src)
                if state != _PAUSED:
                    src.suspend()
        except lv.libvirtError as exc:
            raise DriverError(data.source, "force complete", message(exc)) from None
        if t is not None:
            t.lever = lever
        LOG.info("%s: forced to complete by %s", instance.name, lever)
        return lever

    def abort_transfer(self, instance: Instance, data: MigrateData) -> None:
        lv = libvirt_module()
        t = self._transfer(data)
        self._await_job(t)
        found = {f.host: f for f in self._find(instance.uuid, [data.source, data.destination])}
        src, dst = found.get(data.source), found.get(data.destination)
        in_flight = src is not None and src.outgoing
        if not in_flight:
            if t is not None and t.outcome is None and t.thread is not None:
                t.done.wait(self.abort_timeout)  # finishing right now: see how it ended
            if dst is not None and dst.active and not dst.incoming:
                raise DriverError(
                    data.source,
                    "abort the transfer",
                    f"{instance.name} switched over to {data.destination} already",
                )
            if t is not None and t.outcome == "completed":
                raise DriverError(
                    data.source,
                    "abort the transfer",
                    f"{instance.name} switched over to {data.destination} already",
                )
            return
        assert src is not None
        if dst is not None and dst.switched_over:
            raise DriverError(
                data.source,
                "abort the transfer",
                f"{instance.name} runs on {data.destination} in post-copy: too late to abort",
            )
        try:
            src.dom.abortJob()
        except lv.libvirtError as exc:
            if self._job(src.dom):
                raise DriverError(data.source, "abort the transfer", message(exc)) from None
        self._wait_job_end(src.dom, t)
        if t is not None and t.outcome is None:
            t.outcome = "cancelled"
        if t is not None and t.outcome == "completed":
            raise DriverError(
                data.source,
                "abort the transfer",
                f"{instance.name} switched over to {data.destination} before the abort",
            )
        if t is not None and t.lever == "pause" and instance.power_state == PowerState.RUNNING:
            try:
                if self._state(src.dom)[0] == _PAUSED:
                    src.dom.resume()
            except lv.libvirtError as exc:
                LOG.warning("%s: could not resume after the abort: %s", instance.name, exc)

    def _wait_job_end(self, dom: Any, t: _Transfer | None) -> None:
        if t is not None and t.thread is not None:
            t.done.wait(self.abort_timeout)
            return
        deadline = time.monotonic() + self.abort_timeout
        while self._job(dom) and time.monotonic() < deadline:
            time.sleep(0.05)  # libvirt has no blocking wait for a job's end without events

    # ---------------------------------------------------------------------- post
    def post_live_migration_at_source(self, instance: Instance, data: MigrateData) -> None:
        lv = libvirt_module()
        # where it runs now, as seen by the two hosts of this migration (the guest cannot be
        # on a third one: it left the source for the destination, nowhere else)
        found = self._find(instance.uuid, [data.source, data.destination])
        loc = self._locate(instance.uuid, found)
        if loc.host != data.destination or loc.transfer_in_flight:
            raise DriverError(
                data.source,
                "post_live_migration_at_source",
                f"{instance.name} has not switched over to {data.destination} "
                f"(it runs on {loc.host}"
                f"{', transfer in flight' if loc.transfer_in_flight else ''})",
            )
        # asked again, not taken from ``found``: _find skips a host it cannot reach, and an
        # unreachable source must fail this step (the roll-forward retries it), not pass it
        dom = self._domain(data.source, instance.uuid)
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()  # the stale side of a finished post-copy migration
                if dom.isPersistent():
                    dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
            except lv.libvirtError as exc:
                if error_code(exc) != lv.VIR_ERR_NO_DOMAIN:
                    raise DriverError(
                        data.source, "undefine the source domain", message(exc)
                    ) from None
        if not data.shared_storage:
            for name in self._instance_dirs(instance.uuid, data):
                self._remove_instance_dir(data.source, name)

    def post_live_migration_at_destination(self, instance: Instance, data: MigrateData) -> None:
        lv = libvirt_module()
        dom = self._domain(data.destination, instance.uuid)
        if dom is None or not dom.isActive():
            raise DriverError(
                data.destination,
                "post_live_migration_at_destination",
                f"{instance.name} is not running on {data.destination}",
            )
        try:
            if not dom.isPersistent():
                conn = dom.connect()
                conn.defineXML(dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE))
            state, _reason = self._state(dom)
            if (
                state == _PAUSED
                and instance.power_state == PowerState.RUNNING
                and self._job(dom).get("operation") != _OP_MIGRATION_IN
            ):
                dom.resume()  # paused to force completion: the guest was running
        except lv.libvirtError as exc:
            raise DriverError(
                data.destination, "post_live_migration_at_destination", message(exc)
            ) from None
        with self._lock:
            t = self._transfers.get(self._key(data))
            if t is not None:
                t.pinning = None  # the pinning is now the domain's own

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


def _progress(state: str, stats: dict[str, Any]) -> TransferProgress:
    page = int(stats.get("memory_page_size") or 4096)
    total = stats.get("memory_total", stats.get("data_total", 0)) / MIB
    processed = stats.get("memory_processed", stats.get("data_processed", 0)) / MIB
    remaining = stats.get("memory_remaining", stats.get("data_remaining", 0)) / MIB
    return TransferProgress(
        state=state,
        memory_total_mb=total,
        memory_processed_mb=processed,
        memory_remaining_mb=remaining,
        dirty_rate_mbps=stats.get("memory_dirty_rate", 0) * page / MIB,
        iteration=int(stats.get("memory_iteration", 0)),
        downtime_ms=int(stats.get("downtime", 0)),
        elapsed_s=stats.get("time_elapsed", 0) / 1000.0,
        throttle_percent=int(stats.get("auto_converge_throttle", 0)),
    )


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def _esc(text: str) -> str:
    return escape(text, {"'": "&apos;", '"': "&quot;"})


def _text(exc: BaseException) -> str:
    return message(exc) if hasattr(exc, "get_error_message") else str(exc)
