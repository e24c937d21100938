"""A throwaway Redis server on 127.0.0.1 for the tests (the project's own script).

    python -m tests.infra.redis start DIR [PORT]   # prints the board URL
    python -m tests.infra.redis stop DIR

Uses the Debian server binary (``apt-get install redis-server``), not the packaged service: the
server listens on loopback only, on an ephemeral port, keeps its files (config, pid, log) in
``DIR``, persists nothing (unless started with ``persist``), and is stopped by the PID it wrote
there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STARTUP_SECONDS = 20.0


def redis_server_bin() -> Path | None:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start(directory: str, port: int | None = None, *, persist: bool = False) -> str:
    """Start a server whose files live in ``directory``; returns its ``redis://`` URL.

    ``persist``: an append-only file fsynced on every write (a restart keeps every job);
    by default nothing is persisted (a restart empties the board)."""
    binary = redis_server_bin()
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    port = port or free_port()
    data = Path(directory)
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                f"dir {data}",
                f"pidfile {data / 'redis.pid'}",
                f"logfile {data / 'redis.log'}",
                "daemonize yes",
                'save ""',
                "appendonly yes" if persist else "appendonly no",
                "appendfsync always",
                "",
            ]
        )
    )
    subprocess.run(
        [str(binary), str(conf)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while not _pong(port):
        if time.monotonic() > deadline:
            log = (data / "redis.log").read_text(errors="replace")[-2000:]
            stop(directory)
            raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{port}: {log}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


def _pid(directory: str) -> int | None:
    try:
        return int((Path(directory) / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop(directory: str) -> None:
    """Stop the server started in ``directory`` (by the PID it wrote there); idempotent."""
    pid = _pid(directory)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        print(start(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
    else:
        stop(sys.argv[2])
