"""Three libvirt "hosts" on one machine for ferry's real-driver tests (the project's own script).

    python -m tests.infra.libvirt_hosts up     DIR   # create (idempotent); prints the variables
    python -m tests.infra.libvirt_hosts down   DIR   # stop everything by PID, delete the namespaces
    python -m tests.infra.libvirt_hosts status DIR   # "up" (exit 0) or "down: <why>" (exit 1)
    python -m tests.infra.libvirt_hosts env    DIR   # shell variables (the same as DIR/env.sh)
    python -m tests.infra.libvirt_hosts config DIR   # ferry [[hosts]] TOML for the three hosts
    python -m tests.infra.libvirt_hosts json   DIR   # the description (the same as DIR/env.json)

(``python tests/infra/libvirt_hosts.py ...`` works too; the module uses the standard library only.)
Tests only: libvirtd listens on plain TCP with ``auth_tcp = "none"``.

Layout (NET defaults to 10.78.0; DIR is any absolute directory, created if missing)::

    netns fy-<tag>-a   eth0 NET.1   libvirtd "lv-a"   instances: DIR/shared      (shared with B)
    netns fy-<tag>-b   eth0 NET.2   libvirtd "lv-b"   instances: DIR/shared      (shared with A)
    netns fy-<tag>-c   eth0 NET.3   libvirtd "lv-c"   instances: DIR/C/instances (its own)
    netns fy-<tag>-sw  bridge br0 joining the three hosts and the root netns
    root netns         fy<tag> NET.254/24, so qemu+tcp://NET.1/system works from the tests

Each libvirtd runs in its host's network namespace plus a private mount and UTS namespace, where
DIR/<H>/{etc,run,lib,log} and a cache directory are bind-mounted over /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, with its own /etc/hosts (the three
hosts by name) and an empty /etc/resolv.conf (libvirt resolves its hostname on every migration;
with an unreachable nameserver each lookup stalls ~4 s), a random ``host_uuid`` (equal UUIDs make
libvirt refuse: "Attempt to migrate guest to the same host") and ``migration_host`` = its address.
libvirtd is the child of a tiny child-subreaper (this file's ``_daemon`` mode), which adopts the
daemonized QEMUs and reaps them at once: a lazily reaping PID 1 otherwise adds 1-2 s to every
destroy and migration.

Instance path: every host sees its instances directory at the same path, INSTANCES
(default /var/lib/ferry/instances, bind-mounted inside the host's mount namespace). A and B see
the same directory DIR/shared there, C its own DIR/C/instances, so "write a marker on the
destination, look for it from the source" finds shared storage for A<->B only. The root netns
(where the tests run) does not see these at INSTANCES: it sees them at DIR/shared and
DIR/C/instances ("local_instances_path" in env.json); a driver has to go through libvirt (a
``dir`` storage pool on INSTANCES) to reach a host's files, as it would with remote hosts.

Libvirt does not recognise DIR/shared as shared storage (it knows NFS, GlusterFS, CephFS, GFS2,
OCFS2, ... by filesystem type; this is a bind mount of ext4/tmpfs), so a guest with a disk image
there migrates A<->B only with VIR_MIGRATE_UNSAFE; diskless guests are not affected. To C a disk
needs VIR_MIGRATE_NON_SHARED_DISK plus the instance directory prepared on C as a dir storage pool
(libvirt then pre-creates the image).

Guest network: A and B have an isolated bridge br-guest in their namespace and a persistent,
autostarted libvirt network "ferry-net" (forward mode bridge: no dnsmasq needed) on it; C has
neither, so a guest with a NIC on ferry-net cannot go to C ("Network not found").

TLS migration: each qemu.conf names migrate_tls_x509_cert_dir = TLS_CERT_DIR (DIR/<H>/etc/pki/qemu
seen from the root netns); A and B have a CA's certificates there (tests/infra/migrate_tls.py,
with the openssl command; the CA is DIR/ca), C's directory is empty, so C is not set up for TLS.
Nothing changes for a migration without VIR_MIGRATE_TLS.

Host C is the host that fails its checks: no shared storage with A and B, no ferry-net, and
little memory advertised -- a synthetic /proc/meminfo and NUMA node meminfo are bind-mounted in
its namespace, so libvirt's getInfo()/getFreeMemory()/getMemoryStats()/capabilities report
C_TOTAL MiB total and C_FREE MiB free (defaults 1024 and 48: a 64 MiB guest does not fit).
Guests still start on C (QEMU does not check), and migrations to C still work.

Fault injection for tests (Python API): ``LibvirtHosts.set_link(key, up)`` cuts/restores a host's
link on the bridge (its TCP URI stalls; its unix socket keeps working), or with key "root" the
tests' own link (every TCP URI stalls, the hosts still reach each other), and
``restart_daemon(key)`` restarts a host's libvirtd while its guests keep running.

Knobs (option, else environment variable, else default):
    --net        FERRY_LV_NET        10.78.0   first three octets; another one for a second
                                               concurrent instance
    --tag        FERRY_LV_TAG        hash of DIR   names: fy-<tag>-{a,b,c,sw}, root veth fy<tag>
    --instances  FERRY_LV_INSTANCES  /var/lib/ferry/instances
    --cache      FERRY_LV_CACHE      DIR/cache   QEMU capability cache (may outlive DIR)
    --log-level  FERRY_LV_LOG_LEVEL  3   libvirtd log level (1 debug .. 4 errors) in DIR/<H>/log
    --c-total-mib / --c-free-mib  FERRY_LV_C_TOTAL_MIB / FERRY_LV_C_FREE_MIB   1024 / 48
The values used by ``up`` are saved in DIR/state.json; down/status/env read them from there.

Processes are identified by PID plus start time (immune to PID reuse, and to /proc/PID/cmdline
reading empty in the middle of an exec). ``down`` stops every process inside the four network
namespaces (TERM, then KILL), the launchers it recorded, then deletes the namespaces and the root
veth. DIR keeps only the cache afterwards.

Needs: root, iproute2, python3, libvirt-daemon + libvirt-daemon-driver-qemu (/usr/sbin/libvirtd),
qemu-system-x86. Changes outside DIR: the system user/group libvirt-qemu (Debian's libvirtd looks
it up even with user="root"; normally made by libvirt-daemon-system), the empty mount points
/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and INSTANCES, and while up
the root-netns veth fy<tag>.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from tests.infra import migrate_tls
except ImportError:  # run as a file: python tests/infra/libvirt_hosts.py
    import migrate_tls  # type: ignore[no-redef]

HOSTS = ("A", "B", "C")
SHARED_HOSTS = ("A", "B")  # these two see one instances directory; C has its own
LOW_MEMORY_HOSTS = ("C",)  # these advertise C_TOTAL/C_FREE MiB
NETWORK_HOSTS = ("A", "B")  # these have the libvirt network GUEST_NETWORK; C lacks it
TLS_HOSTS = ("A", "B")  # these have migration TLS certificates (C's directory is empty)
TLS_CERT_DIR = "/etc/libvirt/pki/qemu"  # qemu.conf's migrate_tls_x509_cert_dir, in DIR/<H>/etc
GUEST_NETWORK = "ferry-net"
GUEST_BRIDGE = "br-guest"
DEFAULT_NET = "10.78.0"
DEFAULT_INSTANCES = "/var/lib/ferry/instances"
DEFAULT_C_TOTAL_MIB = 1024
DEFAULT_C_FREE_MIB = 48
LIBVIRTD = "/usr/sbin/libvirtd"
QEMU = "qemu-system-x86_64"
LIBVIRT_PORT = 16509
READY_TIMEOUT = 30.0
STATE_FILE = "state.json"

# mount points inside a host (bind targets) -> subdirectory of DIR/<H>
_DAEMON_DIRS = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
}
_CACHE_MOUNT = "/var/cache/libvirt"


class HostsError(RuntimeError):
    """The hosts could not be brought up (the message carries the daemons' log tails)."""


@dataclass(frozen=True)
class Host:
    """One libvirt host as the tests and ferry's config see it."""

    key: str  # "A"
    name: str  # ferry host name and the host's hostname: "lv-a"
    ip: str
    netns: str
    uri: str  # qemu+tcp://IP/system (reachable from the root netns and the other hosts)
    unix_uri: str  # qemu+unix:///system?socket=... (from the root netns only)
    instances_path: str  # the instances directory as the host (libvirtd, QEMU) sees it
    local_instances_path: str  # the same directory as seen from the root netns (tests)
    shares_storage_with: tuple[str, ...]  # other host names seeing the same instances directory
    advertised_memory_mib: int | None  # None: the machine's real memory
    advertised_free_mib: int | None
    networks: tuple[str, ...]  # libvirt networks defined and active on the host
    tls: bool = False  # certificates for TLS migration in TLS_CERT_DIR

    def ferry_config(self) -> dict[str, Any]:
        """A ``[[hosts]]`` entry for ferry's config."""
        return {
            "name": self.name,
            "driver": "libvirt",
            "uri": self.uri,
            "instances_path": self.instances_path,
            "tls_cert_dir": TLS_CERT_DIR,
        }


@dataclass(frozen=True)
class Settings:
    directory: Path
    net: str
    tag: str
    instances: str
    cache: Path
    log_level: int
    c_total_mib: int
    c_free_mib: int

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["directory"] = str(self.directory)
        d["cache"] = str(self.cache)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Settings:
        d = dict(d)
        d["directory"] = Path(d["directory"])
        d["cache"] = Path(d["cache"])
        return cls(**d)


# ------------------------------------------------------------------ processes (PID + start time)

Proc = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _identify(pid: int) -> Proc | None:
    st = _proc_stat(pid)
    return (pid, st[2]) if st else None


def _alive(proc: Proc) -> bool:
    st = _proc_stat(proc[0])
    return st is not None and st[0] not in ("Z", "X") and st[2] == proc[1]


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return s.st_dev, s.st_ino


def _procs_in_netns(netns: str) -> list[Proc]:
    """Every live process whose network namespace is /run/netns/<netns>."""
    target = _ns_id(f"/run/netns/{netns}")
    if target is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if _ns_id(f"/proc/{entry}/ns/net") == target:
            proc = _identify(int(entry))
            if proc and _alive(proc):
                found.append(proc)
    return found


def _wait_gone(procs: Iterable[Proc], timeout: float) -> list[Proc]:
    """Poll until none of ``procs`` is alive or the deadline passes; returns the survivors."""
    left = [p for p in procs if _alive(p)]
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        _reap_children()
        left = [p for p in left if _alive(p)]
    return left


def _terminate(procs: Iterable[Proc], timeout: float = 10.0) -> list[Proc]:
    """SIGTERM, wait, SIGKILL, wait. Returns processes that still would not die."""
    procs = [p for p in procs if _alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for p in procs:
            if _alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p[0], sig)
        procs = _wait_gone(procs, wait)
        if not procs:
            break
    return procs


# launchers started by this process (so that it reaps them instead of leaving zombies)
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    for pid, popen in list(_children.items()):
        if popen.poll() is not None:
            del _children[pid]


# ------------------------------------------------------------------------------------ helpers


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise HostsError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _netns_list() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns")}
    except FileNotFoundError:
        return set()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path} (last {min(lines, len(text))} lines)\n" + "\n".join(text[-lines:])


