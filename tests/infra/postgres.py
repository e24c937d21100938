"""A throwaway PostgreSQL server on 127.0.0.1 for the tests (the project's own script).

    python -m tests.infra.postgres start DIR [PORT]   # prints the admin URL
    python -m tests.infra.postgres stop DIR

Uses the Debian server binaries (``apt-get install postgresql``); when run as root the server runs
as the ``postgres`` user. Trust authentication, listening on loopback only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

USER = "ferry"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start(directory: str, port: int | None = None) -> str:
    """Create and start a cluster in ``directory``; returns the admin database URL."""
    binaries = pg_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    port = port or free_port()
    data = Path(directory)
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data / "data"),
                "-A",
                "trust",
                "-U",
                USER,
                "--no-sync",
            ]
        ),
        **run,  # type: ignore[arg-type]
    )
    return start_again(directory, port)


def start_again(directory: str, port: int) -> str:
    """Start the cluster created in ``directory`` again (after :func:`stop`) on ``port``."""
    binaries = pg_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    data = Path(directory)
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data / "data"),
                "-w",
                "-l",
                str(data / "server.log"),
                "-o",
                f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200",
                "start",
            ]
        ),
        **run,  # type: ignore[arg-type]
    )
    return f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"


def stop(directory: str) -> None:
    binaries = pg_bin()
    if binaries is None:
        return
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(Path(directory) / "data"),
                "-w",
                "-m",
                "immediate",
                "stop",
            ]
        ),
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


if __name__ == "__main__":
    if sys.argv[1] == "start":
        print(start(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
    else:
        stop(sys.argv[2])
