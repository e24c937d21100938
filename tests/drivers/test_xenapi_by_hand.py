"""The documented way to try the XenAPI path by hand, run as written: the XAPI simulator started
as its own process (``python -m tests.xapisim --config-out FILE``), then the real ``ferry``
command against it.

The commands are read from docs/operations.md's "XenServer / XCP-ng pools (XenAPI)" section, so the
documentation cannot drift from what works; only the ``/tmp`` paths are moved into the test's
directory. The simulator runs on wall time (``--speed 20``: web-1's 18 s cross-pool move takes
about 0.9 s); the test waits for its "serving" line, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ferry.drivers.xenapi.session import load_sdk

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
SECTION = "## XenServer / XCP-ng pools (XenAPI)"
READY_S = 30.0  # deadline for the simulator's "serving" line
COMMAND_S = 120.0  # deadline for each ferry command


def documented_commands() -> list[str]:
    """The shell lines of the docs' XenAPI section that try the path by hand."""
    text = DOC.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the XenAPI section documents one shell block"
    lines = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    return [line for line in lines if line]


def ferry_executable() -> str:
    """The ``ferry`` console script installed next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "ferry"
    found = str(beside) if beside.exists() else shutil.which("ferry")
    assert found, "the ferry command is not installed (pip install -e .)"
    return found


class Simulator:
    """``python -m tests.xapisim ...`` as a child process; its stdout read by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal running pytest is not its own
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_until_serving(self, deadline_s: float) -> list[str]:
        """The lines printed up to "serving ..." (the simulator prints it once every pool
        listens); fails when it exits or the deadline passes first."""
        end = time.monotonic() + deadline_s
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"the simulator did not serve within {deadline_s} s: {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the simulator exited ({self.proc.wait()}): {self.seen}")
            self.seen.append(line)
            if line.startswith("serving"):
                return list(self.seen)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (the docs' ``kill %1``: SIGTERM); SIGKILL if it does not exit in
        time. Returns its exit status after ``sig`` (``None`` when it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            return None


def test_readme_xenapi_by_hand_commands_migrate_web_1_to_xs_b1(tmp_path: Path) -> None:
    """Every line of the docs' block, as written: the simulator's printed export line is
    the docs'; ``ferry ... hosts`` and ``ferry ... migrate web-1 --to xs-b1`` exit 0;
    ``hosts --json`` has the three XAPI hosts up; the record (``ferry show --json``) is
    completed on xs-b1 with block migration; the simulator, asked over XML-RPC, has one web-1,
    resident on xs-b1; the password is in no output; ``kill %1`` (SIGTERM) stops the
    simulator."""
    commands = documented_commands()
    paths = {
        "/tmp/xapi.toml": str(tmp_path / "xapi.toml"),
        "/tmp/xapi.db": str(tmp_path / "xapi.db"),
    }

    def argv(line: str) -> list[str]:
        for doc_path, real in paths.items():
            line = line.replace(doc_path, real)
        words = shlex.split(line)
        return [
            {"python": sys.executable, "ferry": ferry_executable()}.get(words[0], words[0]),
            *words[1:],
        ]

    start, export, *ferry_lines, stop = commands
    assert stop == "kill %1", stop  # the simulator runs in the background until killed
    assert start.startswith(
        "python -m tests.xapisim --config-out /tmp/xapi.toml"
    ) and start.endswith("&"), start
    exported = re.fullmatch(r"export (\w+)='([^']+)'", export)
    assert exported is not None, export
    config_db = ["--config", "/tmp/xapi.toml", "--db", "sqlite:////tmp/xapi.db"]
    assert [shlex.split(c) for c in ferry_lines] == [
        ["ferry", *config_db, "hosts"],
        ["ferry", *config_db, "migrate", "web-1", "--to", "xs-b1"],
    ], ferry_lines
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_CONFIG", "FERRY_DB")}
    env[exported.group(1)] = exported.group(2)

    def ferry(words: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_S
        )

    sim = Simulator(argv(start.removesuffix("&").strip()))
    try:
        printed = sim.wait_until_serving(READY_S)
        assert export in printed  # the docs' password line is what the simulator prints
        urls = dict(
            re.findall(r"^(pool-[ab]): (http://127\.0\.0\.1:\d+)$", "\n".join(printed), re.M)
        )
        assert set(urls) == {"pool-a", "pool-b"}, printed
        assert Path(paths["/tmp/xapi.toml"]).exists()

        outputs = []
        for line in ferry_lines:
            done = ferry(argv(line))
            outputs.append(done)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        real_config_db = argv(" ".join(["ferry", *config_db]))[1:]
        hosts = ferry([ferry_executable(), *real_config_db, "hosts", "--json"])
        assert hosts.returncode == 0, hosts.stderr
        up = {h["name"]: h["up"] for h in json.loads(hosts.stdout)}
        assert up == {"xs-a1": True, "xs-a2": True, "xs-b1": True}
        listed = ferry([ferry_executable(), *real_config_db, "list", "--json"])
        assert listed.returncode == 0, listed.stderr
        (mid,) = [m["id"] for m in json.loads(listed.stdout)]
        shown = ferry([ferry_executable(), *real_config_db, "show", mid, "--json"])
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert (record["status"], record["source"], record["destination"]) == (
            "completed",
            "xs-a1",
            "xs-b1",
        )
        assert record["block_migration"] is True  # another pool: the disk moved too

        for pool, expected in (("pool-a", []), ("pool-b", ["xs-b1"])):
            session = load_sdk().Session(urls[pool])
            session.xenapi.login_with_password("root", exported.group(2), "1.1", "test")
            try:
                xapi = session.xenapi
                resident = [
                    xapi.host.get_name_label(xapi.VM.get_resident_on(vm))
                    for vm in xapi.VM.get_by_name_label("web-1")
                ]
                assert resident == expected, (pool, resident)
            finally:
                session.xenapi.session.logout()

        everything = "".join(p.stdout + p.stderr for p in [*outputs, hosts, listed, shown])
        assert exported.group(2) not in everything
    finally:
        status = sim.stop(signal.SIGTERM)
    assert status == -signal.SIGTERM, sim.seen
