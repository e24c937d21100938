"""ferry's test guests: the fill kernel (fill.S, built here at test time) and diskless TCG
domain XML for the real libvirt hosts of tests/infra/libvirt_hosts.py.

    python -m tests.infra.guest [idle|dirty|warm ...]   # build (cached) and print the kernel paths

Kernels are built with the machine's gcc and binutils (``gcc -m32 -c``, ``ld -m elf_i386``: no
multilib needed, the kernel uses no libc) into a cache directory ($FERRY_GUEST_CACHE, else
$XDG_CACHE_HOME/ferry/guest, else ~/.cache/ferry/guest), named by a hash of the source and the
flags, so a changed fill.S is rebuilt and nothing binary lives in the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

SOURCE = Path(__file__).with_name("fill.S")
VARIANTS: dict[str, list[str]] = {
    "idle": [],  # fill RAM once, halt
    "dirty": ["-DDIRTY_FOREVER"],  # rewrite it forever, as fast as TCG stores (~1 GiB/s here)
    # the same, paced: ~200 MiB/s here -- still far above a 32 MiB/s cap, but as a share of the
    # vCPU's time, so auto-converge's CPU throttle brings it down deterministically (the
    # unpaced kernel still dirties a 10 ms throttle slice's worth at full speed, and QEMU's
    # pre-copy then oscillates around its threshold at 99 % throttle on a loaded machine)
    "warm": ["-DDIRTY_FOREVER", "-DPACE=20000"],
}
QEMU_BINARY = "/usr/bin/qemu-system-x86_64"
NETWORK = "ferry-net"  # the libvirt network hosts A and B have and C lacks

# what the kernel writes to its serial console (see fill.S)
STARTED, PASS_DONE, HALTED = "F", ".", "H"


class GuestError(RuntimeError):
    """A kernel could not be built, or a guest did not reach the expected state."""


def cache_dir() -> Path:
    explicit = os.environ.get("FERRY_GUEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry" / "guest"


def toolchain_problem() -> str | None:
    """None when gcc and ld are there, else what is missing."""
    missing = [t for t in ("gcc", "ld") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install gcc binutils)"
    return None


def build_kernel(variant: str = "idle", directory: Path | None = None) -> Path:
    """The fill kernel ``variant`` ("idle": fill RAM once then halt; "dirty": rewrite it
    forever; "warm": the same at a paced rate), built when not cached. Safe to call from
    concurrent processes."""
    if variant not in VARIANTS:
        raise ValueError(f"kernel variant must be one of {', '.join(VARIANTS)}")
    flags = VARIANTS[variant]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:16]
    out_dir = directory or cache_dir()
    target = out_dir / f"fill-{variant}-{key}.elf"
    if target.exists():
        return target
    problem = toolchain_problem()
    if problem:
        raise GuestError(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        obj, elf = Path(tmp) / "fill.o", Path(tmp) / "fill.elf"
        for cmd in (
            ["gcc", "-m32", *flags, "-c", str(SOURCE), "-o", str(obj)],
            ["ld", "-m", "elf_i386", "-N", "-Ttext=0x100000", "-o", str(elf), str(obj)],
        ):
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise GuestError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()}")
        os.replace(elf, target)  # atomic: a concurrent builder writes the same bytes
    return target


def domain_xml(
    name: str,
    *,
    memory_mib: int = 64,
    kernel: Path | str | None = None,
    vcpus: int = 1,
    pinned: bool | list[str] = False,
    console: Path | str | None = None,
    disk: str | None = None,
    network: str | None = None,
    host_cpus: int = 1,
) -> str:
    """A diskless (unless ``disk``: a raw image path as the host sees it) TCG guest.

    kernel: a multiboot image booted directly, or None for SeaBIOS idling with nothing to boot.
    pinned: True pins vCPU i to host CPU i % host_cpus, memory strictly to NUMA node 0 and the
    emulator to all CPUs; a list gives each vCPU's cpuset explicitly.
    console: a file receiving the serial port (append mode; the destination of a migration
    reopens the same path). network: a libvirt network for one virtio NIC.
    """
    os_boot = f"<kernel>{escape(str(kernel))}</kernel>" if kernel else ""
    cputune = numatune = ""
    if pinned:
        sets = pinned if isinstance(pinned, list) else [str(i % host_cpus) for i in range(vcpus)]
        pins = "".join(f"<vcpupin vcpu='{i}' cpuset={quoteattr(c)}/>" for i, c in enumerate(sets))
        emulator = f"0-{host_cpus - 1}" if host_cpus > 1 else "0"
        cputune = f"<cputune>{pins}<emulatorpin cpuset='{emulator}'/></cputune>"
        numatune = "<numatune><memory mode='strict' nodeset='0'/></numatune>"
    devices = [f"<emulator>{QEMU_BINARY}</emulator>"]
    if disk:
        devices.append(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>"
        )
    if network:
        devices.append(
            f"<interface type='network'><source network={quoteattr(network)}/>"
            "<model type='virtio'/></interface>"
        )
    if console:
        devices.append(
            f"<serial type='file'><source path={quoteattr(str(console))} append='on'/>"
            "<target port='0'/></serial>"
        )
    devices.append("<memballoon model='none'/>")
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  {cputune}{numatune}
  <os><type arch='x86_64' machine='pc'>hvm</type>{os_boot}</os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {"".join(devices)}
  </devices>
</domain>
"""


