"""A throwaway ZooKeeper server on 127.0.0.1 for the tests (the project's own script).

    python -m tests.infra.zookeeper start DIR [PORT]   # prints the board URL
    python -m tests.infra.zookeeper stop DIR

Uses Debian's ``zookeeper`` package (``apt-get install zookeeper``, Java included), not its
service: the server listens on loopback only, on an ephemeral port, keeps its files (config,
data, log, pid) in ``DIR``, has no admin server, and is stopped by the PID written there.
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

STARTUP_SECONDS = 60.0
ZK_JAR = Path("/usr/share/java/zookeeper.jar")  # its manifest names its dependencies
ZK_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


def zookeeper_bin() -> Path | None:
    """The server's jar when ZooKeeper and Java are installed."""
    if ZK_JAR.exists() and shutil.which("java"):
        return ZK_JAR
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"ruok")
            return s.recv(16).startswith(b"imok")
    except OSError:
        return False


def start(directory: str, port: int | None = None) -> str:
    """Start a server whose files live in ``directory``; returns its ``zookeeper://`` URL."""
    binary = zookeeper_bin()
    if binary is None:
        raise RuntimeError("ZooKeeper not found (apt-get install zookeeper)")
    port = port or free_port()
    data = Path(directory)
    (data / "data").mkdir(parents=True, exist_ok=True)
    conf_dir = data / "conf"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "zoo.cfg").write_text(
        "\n".join(
            [
                "tickTime=500",
                "minSessionTimeout=1000",
                "maxSessionTimeout=60000",
                f"dataDir={data / 'data'}",
                f"clientPort={port}",
                "clientPortAddress=127.0.0.1",
                "admin.enableServer=false",
                "4lw.commands.whitelist=*",  # kazoo asks `envi` for the server version
                "",
            ]
        )
    )
    java = shutil.which("java") or "java"
    cmd = [java, "-Xmx256m", f"-Dzookeeper.log.dir={data}", "-cp", f"{conf_dir}:{binary}"]
    cmd += [ZK_MAIN, str(conf_dir / "zoo.cfg")]
    with (data / "zookeeper.out").open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (data / "zookeeper.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + STARTUP_SECONDS
    while not _ok(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            out = (data / "zookeeper.out").read_text(errors="replace")[-2000:]
            stop(directory)
            raise RuntimeError(f"ZooKeeper did not answer on 127.0.0.1:{port}: {out}")
        time.sleep(0.1)
    return f"zookeeper://127.0.0.1:{port}"


def stop(directory: str) -> None:
    """Stop the server started in ``directory`` (its process group); idempotent."""
    try:
        pid = int((Path(directory) / "zookeeper.pid").read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        print(start(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
    else:
        stop(sys.argv[2])
