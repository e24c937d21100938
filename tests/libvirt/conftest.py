"""Fixtures for tests against three real libvirt hosts (tests/infra/libvirt_hosts.py).

Session: ``libvirt_env`` brings the hosts lv-a, lv-b, lv-c up once and down (by PID) at the
end. The tests are skipped, with the reason, when this machine cannot run them (not root, no
libvirtd / qemu-system-x86_64 / gcc, no libvirt-python); with FERRY_REQUIRE_LIBVIRT=1 (CI)
they fail instead. Other knobs:

    FERRY_LIBVIRT_DIR   use this directory; hosts already up there are reused and left up.
                        Default: <tmp>/ferry-libvirt-<subnet>, one per subnet, guarded by a
                        lock so two sessions cannot share it, and leftovers of a killed
                        session are torn down by the next one
    FERRY_LV_NET        subnet (first three octets, default 10.78.0); see libvirt_hosts.py
    FERRY_LV_CACHE      QEMU capability cache (default ~/.cache/ferry/libvirt)

Per test: ``make_guest(...)`` starts tiny TCG guests; after every test that used the hosts,
every domain on every host is destroyed and undefined, storage pools and extra networks are
removed, the guest network is restored, the instance directories and consoles are emptied,
links cut with ``libvirt_env.set_link`` are restored and a stopped libvirtd is restarted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra import guest as guests
from tests.infra.libvirt_hosts import (
    DEFAULT_NET,
    GUEST_BRIDGE,
    LIBVIRTD,
    QEMU,
    HostsError,
    LibvirtHosts,
)
from tests.libvirt import REQUIRE_ENV, unavailable

DIR_ENV = "FERRY_LIBVIRT_DIR"
CACHE_ENV = "FERRY_LV_CACHE"

_report: list[str] = []  # lines for the terminal summary


def _unavailable() -> str | None:
    """Why the real libvirt tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (network namespaces, bind mounts and libvirtd need root)"
    missing = [b for b in ("ip", "virsh", LIBVIRTD, QEMU) if shutil.which(b) is None]
    if missing:
        return (
            f"{', '.join(missing)} not found (apt-get install iproute2 libvirt-daemon "
            "libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)"
        )
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return (
            "libvirt-python is not installed (pip install 'ferry[libvirt]'; building it "
            "needs libvirt-dev, pkg-config and gcc)"
        )
    return guests.toolchain_problem()


