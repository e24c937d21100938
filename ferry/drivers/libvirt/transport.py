"""The migration transport on libvirt hosts: native TLS (``VIR_MIGRATE_TLS``), parallel
connections (multifd), compression and the migration network.

The destination check (:func:`check`) proves what it can over the libvirt connections, with no
shell on the hosts: for TLS, the QEMU certificate directory (``tls_cert_dir``, which must be
the ``migrate_tls_x509_cert_dir`` -- or ``default_tls_x509_cert_dir`` -- of the host's
qemu.conf) holds the server files on the destination and the client files on the source (read
through a transient ``dir`` storage pool); multifd compression (zstd, zlib) needs libvirt >= 9.4
on both hosts; for ``migration_network`` the destination's address inside it is chosen from
libvirt's host interfaces and the host's configured ``addresses``; the destination QEMU listens
on it and the source sends the stream to it (with TLS the destination's server certificate
must name that address). What it settles goes into
the migrate data (``driver_data["transport"]``), and :func:`flags_and_params` turns that into
``migrateToURI3``'s flags and parameters, so the transfer uses exactly what was checked.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import Any

from ferry.drivers.libvirt.connection import is_ip, libvirt_module, message
from ferry.drivers.libvirt.lookup import Lookup
from ferry.drivers.libvirt.storage import esc, refresh
from ferry.transport import MULTIFD_COMPRESSIONS, Transport, network_of

LOG = logging.getLogger(__name__)

#: the files QEMU loads from its certificate directory, per side of a TLS migration
SERVER_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
CLIENT_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")
#: libvirt that passes multifd compression (zlib, zstd) and its levels on to QEMU
MULTIFD_COMPRESSION_LIBVIRT = 9_004_000
#: the parameter names (constants only in libvirt-python >= 9.4)
ZLIB_LEVEL = "compression.zlib.level"
ZSTD_LEVEL = "compression.zstd.level"


def check(
    lookup: Lookup, source: str, destination: str, transport: Transport
) -> tuple[dict[str, Any], str | None]:
    """(what goes into ``driver_data["transport"]``, None) or ({}, why ``destination`` cannot
    take a migration with ``transport``)."""
    if transport.tls:
        for host, files, role in (
            (destination, SERVER_FILES, "destination"),
            (source, CLIENT_FILES, "source"),
        ):
            why = missing_certificates(lookup, host, files)
            if why:
                return {}, f"not set up for TLS migration as the {role} ({host}): {why}"
    if transport.compression in MULTIFD_COMPRESSIONS:
        for host in (source, destination):
            version = lookup.call(host, "read libvirt's version", lambda c: int(c.getLibVersion()))
            if version < MULTIFD_COMPRESSION_LIBVIRT:
                return {}, (
                    f"compression {transport.compression} needs libvirt >= 9.4.0 on both hosts; "
                    f"{host} has {_version(version)}"
                )
    data = transport.to_dict()
    if transport.migration_network is not None:
        address = migration_address(lookup, destination, transport.migration_network)
        if address is None:
            return {}, (
                f"no address in the migration network {transport.migration_network} "
                f"(known: {', '.join(host_addresses(lookup, destination)) or 'none'})"
            )
        data["migration_uri"] = "tcp://" + (f"[{address}]" if ":" in address else address)
        data["listen_address"] = address
    return data, None


def missing_certificates(lookup: Lookup, host: str, files: tuple[str, ...]) -> str | None:
    """What of ``files`` the host's ``tls_cert_dir`` lacks, or None when all are there. The
    directory is listed through a transient ``dir`` pool that is not built (a missing
    directory is reported, not created) and is destroyed afterwards."""
    lv = libvirt_module()
    path = lookup.specs[host].tls_cert_dir
    name = "ferry-tls-" + uuidlib.uuid5(uuidlib.NAMESPACE_URL, path).hex[:12]
    xml = f"<pool type='dir'><name>{name}</name><target><path>{esc(path)}</path></target></pool>"

    def listing(conn: Any) -> list[str] | str:
        try:
            pool = conn.storagePoolCreateXML(xml, 0)
        except lv.libvirtError as exc:  # missing, or a pool of someone else's there
            existing = _pool_on(conn, path)
            if existing is None:
                return f"{path} cannot be read ({message(exc)})"
            refresh(existing)
            return list(existing.listVolumes())
        try:
            return list(pool.listVolumes())
        finally:
            try:
                pool.destroy()
            except lv.libvirtError as exc:
                LOG.debug("host %s: pool on %s left: %s", host, path, message(exc))

    found = lookup.call(host, f"list {path}", listing)
    if isinstance(found, str):
        return found
    missing = [f for f in files if f not in found]
    return f"{', '.join(missing)} missing in {path}" if missing else None


def _pool_on(conn: Any, path: str) -> Any | None:
    """An active pool someone else runs on ``path``, or None."""
    lv = libvirt_module()
    for pool in conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            if f"<path>{esc(path)}</path>" in pool.XMLDesc(0):
                return pool
        except lv.libvirtError:
            continue
    return None


def host_addresses(lookup: Lookup, host: str) -> list[str]:
    """The host's addresses ferry knows: its configured ``addresses``, those of libvirt's host
    interfaces (when libvirtd has an interface backend) and the address of its URIs."""
    spec = lookup.specs[host]
    found = list(spec.addresses)
    lv = libvirt_module()

    def interfaces(conn: Any) -> list[str]:
        try:
            ifaces = conn.listAllInterfaces(lv.VIR_CONNECT_LIST_INTERFACES_ACTIVE)
        except lv.libvirtError as exc:  # no interface backend (netcf/udev): nothing to read
            LOG.debug("host %s: no host interfaces: %s", host, message(exc))
            return []
        addresses = []
        for iface in ifaces:
            try:
                root = ET.fromstring(iface.XMLDesc(0))
            except (lv.libvirtError, ET.ParseError):
                continue
            addresses += [ip.get("address", "") for ip in root.iter("ip")]
        return [a for a in addresses if a]

    found += lookup.call(host, "list the host interfaces", interfaces)
    for uri in (spec.migration_uri, spec.peer_uri, spec.uri):
        h = urllib.parse.urlsplit(uri).hostname if uri else None
        if h and is_ip(h):
            found.append(h)
    return list(dict.fromkeys(found))


def migration_address(lookup: Lookup, host: str, cidr: str) -> str | None:
    """The first of the host's addresses inside ``cidr``, or None."""
    net = network_of(cidr)
    for a in host_addresses(lookup, host):
        if net is not None and is_ip(a) and ipaddress.ip_address(a) in net:
            return a
    return None


def flags_and_params(driver_data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The flags and typed parameters of the transport the destination check settled."""
    t = driver_data.get("transport") or {}
    lv = libvirt_module()
    flags, params = 0, {}
    if t.get("tls"):
        flags |= lv.VIR_MIGRATE_TLS
    if t.get("parallel_connections"):
        flags |= lv.VIR_MIGRATE_PARALLEL
        params[lv.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(t["parallel_connections"])
    method = t.get("compression", "none")
    if method != "none":
        flags |= lv.VIR_MIGRATE_COMPRESSED
        params[lv.VIR_MIGRATE_PARAM_COMPRESSION] = method
        level = int(t.get("compression_level") or 0)
        if level:
            params[ZLIB_LEVEL if method == "zlib" else ZSTD_LEVEL] = level
    if t.get("migration_uri"):
        params[lv.VIR_MIGRATE_PARAM_URI] = t["migration_uri"]
        # the destination QEMU listens there (not on qemu.conf's migration_address)
        params[lv.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = t["listen_address"]
    return flags, params


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