def fill_marker(kernel: str | None) -> str | None:
    """What to wait for on the console: RAM filled once (idle: halted; dirty: first pass)."""
    return {"idle": HALTED, "dirty": PASS_DONE, "warm": PASS_DONE}.get(kernel or "")


def fill_timeout(memory_mib: int) -> float:
    """Generous: TCG fills about 200-250 MiB/s on this machine type."""
    return 30.0 + memory_mib / 16


def wait_console(
    console: Path,
    marker: str,
    *,
    count: int = 1,
    timeout: float,
    still_running: Callable[[], bool] | None = None,
    poll: float = 0.02,
) -> str:
    """Poll the console file until ``marker`` appears ``count`` times; returns its text.
    Raises GuestError at the deadline or as soon as ``still_running()`` says False."""
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        try:
            text = console.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if text.count(marker) >= count:
            return text
        if still_running is not None and not still_running():
            raise GuestError(f"guest stopped before {marker!r} x{count}; console: {text[-80:]!r}")
        if time.monotonic() > deadline:
            raise GuestError(f"no {marker!r} x{count} within {timeout:.0f} s; console: {text!r}")
        time.sleep(poll)


@dataclass
class Guest:
    """A running test guest."""

    name: str
    host: str  # the host it was started on
    domain: Any  # libvirt.virDomain, bound to the connection it was started with
    xml: str
    console: Path  # its serial console (see fill.S for what the kernel writes)
    kernel: str | None  # "idle", "dirty", "warm" or None (SeaBIOS)
    memory_mib: int
    disk: str | None = None  # the raw image's path as the hosts see it

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def passes(self) -> int:
        """Full passes over RAM the kernel has written so far (on whichever host it runs)."""
        return self.console_text().count(PASS_DONE)

    def wait_passes(self, count: int, timeout: float | None = None) -> None:
        """Until the kernel has completed ``count`` passes (counted since it booted)."""
        wait_console(
            self.console,
            PASS_DONE,
            count=count,
            timeout=timeout if timeout is not None else fill_timeout(self.memory_mib * count),
        )


def start_guest(
    conn: Any,
    name: str,
    *,
    host: str = "",
    memory_mib: int = 64,
    kernel: str | None = "idle",
    vcpus: int = 1,
    pinned: bool | list[str] = False,
    persistent: bool = True,
    disk: str | None = None,
    network: str | None = None,
    console_dir: Path,
    wait_filled: bool = True,
) -> Guest:
    """Define (persistent) or create (transient) and start a guest on ``conn``; with a fill
    kernel and ``wait_filled``, return once its RAM has been filled once (console marker)."""
    kernel_path = build_kernel(kernel) if kernel else None
    console_dir.mkdir(parents=True, exist_ok=True)
    console = console_dir / f"{name}.log"
    console.unlink(missing_ok=True)
    xml = domain_xml(
        name,
        memory_mib=memory_mib,
        kernel=kernel_path,
        vcpus=vcpus,
        pinned=pinned,
        console=console,
        disk=disk,
        network=network,
        host_cpus=int(conn.getInfo()[2]),
    )
    if persistent:
        domain = conn.defineXML(xml)
        domain.create()
    else:
        domain = conn.createXML(xml, 0)
    guest = Guest(name, host, domain, xml, console, kernel, memory_mib, disk)
    marker = fill_marker(kernel)
    if wait_filled and marker:
        wait_console(
            console,
            marker,
            timeout=fill_timeout(memory_mib),
            still_running=lambda: bool(domain.isActive()),
        )
    return guest


def main(argv: list[str]) -> int:
    """``python -m tests.infra.guest [idle|dirty|warm ...]`` builds the kernels (prints their
    paths); ``python -m tests.infra.guest start DIR HOST NAME [--memory MIB] [--kernel KERNEL]``
    starts a guest on host A/B/C of the test hosts that are up in DIR."""
    if argv[:1] != ["start"]:
        for variant in argv or list(VARIANTS):
            print(build_kernel(variant))
        return 0
    import argparse

    import libvirt  # type: ignore[import-not-found, unused-ignore]

    from tests.infra.libvirt_hosts import LibvirtHosts

    parser = argparse.ArgumentParser(prog="python -m tests.infra.guest start")
    parser.add_argument("directory")
    parser.add_argument("host", choices=["A", "B", "C"])
    parser.add_argument("name")
    parser.add_argument("--memory", type=int, default=64, help="MiB (default 64)")
    parser.add_argument("--kernel", default="idle", choices=[*VARIANTS, "none"])
    args = parser.parse_args(argv[1:])
    env = LibvirtHosts(args.directory)
    conn = libvirt.open(env.hosts()[args.host].unix_uri)
    guest = start_guest(
        conn,
        args.name,
        host=args.host,
        memory_mib=args.memory,
        kernel=None if args.kernel == "none" else args.kernel,
        console_dir=Path(args.directory) / "console",
    )
    print(f"{guest.name} ({guest.domain.UUIDString()}) running on {args.host}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
