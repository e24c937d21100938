"""``ferry graph``, ``ferry show --timeline`` and ``ferry export`` on the command line."""

from __future__ import annotations

import contextlib
import html
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ferry.cli import cli
from ferry.flows import constants as c

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text("[simulated]\nspeed = 0\n[migration]\npost_retry_delay = 0\n")
    return {"FERRY_DB": f"sqlite:///{tmp_path / 'cli.db'}", "FERRY_CONFIG": str(cfg)}


def ferry(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def mid(env: dict[str, str]) -> str:
    code, out, _ = ferry(env, "migrate", "web-1", "--json")
    assert code == 0
    return str(json.loads(out)["id"])


def test_graph_dot_json_and_stdout(env: dict[str, str], mid: str, tmp_path: Path) -> None:
    code, _, err = ferry(env, "graph", mid, "-o", str(tmp_path / "x.dot"))
    assert code == 0 and "wrote" in err
    dot = (tmp_path / "x.dot").read_text()
    assert dot.startswith('digraph "live-migration"') and "state-success" in dot
    assert "compute-2 rejected" in dot.replace("\\n", " ")
    code, _, _ = ferry(env, "graph", mid, "-o", str(tmp_path / "x.json"))
    data = json.loads((tmp_path / "x.json").read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    assert code == 0 and all(nodes[a]["state"] == "SUCCESS" for a in c.ALL_ATOMS)
    assert nodes["reschedule"]["attempts"][0]["host"] == "compute-2"
    code, out, _ = ferry(env, "graph", mid)  # DOT on stdout
    assert code == 0 and out.startswith("digraph")
    code, out, _ = ferry(env, "graph", mid, "--format", "json")
    assert code == 0 and json.loads(out)["format"] == "ferry.graph/1"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_svg_and_png(env: dict[str, str], mid: str, tmp_path: Path) -> None:
    code, _, _ = ferry(env, "graph", mid, "-o", str(tmp_path / "x.svg"))
    svg = html.unescape((tmp_path / "x.svg").read_text())
    assert code == 0 and "<svg" in svg and 'id="atom-transfer"' in svg
    code, _, _ = ferry(env, "graph", "--flow", "-o", str(tmp_path / "flow.png"))
    assert code == 0 and (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_without_graphviz_is_one_line(
    env: dict[str, str], mid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ferry.viz.dot.shutil.which", lambda _name: None)
    code, _, err = ferry(env, "graph", mid, "-o", str(tmp_path / "x.svg"))
    assert code == 1 and "Graphviz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.svg").exists()
    code, _, _ = ferry(env, "graph", mid, "-o", str(tmp_path / "x.dot"))  # DOT needs nothing
    assert code == 0


def test_graph_usage_errors(env: dict[str, str], mid: str, tmp_path: Path) -> None:
    assert ferry(env, "graph")[0] == 2
    assert ferry(env, "graph", mid, "--flow")[0] == 2
    code, _, err = ferry(env, "graph", mid, "-o", str(tmp_path / "x.bmp"))
    assert code == 2 and "x.bmp" in err
    code, _, err = ferry(env, "graph", "no-such-id")
    assert code == 1 and "not found" in err


def test_graph_flow_and_the_readme_picture(env: dict[str, str]) -> None:
    code, out, _ = ferry(env, "graph", "--flow")
    assert code == 0
    assert "retry controller: reschedule" in out and "switchover" in out
    # docs/flow.dot is what `ferry graph --flow -o docs/flow.dot` wrote for docs/flow.svg/png
    assert (ROOT / "docs" / "flow.dot").read_text() == out
    readme = (ROOT / "README.md").read_text()
    assert "docs/flow.svg" in readme and "ferry graph --flow -o docs/flow.svg" in readme


def test_show_timeline(env: dict[str, str], mid: str) -> None:
    code, out, _ = ferry(env, "show", mid, "--timeline", "--width", "30")
    assert code == 0
    assert out.splitlines()[0].startswith(f"migration {mid}")
    for name in c.ALL_ATOMS:
        assert name in out
    assert "█" in out and "░" in out  # execute bars, and the reverted first try
    code, out, _ = ferry(env, "show", mid, "--timeline", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list(c.ALL_ATOMS)


def test_export(env: dict[str, str], mid: str, tmp_path: Path) -> None:
    code, out, _ = ferry(env, "export", mid)
    data = json.loads(out)
    assert code == 0 and data["format"] == "ferry.run/1" and data["migration"]["id"] == mid
    code, _, _ = ferry(env, "export", mid, "-o", str(tmp_path / "run.json"))
    assert code == 0 and json.loads((tmp_path / "run.json").read_text())["migration"]["id"] == mid


@contextlib.contextmanager
def web_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``ferry web --port 0`` and its base URL, once it says it serves; killed if still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry", "web", "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stderr.readline()), daemon=True).start()
        line = lines.get(timeout=120)  # "ferry web: http://127.0.0.1:PORT/ (read-only; ...)"
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        yield proc, match.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` from the server at ``url``, with a forged Host header when ``host``."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_web_command_serves_on_loopback(env: dict[str, str], mid: str) -> None:
    with web_process(env) as (proc, url):
        with urllib.request.urlopen(f"{url}api/migrations", timeout=10) as resp:
            rows = json.load(resp)
        assert [r["id"] for r in rows] == [mid]
        port = urllib.parse.urlsplit(url).port
        assert get(url, "/api/migrations", f"localhost:{port}")[0] == 200
        for forged in (f"rebound.example:{port}", "rebound.example"):  # a DNS rebinding
            status, body = get(url, "/api/migrations", forged)
            assert status == 400 and mid.encode() not in body and len(body) < 100
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


BUSY_LOOP = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_load() -> Iterator[None]:
    """Busy loops on every CPU (at most 4) for the block's duration (and 120 s at most)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        for _ in range(max(2, min(4, os.cpu_count() or 2)))
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_web_command_stops_at_a_signal_under_load(
    env: dict[str, str], mid: str, signum: signal.Signals
) -> None:
    with cpu_load(), web_process(env) as (proc, url):
        idle = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(url).port, timeout=30)
        idle.request("GET", "/api/migrations")  # a kept-alive connection, left open
        assert idle.getresponse().read().startswith(b"[")
        proc.send_signal(signum)
        started = time.monotonic()
        assert proc.wait(timeout=10) == 0  # the deadline
        elapsed = time.monotonic() - started
        idle.close()
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    print(f"ferry web stopped {elapsed:.2f} s after {signum.name} under load")
