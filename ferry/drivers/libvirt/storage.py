"""Files in a host's ``instances_path``, reached through libvirt storage pools (no shell access
to the hosts): instance directories, the empty disk images a block migration copies into, and
the marker files that tell whether two hosts share the directory.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from typing import Any
from xml.sax.saxutils import escape

from ferry.drivers.libvirt.connection import error_code, libvirt_module, message
from ferry.drivers.libvirt.lookup import Lookup, text
from ferry.errors import DriverError, MigrationPreCheckError
from ferry.model import MigrateData

LOG = logging.getLogger(__name__)

GIB = 1024 * 1024 * 1024
#: host info reads the instances' file system size from a pool refreshed at most this long ago (s)
POOL_INFO_AGE = 5.0
MARKER_PREFIX = ".ferry-shared-check-"


def esc(value: str) -> str:
    """``value`` fit for an XML attribute or text."""
    return escape(value, {"'": "&apos;", '"': "&quot;"})


#: libvirt refuses to refresh a pool while a volume job runs in it (another migration's disk or
#: marker being written): tried again this many times, this long apart (s)
REFRESH_TRIES = 40
REFRESH_PAUSE = 0.05


def refresh(pool: Any, pause: Any = time.sleep) -> None:
    """``pool.refresh()``, tried again while libvirt says the pool has asynchronous jobs
    running (two migrations into one host at once); other errors are raised at once."""
    lv = libvirt_module()
    for attempt in range(REFRESH_TRIES):
        try:
            pool.refresh(0)
            return
        except lv.libvirtError as exc:
            busy = "asynchronous jobs running" in message(exc)
            if not busy or attempt == REFRESH_TRIES - 1:
                raise
            pause(REFRESH_PAUSE)


def volume(pool: Any, name: str) -> Any | None:
    """The volume ``name`` of ``pool``, or None."""
    lv = libvirt_module()
    try:
        return pool.storageVolLookupByName(name)
    except lv.libvirtError as exc:
        if error_code(exc) == lv.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


class Storage:
    """The hosts' ``instances_path`` directories; one pool on each is kept per connection."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self.specs = lookup.specs
        #: per host: the connection, its instances_path pool and when that was last refreshed
        self._pools: dict[str, tuple[Any, Any, float]] = {}

    def pool(self, host: str, path: str | None = None, *, max_age: float = 0.0) -> Any:
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
                    refresh(pool)
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
                pool = self._existing_pool(host, conn, target)
                if pool is None:
                    xml = (
                        f"<pool type='dir'><name>{name}</name>"
                        f"<target><path>{esc(target)}</path></target></pool>"
                    )
                    try:
                        pool = conn.storagePoolCreateXML(xml, lv.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
                    except lv.libvirtError:
                        pool = self._existing_pool(host, conn, target)  # created meanwhile
                        if pool is None:
                            raise
            if not pool.isActive():
                pool.create(0)
            refresh(pool)
            if keep:
                self._pools[host] = (conn, pool, now)
            return pool

        return self._lookup.call(host, f"open the storage pool on {target}", get)

    @staticmethod
    def _existing_pool(host: str, conn: Any, target: str) -> Any | None:
        """A pool someone else defined on ``target``, or None."""
        lv = libvirt_module()
        for pool in conn.listAllStoragePools(0):
            try:
                xml = pool.XMLDesc(0)
            except lv.libvirtError as exc:
                LOG.debug("host %s: storage pool left out: %s", host, message(exc))
                continue
            if f"<path>{esc(target)}</path>" in xml:
                return pool
        return None

    def usage(self, host: str) -> tuple[int, int]:
        """Size and use of the instances' file system in GiB; (0, 0) when it cannot be read
        (the host itself answered: its info is partial, not down)."""
        lv = libvirt_module()
        try:
            # a pool refreshed within the last seconds is recent enough for that
            _s, capacity, _alloc, available = self.pool(host, max_age=POOL_INFO_AGE).info()
        except lv.libvirtError as exc:
            # the kept pool was destroyed by someone else since its last refresh: open it again
            # next time
            self._pools.pop(host, None)
            LOG.debug("host %s: partial host info: %s", host, message(exc))
            return 0, 0
        except DriverError as exc:
            LOG.debug("host %s: partial host info: %s", host, exc)
            return 0, 0
        return int(capacity // GIB), int((capacity - available) // GIB)

    # ---------------------------------------------------------- instance directories
    def instance_dir(self, host: str, instance_uuid: str) -> str:
        return f"{self.specs[host].instances_path}/{instance_uuid}"

    def has_instance_dir(self, host: str, instance_uuid: str) -> bool:
        return volume(self.pool(host), instance_uuid) is not None

    def make_instance_dir(self, host: str, instance_uuid: str) -> bool:
        """Create the instance directory; False when it existed already."""
        lv = libvirt_module()
        pool = self.pool(host)
        if volume(pool, instance_uuid) is not None:
            return False
        xml = (
            f"<volume type='dir'><name>{instance_uuid}</name><capacity>0</capacity>"
            "<target><format type='dir'/><permissions><mode>0755</mode></permissions></target>"
            "</volume>"
        )
        try:
            pool.createXML(xml, 0)
        except lv.libvirtError as exc:
            if volume(self.pool(host), instance_uuid) is None:
                raise DriverError(host, "create the instance directory", message(exc)) from None
            return False
        return True

    def remove_instance_dir(self, host: str, instance_uuid: str) -> None:
        """Remove the instance directory and the files in it (idempotent)."""
        lv = libvirt_module()
        path = self.instance_dir(host, instance_uuid)
        vol = volume(self.pool(host), instance_uuid)
        if vol is None:
            return
        try:
            inner = self.pool(host, path)
            for v in inner.listAllVolumes(0):
                v.delete(0)
            inner.destroy()
            vol.delete(0)
        except lv.libvirtError as exc:
            raise DriverError(host, f"remove {path}", message(exc)) from None

    def instance_dirs(self, instance_uuid: str, data: MigrateData) -> list[str]:
        """The directories (names in ``instances_path``) this instance has on a host: its own
        (named by UUID) and those holding its local disks."""
        names = {instance_uuid}
        root = self.specs[data.destination].instances_path + "/"
        for disk in data.driver_data.get("disks", []):
            rel = str(disk["source"])[len(root) :] if str(disk["source"]).startswith(root) else ""
            if rel.count("/") == 1:
                names.add(rel.split("/", 1)[0])
        return sorted(names)

    def precreate_disk(self, host: str, disk: dict[str, Any]) -> None:
        """An empty image of the source disk's size at the same path (QEMU's drive mirror
        writes into it). Only disks in a directory of ``instances_path`` are created here."""
        lv = libvirt_module()
        source = str(disk["source"])
        directory = source.rsplit("/", 1)[0]
        if directory.rsplit("/", 1)[0] != self.specs[host].instances_path:
            return
        pool = self.pool(host, directory)
        name = source.rsplit("/", 1)[1]
        try:
            if volume(pool, name) is None:
                pool.createXML(
                    f"<volume><name>{esc(name)}</name><capacity>{int(disk['bytes'])}</capacity>"
                    f"<target><format type='{esc(str(disk['format']))}'/></target></volume>",
                    0,
                )
        except lv.libvirtError as exc:
            raise DriverError(host, f"create {source}", message(exc)) from None
        finally:
            try:
                pool.destroy()
            except lv.libvirtError as exc:
                LOG.debug("host %s: pool on %s not stopped: %s", host, directory, message(exc))

    # ------------------------------------------------------------------- markers
    def markers(self, host: str, instance_uuid: str | None = None) -> list[str]:
        prefix = MARKER_PREFIX + (instance_uuid or "")
        return sorted(n for n in self.pool(host).listVolumes() if n.startswith(prefix))

    def shared(self, instance_uuid: str, source: str, destination: str) -> bool:
        """Write a marker into the destination's instances_path and look for it from the
        source (Nova's ``_check_shared_storage_test_file``)."""
        if self.specs[source].instances_path != self.specs[destination].instances_path:
            return False
        lv = libvirt_module()
        marker = f"{MARKER_PREFIX}{instance_uuid}-{uuidlib.uuid4().hex[:8]}"
        pool = self.pool(destination)
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
            return volume(self.pool(source), marker) is not None
        finally:
            try:
                vol = volume(pool, marker)  # created through this pool: no refresh needed
                if vol is not None:
                    vol.delete(0)
            except (lv.libvirtError, DriverError) as exc:
                LOG.warning("host %s: marker %s left behind: %s", destination, marker, text(exc))

    def remove_markers(self, host: str, instance_uuid: str) -> None:
        """Remove the shared-storage markers of ``instance_uuid`` on ``host``."""
        lv = libvirt_module()
        pool = self.pool(host)
        for name in self.markers(host, instance_uuid):
            vol = volume(pool, name)
            if vol is not None:
                try:
                    vol.delete(0)
                except lv.libvirtError as exc:
                    raise DriverError(host, f"remove marker {name}", message(exc)) from None
