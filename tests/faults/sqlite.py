"""SQLite faults a deployment meets, each applied at a chosen moment and lifted again:

* ``full``: the disk is full -- the database lives on a small tmpfs the test mounts (root), and a
  filler file takes every free block;
* ``readonly``: the database file (and its WAL) made immutable (``chattr +i``: even root's writes
  through already-open descriptors fail; the ``-shm`` index stays writable, as a read-only file
  leaves it);
* ``locked``: another process holds the write lock (``BEGIN IMMEDIATE``) past the busy timeout.

:func:`apply` runs inside the migrating process (its event callback: the fault is in place before
the run's next write, no sleeps); :func:`lift` runs in the test afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

KINDS = ("full", "readonly", "locked")
#: the busy timeout the faulted process runs with (ms): "past the busy timeout" in a moment
BUSY_MS = 200
FILLER = "filler"
LOCKER_PID = "locker.pid"

_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # held until the test ends this process
"""


def db_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal")]


def apply(kind: str, db: Path) -> None:
    """Put fault ``kind`` on the database file ``db`` (returns once it is in place)."""
    if kind == "full":
        with (db.parent / FILLER).open("wb") as f:
            block = b"\0" * (1 << 16)
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            with contextlib.suppress(OSError):  # the last partial blocks
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
    elif kind == "readonly":
        subprocess.run(["chattr", "+i", *map(str, db_files(db))], check=True)
    elif kind == "locked":
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "locked":
            raise RuntimeError("the locking process did not take the lock")
        (db.parent / LOCKER_PID).write_text(str(proc.pid))
    else:
        raise ValueError(kind)


def lift(kind: str, db: Path) -> None:
    """Take fault ``kind`` away again (what the operator does: free space, chmod, end the
    process holding the lock); idempotent."""
    if kind == "full":
        with contextlib.suppress(FileNotFoundError):
            (db.parent / FILLER).unlink()
    elif kind == "readonly":
        files = [str(p) for p in db_files(db) if p.exists()]
        if files:
            subprocess.run(["chattr", "-i", *files], check=True)
    elif kind == "locked":
        pid_file = db.parent / LOCKER_PID
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
            pid_file.unlink()


def unavailable_reason(kind: str) -> str | None:
    """Why fault ``kind`` cannot be made here (None: it can)."""
    if kind in ("full", "readonly") and os.geteuid() != 0:
        return f"the {kind} fault needs root (mount a tmpfs / chattr +i)"
    if kind == "readonly" and shutil.which("chattr") is None:
        return "no chattr here (e2fsprogs)"
    return None


@contextlib.contextmanager
def small_disk(directory: Path, size_mb: int = 16) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted on ``directory`` (root); unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(directory)],
        check=True,
        capture_output=True,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)


def supports_immutable(directory: Path) -> bool:
    probe = directory / ".chattr-probe"
    probe.write_text("")
    try:
        ok = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["chattr", "-i", str(probe)], check=True)
        return ok
    finally:
        probe.unlink()