def _fake_meminfo(real: str, total_kib: int, free_kib: int, node: str | None) -> str:
    """``real`` (/proc/meminfo, or a NUMA node's meminfo when ``node`` is its prefix) with
    the totals replaced: MemTotal=total, MemFree=MemAvailable=free, no buffers/cache."""
    values = {
        "MemTotal": total_kib,
        "MemFree": free_kib,
        "MemAvailable": free_kib,
        "MemUsed": total_kib - free_kib,
        "Buffers": 0,
        "Cached": 0,
        "FilePages": 0,
        "SwapCached": 0,
    }
    out = []
    for line in real.splitlines():
        key = line.split(":", 1)[0]
        if node is not None:
            key = key.removeprefix(node).strip()
        if key in values:
            prefix = f"{node} " if node is not None else ""
            out.append(f"{prefix}{key + ':':<16}{values[key]:>8} kB")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ the hosts


class LibvirtHosts:
    """The three hosts under one directory. ``up()``/``down()`` are idempotent."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        net: str | None = None,
        tag: str | None = None,
        instances: str | None = None,
        cache: str | os.PathLike[str] | None = None,
        log_level: int | None = None,
        c_total_mib: int | None = None,
        c_free_mib: int | None = None,
    ) -> None:
        d = Path(directory).absolute()
        env = os.environ.get
        self.requested = Settings(
            directory=d,
            net=net or env("FERRY_LV_NET") or DEFAULT_NET,
            tag=tag or env("FERRY_LV_TAG") or hashlib.sha1(str(d).encode()).hexdigest()[:6],
            instances=instances or env("FERRY_LV_INSTANCES") or DEFAULT_INSTANCES,
            cache=Path(cache or env("FERRY_LV_CACHE") or d / "cache").absolute(),
            log_level=int(log_level or env("FERRY_LV_LOG_LEVEL") or 3),
            c_total_mib=int(c_total_mib or env("FERRY_LV_C_TOTAL_MIB") or DEFAULT_C_TOTAL_MIB),
            c_free_mib=int(c_free_mib or env("FERRY_LV_C_FREE_MIB") or DEFAULT_C_FREE_MIB),
        )
        parts = self.requested.net.split(".")
        if len(parts) != 3 or not all(p.isdigit() and 0 <= int(p) < 256 for p in parts):
            raise ValueError(f"net must be three octets like 10.78.0, not {self.requested.net!r}")
        if len(self.requested.tag) > 8 or not self.requested.tag.isalnum():
            raise ValueError("tag: at most 8 letters/digits (interface names are <= 15 chars)")
        self.directory = d
        self.timings: dict[str, float] = {}  # of the last up/down phases, in seconds

    # ---- settings in force: those saved by `up` when present, else the requested ones
    @property
    def settings(self) -> Settings:
        try:
            return Settings.from_json(json.loads((self.directory / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return self.requested

    def netns(self, key: str, s: Settings | None = None) -> str:
        s = s or self.settings
        return f"fy-{s.tag}-{key.lower()}"

    def hosts(self, s: Settings | None = None) -> dict[str, Host]:
        s = s or self.settings
        out = {}
        for i, key in enumerate(HOSTS, start=1):
            ip = f"{s.net}.{i}"
            low = key in LOW_MEMORY_HOSTS
            out[key] = Host(
                key=key,
                name=f"lv-{key.lower()}",
                ip=ip,
                netns=self.netns(key, s),
                uri=f"qemu+tcp://{ip}/system",
                unix_uri=f"qemu+unix:///system?socket={s.directory / key / 'run' / 'libvirt-sock'}",
                instances_path=s.instances,
                local_instances_path=str(self._instances_source(key, s)),
                shares_storage_with=tuple(
                    f"lv-{o.lower()}" for o in SHARED_HOSTS if key in SHARED_HOSTS and o != key
                ),
                advertised_memory_mib=s.c_total_mib if low else None,
                advertised_free_mib=s.c_free_mib if low else None,
                networks=(GUEST_NETWORK,) if key in NETWORK_HOSTS else (),
                tls=key in TLS_HOSTS and migrate_tls.available(),
            )
        return out

    def __getitem__(self, key: str) -> Host:
        return self.hosts()[key]

    @staticmethod
    def _instances_source(key: str, s: Settings) -> Path:
        if key in SHARED_HOSTS:
            return s.directory / "shared"
        return s.directory / key / "instances"

    def _launchers(self, key: str) -> list[Proc]:
        try:
            lines = (self.directory / key / "launcher.pid").read_text().split("\n")
        except OSError:
            return []
        return [(int(a), int(b)) for a, b in (ln.split() for ln in lines if ln.strip())]

    def libvirtd(self, key: str) -> Proc | None:
        """The host's running libvirtd: the PID it wrote, if alive and inside the host's netns."""
        try:
            pid = int((self.directory / key / "run" / "libvirtd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        proc = _identify(pid)
        target = _ns_id(f"/run/netns/{self.netns(key)}")
        if proc is None or not _alive(proc) or target is None:
            return None
        return proc if _ns_id(f"/proc/{pid}/ns/net") == target else None

    # ---- status
    def why_down(self) -> str | None:
        """None when all three hosts are up, else the first reason found."""
        if not (self.directory / STATE_FILE).exists():
            return f"not set up ({self.directory / STATE_FILE} missing)"
        s = self.settings
        have = _netns_list()
        for key in HOSTS:
            if self.netns(key, s) not in have:
                return f"netns {self.netns(key, s)} missing"
            if not any(_alive(p) for p in self._launchers(key)):
                return f"host {key}: launcher not running"
            if self.libvirtd(key) is None:
                return f"host {key}: libvirtd not running"
            if not (s.directory / key / "run" / "libvirt-sock").is_socket():
                return f"host {key}: no libvirt-sock"
        return None

    def is_up(self) -> bool:
        return self.why_down() is None

    # ---- up
    def up(self) -> dict[str, Host]:
        """Bring the three hosts up (or leave them as they are when already up with the same
        settings). Raises HostsError with the daemons' log tails when they do not come up."""
        _preflight()
        if self.is_up() and self.settings == self.requested:
            self._write_env()
            return self.hosts()
        self.down()
        s = self.requested
        try:
            self._up(s)
        except BaseException:
            self.down()
            raise
        return self.hosts()

    def _up(self, s: Settings) -> None:
        _ensure_qemu_user()
        for p in (*_DAEMON_DIRS, _CACHE_MOUNT, s.instances):
            Path(p).mkdir(parents=True, exist_ok=True)
        s.directory.mkdir(parents=True, exist_ok=True)
        (s.directory / STATE_FILE).write_text(json.dumps(s.to_json(), indent=1) + "\n")
        self._check_subnet_free(s)
        t0 = time.monotonic()
        self._network(s)
        hosts = self.hosts(s)
        for key in HOSTS:
            self._write_host_files(s, hosts, key)
        t1 = time.monotonic()
        for key in HOSTS:
            self._start_daemon(s, key)
        self._wait_ready(s, hosts)
        self._write_env()
        self.timings.update(network=t1 - t0, daemons=time.monotonic() - t1)

    def _check_subnet_free(self, s: Settings) -> None:
        res = _run("ip", "-o", "-4", "addr", "show")
        for line in res.stdout.splitlines():
            fields = line.split()
            addr = fields[3] if len(fields) > 3 else ""
            if addr.startswith(f"{s.net}."):
                dev = fields[1].split("@")[0]
                try:
                    owner = Path(f"/sys/class/net/{dev}/ifalias").read_text().strip()
                except OSError:
                    owner = ""
                hint = (
                    f"another instance is up there: {owner} (stop it with: python -m "
                    f"tests.infra.libvirt_hosts down {owner.split(' ', 1)[1]})"
                    if owner.startswith("libvirt_hosts ")
                    else "not one of ours"
                )
                raise HostsError(
                    f"{s.net}.0/24 is already in use in the root netns ({dev} {addr}): {hint}; "
                    "or pick another --net / FERRY_LV_NET"
                )

    def _network(self, s: Settings) -> None:
        sw = self.netns("sw", s)
        for ns in (sw, *(self.netns(k, s) for k in HOSTS)):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "dev", "br0", "up")
        for i, key in enumerate(HOSTS, start=1):
            ns = self.netns(key, s)
            port = f"port-{key.lower()}"
            _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
                 "peer", "name", port, "netns", sw)  # fmt: skip
            _run("ip", "-n", sw, "link", "set", "dev", port, "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{s.net}.{i}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "dev", "eth0", "up")
            if key in NETWORK_HOSTS:  # an isolated bridge for guest NICs (GUEST_NETWORK)
                _run("ip", "-n", ns, "link", "add", GUEST_BRIDGE, "type", "bridge")
                _run("ip", "-n", ns, "link", "set", "dev", GUEST_BRIDGE, "up")
        root_if = f"fy{s.tag}"
        _run("ip", "link", "add", root_if, "type", "veth", "peer", "name", "port-root", "netns", sw)
        _run("ip", "-n", sw, "link", "set", "dev", "port-root", "master", "br0", "up")
        _run("ip", "addr", "add", f"{s.net}.254/24", "dev", root_if)
        # whose it is, for the "subnet in use" message of another instance
        _run("ip", "link", "set", "dev", root_if, "alias", f"libvirt_hosts {s.directory}")
        _run("ip", "link", "set", "dev", root_if, "up")

    def _write_host_files(self, s: Settings, hosts: dict[str, Host], key: str) -> None:
        h = hosts[key]
        d = s.directory / key
        for sub in _DAEMON_DIRS.values():
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "etc" / "qemu").mkdir(exist_ok=True)
        cache = s.cache / key
        cache.mkdir(parents=True, exist_ok=True)
        instances = self._instances_source(key, s)
        instances.mkdir(parents=True, exist_ok=True)
        (s.directory / "console").mkdir(exist_ok=True)
        (d / "etc" / "libvirtd.conf").write_text(
            f"""# generated by tests/infra/libvirt_hosts.py -- TESTS ONLY: no TLS, no authentication
listen_tls = 0
listen_tcp = 1
listen_addr = "{h.ip}"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
# must differ between hosts, else "Attempt to migrate guest to the same host <uuid>"
host_uuid = "{uuid.uuid4()}"
log_outputs = "{s.log_level}:file:/var/log/libvirt/libvirtd.log"
"""
        )
        (d / "etc" / "qemu.conf").write_text(
            f"""# generated by tests/infra/libvirt_hosts.py
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# no cgroups (two daemons on one machine would collide on qemu-<id>-<name>) and no per-QEMU
# mount namespace; QEMU's stdio goes straight to /var/log/libvirt/qemu/<name>.log (no virtlogd)
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
# the address a destination QEMU listens on and hands to the source; without it libvirt sends
# its hostname, which resolves to 127.0.0.1 or not at all here
migration_address = "{h.ip}"
migration_host = "{h.ip}"
# TLS migration (VIR_MIGRATE_TLS): certificates of tests/infra/migrate_tls.py (none on C)
migrate_tls_x509_cert_dir = "{TLS_CERT_DIR}"
"""
        )
        certs = d / "etc" / Path(TLS_CERT_DIR).relative_to("/etc/libvirt")
        shutil.rmtree(certs, ignore_errors=True)
        certs.mkdir(parents=True)
        if h.tls:
            migrate_tls.make_host(migrate_tls.make_ca(s.directory / "ca"), certs, h.name, h.ip)
        (d / "etc" / "libvirt.conf").write_text("")
        if key in NETWORK_HOSTS:
            # persistent + autostarted: libvirtd brings it up while it starts (bridge mode
            # needs no dnsmasq, which is not installed)
            nets = d / "etc" / "qemu" / "networks"
            (nets / "autostart").mkdir(parents=True, exist_ok=True)
            (nets / f"{GUEST_NETWORK}.xml").write_text(
                f"<network>\n  <name>{GUEST_NETWORK}</name>\n  <uuid>{uuid.uuid4()}</uuid>\n"
                f"  <forward mode='bridge'/>\n  <bridge name='{GUEST_BRIDGE}'/>\n</network>\n"
            )
            link = nets / "autostart" / f"{GUEST_NETWORK}.xml"
            link.unlink(missing_ok=True)
            link.symlink_to(f"/etc/libvirt/qemu/networks/{GUEST_NETWORK}.xml")
        names = "".join(f"{o.ip} {o.name}\n" for o in hosts.values())
        (d / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
        (d / "resolv.conf").write_text("# no DNS inside the test hosts\n")

        binds = [(str(d / sub), target) for target, sub in _DAEMON_DIRS.items()]
        binds += [
            (str(cache), _CACHE_MOUNT),
            (str(d / "hosts"), "/etc/hosts"),
            (str(d / "resolv.conf"), "/etc/resolv.conf"),
            (str(instances), s.instances),
        ]
        if key in LOW_MEMORY_HOSTS:
            binds += self._fake_memory(s, d)
        spec = {
            "hostname": h.name,
            "binds": binds,
            "argv": [
                LIBVIRTD,
                "--listen",
                "--config",
                "/etc/libvirt/libvirtd.conf",
                "--pid-file",
                "/run/libvirt/libvirtd.pid",
            ],
        }
        (d / "daemon.json").write_text(json.dumps(spec, indent=1) + "\n")

    @staticmethod
    def _fake_memory(s: Settings, d: Path) -> list[tuple[str, str]]:
        """Files advertising s.c_total_mib / s.c_free_mib, spread over the NUMA nodes."""
        total, free = s.c_total_mib * 1024, s.c_free_mib * 1024
        meminfo = d / "meminfo"
        meminfo.write_text(_fake_meminfo(Path("/proc/meminfo").read_text(), total, free, None))
        binds = [(str(meminfo), "/proc/meminfo")]
        nodes = sorted(Path("/sys/devices/system/node").glob("node[0-9]*"))
        for node in nodes:
            real = node / "meminfo"
            if not real.exists():
                continue
            fake = d / f"{node.name}-meminfo"
            prefix = f"Node {node.name.removeprefix('node')}"
            text = _fake_meminfo(real.read_text(), total // len(nodes), free // len(nodes), prefix)
            fake.write_text(text)
            binds.append((str(fake), str(real)))
        return binds

    def _start_daemon(self, s: Settings, key: str) -> None:
        d = s.directory / key
        with open(d / "daemon.out", "ab") as out:
            popen = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns(key, s),
                    sys.executable,
                    str(Path(__file__).absolute()),
                    "_daemon",
                    str(d),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _children[popen.pid] = popen
        proc = _identify(popen.pid)
        if proc is not None:
            with open(d / "launcher.pid", "a") as f:
                f.write(f"{proc[0]} {proc[1]}\n")

    def _wait_ready(self, s: Settings, hosts: dict[str, Host]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = dict(hosts)
        last_error: dict[str, str] = {}
        while pending:
            for key, h in list(pending.items()):
                if not any(_alive(p) for p in self._launchers(key)):
                    raise HostsError(self._failure(s, key, "the daemon exited"))
                err = _probe(h)
                if err is None:
                    del pending[key]
                else:
                    last_error[key] = err
            if pending and time.monotonic() > deadline:
                key = next(iter(pending))
                raise HostsError(
                    self._failure(
                        s, key, f"not ready after {READY_TIMEOUT:.0f} s: {last_error.get(key)}"
                    )
                )
            if pending:
                time.sleep(0.05)

    def _failure(self, s: Settings, key: str, what: str) -> str:
        d = s.directory / key
        return "\n".join(
            [
                f"libvirt host {key} ({self.netns(key, s)}) did not come up: {what}",
                _tail(d / "daemon.out"),
                _tail(d / "log" / "libvirtd.log"),
            ]
        )

    # ---- down
    def down(self) -> None:
        """Stop everything of this instance by PID, delete its namespaces and root veth, and
        remove DIR's contents except the cache. Safe to call when nothing is up."""
        s = self.settings
        t0 = time.monotonic()
        names = [self.netns(k, s) for k in (*HOSTS, "sw")]
        victims: set[Proc] = set()
        for key in HOSTS:
            victims.update(p for p in self._launchers(key) if _alive(p))
        have = _netns_list()
        for ns in names:
            if ns in have:
                victims.update(_procs_in_netns(ns))
        stuck = _terminate(victims)
        _reap_children()
        self.timings.update(stop_processes=time.monotonic() - t0, stopped=len(victims))
        for ns in names:
            if ns in have:
                _run("ip", "netns", "del", ns, check=False)
        root_if = f"fy{s.tag}"
        if Path(f"/sys/class/net/{root_if}").exists():
            _run("ip", "link", "del", root_if, check=False)
        if stuck:
            print(f"libvirt_hosts: warning: processes did not exit: {stuck}", file=sys.stderr)
        self._clean_directory(s)

    @staticmethod
    def _clean_directory(s: Settings) -> None:
        """Remove everything under DIR except the cache (which may live inside DIR)."""

        def clean(d: Path) -> None:
            for child in d.iterdir():
                if child == s.cache:
                    continue
                if s.cache.is_relative_to(child) and child.is_dir():
                    clean(child)
                else:
                    _remove(child)

        if s.directory.is_dir():
            clean(s.directory)

    # ---- conveniences for tests
    def restart_daemon(self, key: str) -> None:
        """Stop host ``key``'s libvirtd (its guests keep running) and start a new one; returns
        when it answers again. For "connection dropped" / "daemon restarted" tests."""
        s = self.settings
        proc = self.libvirtd(key)
        if proc is not None and _terminate([proc]):
            raise HostsError(f"libvirtd of {key} did not stop")
        (s.directory / key / "run" / "libvirtd.pid").unlink(missing_ok=True)
        self._start_daemon(s, key)
        self._wait_ready(s, {key: self.hosts(s)[key]})

    def set_link(self, key: str, up: bool) -> None:
        """Cut (up=False) or restore a link on the bridge. ``key`` "A"/"B"/"C": that host's
        link (TCP to it stalls, from the tests and from the other hosts; its unix socket keeps
        working). ``key`` "root": the root netns' link, i.e. the tests/orchestrator lose their
        TCP connections to every host while the hosts still reach each other (a migration
        between them goes on). Restoring also flushes the ARP entries that failed meanwhile
        (else connecting fails with "No route to host" for a while)."""
        if key not in (*HOSTS, "root"):
            raise ValueError(f"set_link: key must be one of {', '.join(HOSTS)}, root")
        s = self.settings
        port = f"port-{key.lower()}"
        _run("ip", "-n", self.netns("sw", s), "link", "set", "dev", port, "up" if up else "down")
        if up:
            _run("ip", "neigh", "flush", "dev", f"fy{s.tag}", check=False)
            for k in HOSTS:
                _run("ip", "-n", self.netns(k, s), "neigh", "flush", "dev", "eth0", check=False)

    def links_down(self) -> list[str]:
        """The keys ("A", "B", "C", "root") whose link set_link has cut."""
        res = _run("ip", "-n", self.netns("sw"), "-o", "link", "show", "master", "br0")
        down = []
        for line in res.stdout.splitlines():
            name, flags = line.split(":")[1].strip().split("@")[0], line.split("<")[1]
            if name.startswith("port-") and "UP" not in flags.split(">")[0].split(","):
                down.append(name.removeprefix("port-").upper().replace("ROOT", "root"))
        return down

    def restore_links(self) -> None:
        for key in self.links_down():
            self.set_link(key, True)

    # ---- env
    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "directory": str(s.directory),
            "net": s.net,
            "root_ip": f"{s.net}.254",
            "console_dir": str(s.directory / "console"),
            "hosts": {k: dataclasses.asdict(h) for k, h in self.hosts(s).items()},
        }

    def shell_env(self) -> str:
        s = self.settings
        lines = [f"FERRY_LV_DIR={shlex.quote(str(s.directory))}", f"FERRY_LV_NET={s.net}"]
        for key, h in self.hosts(s).items():
            p = f"FERRY_LV_{key}_"
            lines += [
                f"{p}NAME={h.name}",
                f"{p}URI={shlex.quote(h.uri)}",
                f"{p}UNIX_URI={shlex.quote(h.unix_uri)}",
                f"{p}IP={h.ip}",
                f"{p}NETNS={h.netns}",
                f"{p}INSTANCES={shlex.quote(h.instances_path)}",
                f"{p}INSTANCES_LOCAL={shlex.quote(h.local_instances_path)}",
            ]
        return "\n".join(lines) + "\n"

    def toml(self) -> str:
        out = []
        for h in self.hosts().values():
            out.append("[[hosts]]")
            out += [f"{k} = {json.dumps(v)}" for k, v in h.ferry_config().items()]
            out.append("")
        return "\n".join(out)

    def _write_env(self) -> None:
        d = self.settings.directory
        (d / "env.sh").write_text(self.shell_env())
        (d / "env.json").write_text(json.dumps(self.describe(), indent=1) + "\n")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise HostsError("must run as root (network namespaces, bind mounts, libvirtd)")
    missing = [c for c in ("ip", "virsh", LIBVIRTD, QEMU) if shutil.which(c) is None]
    if missing:
        raise HostsError(
            f"missing {', '.join(missing)} (apt-get install iproute2 libvirt-daemon "
            "libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)"
        )


def _ensure_qemu_user() -> None:
    """Debian's libvirtd resolves its compiled-in QEMU user even when qemu.conf says root:
    "Failed to parse user 'libvirt-qemu'" without it (libvirt-daemon-system would create it)."""
    if _run("getent", "group", "libvirt-qemu", check=False).returncode != 0:
        _run("groupadd", "-r", "libvirt-qemu")
    if _run("getent", "passwd", "libvirt-qemu", check=False).returncode != 0:
        _run("useradd", "-r", "-g", "libvirt-qemu", "-M", "-d", "/var/lib/libvirt",
             "-s", "/usr/sbin/nologin", "libvirt-qemu")  # fmt: skip


def _probe(h: Host) -> str | None:
    """None when the host answers on its TCP URI and its networks are active, else why not."""
    try:
        with socket.create_connection((h.ip, LIBVIRT_PORT), timeout=1):
            pass
    except OSError as e:
        return f"{h.ip}:{LIBVIRT_PORT}: {e}"
    try:
        import libvirt
    except ImportError:
        for args in (["hostname"], *(["net-info", n] for n in h.networks)):
            res = subprocess.run(
                ["virsh", "-q", "-c", h.uri, *args], capture_output=True, text=True, timeout=10
            )
            if res.returncode != 0:
                return res.stderr.strip()
            if args[0] == "net-info" and not any(
                ln.split() == ["Active:", "yes"] for ln in res.stdout.splitlines()
            ):
                return f"network {args[1]} not active"
        return None
    try:
        conn = libvirt.open(h.uri)
    except libvirt.libvirtError as e:
        return str(e)
    try:
        conn.getHostname()
        for name in h.networks:
            if not conn.networkLookupByName(name).isActive():
                return f"network {name} not active"
    except libvirt.libvirtError as e:
        return str(e)
    finally:
        conn.close()
    return None


# ---------------------------------------------------------- inside a host: the subreaper


def _daemon_main(directory: str) -> int:
    """Runs inside the host's netns (via ``ip netns exec``): own mount + UTS namespace, bind
    mounts, hostname, then libvirtd as a child of this child-subreaper."""
    spec = json.loads((Path(directory) / "daemon.json").read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, clone_newuts = 0x00020000, 0x04000000
    ms_bind, ms_rec, ms_slave = 4096, 16384, 1 << 19
    pr_set_child_subreaper = 36

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(clone_newns | clone_newuts), "unshare")
    check(libc.mount(None, b"/", None, ms_rec | ms_slave, None), "make / rslave")
    if _ns_id("/proc/self/ns/mnt") == _ns_id("/proc/1/ns/mnt"):
        raise OSError("still in the root mount namespace; refusing to bind-mount")
    for src, dst in spec["binds"]:
        check(libc.mount(src.encode(), dst.encode(), None, ms_bind, None), f"bind {src} {dst}")
    socket.sethostname(spec["hostname"])
    check(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0), "PR_SET_CHILD_SUBREAPER")

    argv = spec["argv"]
    child = os.fork()
    if child == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    rc = 0
    while True:  # reap libvirtd and every orphan (QEMU) it leaves us, until none is left
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            rc = os.waitstatus_to_exitcode(status)
            print(f"libvirtd exited with {rc}", file=sys.stderr, flush=True)
    return rc if rc >= 0 else 128 - rc


# ---------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="libvirt_hosts", description="three libvirt hosts for ferry's tests"
    )
    p.add_argument("command", choices=["up", "down", "status", "env", "config", "json"])
    p.add_argument("directory")
    p.add_argument("--net")
    p.add_argument("--tag")
    p.add_argument("--instances")
    p.add_argument("--cache")
    p.add_argument("--log-level", type=int)
    p.add_argument("--c-total-mib", type=int)
    p.add_argument("--c-free-mib", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_daemon"]:
        return _daemon_main(argv[1])
    a = _parser().parse_args(argv)
    hosts = LibvirtHosts(
        a.directory,
        net=a.net,
        tag=a.tag,
        instances=a.instances,
        cache=a.cache,
        log_level=a.log_level,
        c_total_mib=a.c_total_mib,
        c_free_mib=a.c_free_mib,
    )
    if a.command == "up":
        try:
            hosts.up()
        except HostsError as e:
            print(f"libvirt_hosts: {e}", file=sys.stderr)
            return 1
        print(hosts.shell_env(), end="")
        return 0
    if a.command == "down":
        hosts.down()
        return 0
    why = hosts.why_down()
    if a.command == "status":
        print("up" if why is None else f"down: {why}")
        return 0 if why is None else 1
    if why is not None:
        print(f"libvirt_hosts: down: {why}", file=sys.stderr)
        return 1
    if a.command == "env":
        print(hosts.shell_env(), end="")
    elif a.command == "config":
        print(hosts.toml(), end="")
    else:
        print(json.dumps(hosts.describe(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
