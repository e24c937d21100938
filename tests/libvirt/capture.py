"""Looking at a migration stream on the wire: tcpdump inside a test host's network namespace,
and the byte patterns the "idle" test guest (tests/infra/guest/fill.S) writes into its RAM."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

#: the ports a destination QEMU listens on for an incoming migration (libvirt's default range)
MIGRATION_PORTS = "49152-49215"
#: fill.S: xorshift32 seed, and RAM filled from 2 MiB to (end of RAM - 1 MiB)
SEED = 0x9E3779B9
FILL_START_MIB = 2
PAGE_WORDS = 1024


def tcpdump_problem() -> str | None:
    return None if shutil.which("tcpdump") else "tcpdump not found (apt-get install tcpdump)"


@contextlib.contextmanager
def capture(netns: str, path: Path, bpf: str, timeout: float = 10.0) -> Iterator[Path]:
    """tcpdump on eth0 of ``netns`` into ``path`` (pcap) while the block runs; it is listening
    when the block starts (its "listening on" line is waited for) and flushed when it ends."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-i", "eth0", "-U", "-s", "0", "-w"]
    proc = subprocess.Popen(
        [*argv, str(path), *bpf.split()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    listening = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()  # exited: the block sees it below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        listening.wait(timeout)
        if not any("listening on" in line for line in lines) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump did not start: {''.join(lines)[-500:]}")
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout)


def guest_patterns(count: int = 48, length: int = 16, stride: int = 4) -> list[bytes]:
    """``count`` byte strings of ``length`` the idle guest wrote at the start of every
    ``stride``-th page from 2 MiB on (little-endian words of its xorshift32 sequence)."""
    words = length // 4
    out: list[bytes] = []
    current = bytearray()
    x = SEED
    for i in range(count * stride * PAGE_WORDS):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        page, word = divmod(i, PAGE_WORDS)
        if page % stride == 0 and word < words:
            current += x.to_bytes(4, "little")
            if word == words - 1:
                out.append(bytes(current))
                current = bytearray()
    return out


def patterns_found(pcap: Path, patterns: list[bytes]) -> int:
    """How many of ``patterns`` occur in the captured bytes."""
    data = pcap.read_bytes()
    return sum(1 for p in patterns if p in data)