def _not_available(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        _report.append(f"libvirt: UNAVAILABLE although {REQUIRE_ENV}=1: {reason}")
    else:
        _report.append(f"libvirt: tests skipped: {reason} (set {REQUIRE_ENV}=1 to fail instead)")
    unavailable(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in dict.fromkeys(_report):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def libvirt_env() -> Iterator[LibvirtHosts]:
    """The three hosts (LibvirtHosts: .hosts(), ['A'], .set_link(), .restart_daemon())."""
    reason = _unavailable()
    if reason:
        _not_available(reason)
    import libvirt

    # libvirt's default handler prints every error to stderr; the exceptions carry them anyway
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    given = os.environ.get(DIR_ENV)
    lock = None
    if given:
        directory = given
    else:
        net = os.environ.get("FERRY_LV_NET") or DEFAULT_NET
        directory = os.path.join(tempfile.gettempdir(), f"ferry-libvirt-{net}")
        lock = open(f"{directory}.lock", "w")  # noqa: SIM115 (held for the whole session)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            pytest.fail(
                f"the libvirt test hosts in {directory} are in use by another test session; "
                "set FERRY_LV_NET to another subnet (e.g. 10.78.5) to run beside it",
                pytrace=False,
            )
    cache = os.environ.get(CACHE_ENV) or str(guests.cache_dir().parent / "libvirt")
    env = LibvirtHosts(directory, cache=cache)
    reuse = bool(given) and env.is_up()
    if reuse:
        _report.append(f"libvirt: reusing the hosts up in {directory} ({env.settings.net}.0/24)")
    else:
        started = time.monotonic()
        try:
            env.down()  # whatever a killed session left in this directory
            leftovers = dict(env.timings)
            env.up()
        except HostsError as e:
            if lock is not None:
                lock.close()
            pytest.fail(str(e), pytrace=False)
        phases = f"network {env.timings['network']:.2f} s, daemons {env.timings['daemons']:.2f} s"
        if leftovers.get("stopped"):
            phases += f"; {leftovers['stopped']:.0f} leftover processes stopped first"
        _report.append(
            f"libvirt: hosts up in {time.monotonic() - started:.2f} s ({phases}; "
            f"{directory}, {env.settings.net}.0/24)"
        )
    try:
        yield env
    finally:
        if not reuse:
            started = time.monotonic()
            env.down()
            _report.append(f"libvirt: hosts down in {time.monotonic() - started:.2f} s")
        if lock is not None:
            shutil.rmtree(directory, ignore_errors=True)
            lock.close()


@pytest.fixture(scope="session")
def libvirt_hosts(libvirt_env: LibvirtHosts) -> dict[str, dict[str, Any]]:
    """Ferry-ready description, by ferry host name ("lv-a", "lv-b", "lv-c"): uri (qemu+tcp),
    unix_uri, ip, netns, instances_path (as the host sees it), local_instances_path (the same
    directory from the tests), shares_storage_with, advertised_memory_mib / _free_mib (C),
    networks, and "config": the ``[[hosts]]`` entry {name, driver, uri, instances_path}."""
    described = {
        h.name: {**dataclasses.asdict(h), "config": h.ferry_config()}
        for h in libvirt_env.hosts().values()
    }
    return json.loads(json.dumps(described))  # plain JSON types (lists, not tuples)


def _host_key(env: LibvirtHosts, host: str) -> str:
    """ "A" / "a" / "lv-a" -> "A"."""
    for key, h in env.hosts().items():
        if host in (key, key.lower(), h.name):
            return key
    raise KeyError(f"no libvirt test host {host!r} (A, B, C or lv-a, lv-b, lv-c)")


@pytest.fixture
def libvirt_connect(libvirt_env: LibvirtHosts) -> Iterator[Callable[..., Any]]:
    """``libvirt_connect(host, tcp=False)`` -> an open libvirt.virConnect to host "A"/"lv-a"/...
    (its unix socket, unaffected by set_link; tcp=True for qemu+tcp://IP/system). Closed at
    the end of the test."""
    import libvirt

    opened: list[Any] = []

    def connect(host: str, *, tcp: bool = False) -> Any:
        h = libvirt_env.hosts()[_host_key(libvirt_env, host)]
        conn = libvirt.open(h.uri if tcp else h.unix_uri)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


@pytest.fixture
def make_guest(
    libvirt_env: LibvirtHosts, libvirt_connect: Callable[..., Any]
) -> Callable[..., guests.Guest]:
    """``make_guest(name, memory_mib=64, kernel="idle", host="A", vcpus=1, pinned=False,
    persistent=True, disk=False, network=None, wait_filled=True) -> Guest``

    A diskless TCG guest (qemu64 CPU, no NIC, no balloon, <on_poweroff>destroy) on ``host``.
    kernel: "idle" fills its RAM with pseudo-random data once and halts; "dirty" keeps
    rewriting it (never converges under a bandwidth cap without help); "warm" does the same at
    ~200 MiB/s, a share of the vCPU's time (what auto-converge throttles); None boots SeaBIOS with
    nothing to boot (idle, RAM mostly zero). With a kernel and wait_filled, returns once the RAM
    has been filled (the kernel's console marker; no sleeps). pinned: vCPU i on host CPU i, or a
    list of cpusets. disk=True: a 16 MiB raw image at <instances_path>/<name>/disk (in the
    host's instances directory; for A and B that is shared storage). network: e.g. "ferry-net"
    (defined on A and B only) for a virtio NIC. Everything is removed after the test."""

    def make(
        name: str,
        memory_mib: int = 64,
        kernel: str | None = "idle",
        host: str = "A",
        vcpus: int = 1,
        pinned: bool | list[str] = False,
        persistent: bool = True,
        disk: bool = False,
        network: str | None = None,
        wait_filled: bool = True,
    ) -> guests.Guest:
        key = _host_key(libvirt_env, host)
        h = libvirt_env.hosts()[key]
        disk_path = None
        if disk:
            local = Path(h.local_instances_path) / name
            local.mkdir(parents=True, exist_ok=True)
            with open(local / "disk", "wb") as f:
                f.truncate(16 << 20)
            disk_path = f"{h.instances_path}/{name}/disk"
        try:
            return guests.start_guest(
                libvirt_connect(key),
                name,
                host=key,
                memory_mib=memory_mib,
                kernel=kernel,
                vcpus=vcpus,
                pinned=pinned,
                persistent=persistent,
                disk=disk_path,
                network=network,
                console_dir=Path(libvirt_env.settings.directory) / "console",
                wait_filled=wait_filled,
            )
        except guests.GuestError as e:
            qemu_log = libvirt_env.settings.directory / key / "log" / "qemu" / f"{name}.log"
            tail = qemu_log.read_text(errors="replace")[-2000:] if qemu_log.exists() else ""
            raise guests.GuestError(f"{e}\n--- {qemu_log}:\n{tail}") from None

    return make


@pytest.fixture(autouse=True)
def _reset_libvirt_hosts(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the hosts: back to the state `up` left them in."""
    yield
    if "libvirt_env" not in request.fixturenames:
        return
    env = request.getfixturevalue("libvirt_env")
    problems = reset_hosts(env)
    if problems:
        pytest.fail("could not reset the libvirt hosts: " + "; ".join(problems), pytrace=False)


def reset_hosts(env: LibvirtHosts, timeout: float = 20.0) -> list[str]:
    """Destroy/undefine every domain, pool and extra network on every host, restore links,
    daemons and the guest network, empty instance directories and consoles. Returns problems
    (empty when clean)."""
    import libvirt

    problems: list[str] = []
    conns: dict[str, Any] = {}
    try:
        env.restore_links()
        for key, h in env.hosts().items():
            if env.libvirtd(key) is None:
                env.restart_daemon(key)
            conns[key] = libvirt.open(h.unix_uri)
        deadline = time.monotonic() + timeout
        for attempt in range(1_000_000):
            # a migration torn down on one side may still be finishing on the other: re-list
            left = [(key, d) for key, c in conns.items() for d in c.listAllDomains()]
            if not left:
                break
            if time.monotonic() > deadline:
                listed = ", ".join(f"{key}:{d.name()}" for key, d in left)
                problems.append(f"domains left: {listed}")
                break
            if attempt:
                time.sleep(0.05)  # polling interval
            for _key, dom in left:
                _remove_domain(libvirt, dom)
        for key, c in conns.items():
            h = env.hosts()[key]
            for pool in c.listAllStoragePools():
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        pool.destroy()
                    if pool.isPersistent():
                        pool.undefine()
            names = set(c.listNetworks()) | set(c.listDefinedNetworks())
            for name in names - set(h.networks):
                net = c.networkLookupByName(name)
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                    if net.isPersistent():
                        net.undefine()
            for name in h.networks:
                if name not in names:
                    net = c.networkDefineXML(
                        f"<network><name>{name}</name><forward mode='bridge'/>"
                        f"<bridge name='{GUEST_BRIDGE}'/></network>"
                    )
                    net.setAutostart(True)
                else:
                    net = c.networkLookupByName(name)
                if not net.isActive():
                    net.create()
    except (libvirt.libvirtError, HostsError) as e:
        problems.append(str(e))
    finally:
        for c in conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
    s = env.settings
    dirs = {Path(h.local_instances_path) for h in env.hosts().values()}
    for d in (*dirs, s.directory / "console"):
        if d.is_dir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    return problems


def _remove_domain(libvirt: Any, dom: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isPersistent():
            dom.undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            )
