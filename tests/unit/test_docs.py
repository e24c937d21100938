"""The documentation runs: every ``sh``, ``console`` and ``python`` block in README.md and
docs/*.md is run here, and every ``toml`` block is read as a ferry config, so the docs cannot
drift from the code.

A block that cannot run here says why, in an HTML comment just before its fence::

    <!-- not run: needs two real libvirt hosts -->

A block with neither a reason nor a clean run fails. How blocks run (docs/testing.md says the same
for writers):

* the blocks of one file run in order in one session: a temp HOME (so the default database is a
  temp SQLite file), a temp working directory, ``FERRY_CONFIG`` pointing at stepped simulated time
  (transfers take no wall time) and the Python namespace shared by the file's ``python`` blocks;
* a shell line made of ``ferry`` commands (joined by ``&&`` or ``;``) runs in-process through
  click's runner; any other line runs in bash; ``console`` blocks run their ``$`` lines only;
* the word ``ID`` stands for the newest migration's id; a line must exit 0, or the code its
  comment names (``ferry abort ID   # exit 1: ...``);
* after a block that used ``--detach``, the test waits until every migration has ended;
* ``ferry web``, ``ferry serve`` and ``ferry conductor`` serve until stopped: a block with them
  must say why it is not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ferry.cli import cli
from ferry.config import parse_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("sh", "console", "python", "toml")
TAGS = (*RUN, "text", "json")
FENCE = re.compile(r"^\s*```(\S*)\s*$")
NOT_RUN = re.compile(r"<!--\s*not run:(.*?)-->\s*$", re.S)
EXIT = re.compile(r"#\s*exit (\d+)\b")
EXPORT = re.compile(r"^export (\w+)=(\S+.*)$")
PLACEHOLDER = re.compile(r"(?<![\w-])ID(?![\w-])")
SERVERS = {"web", "conductor", "serve"}
TERMINAL = {"completed", "failed", "cancelled", "error"}
FAST_CONFIG = "[simulated]\nspeed = 0\n[migration]\npost_retry_delay = 0\n"
MAX_README_LINES = 200
BASH_S = 60.0  # deadline of one shell line


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    tag: str
    code: str
    not_run: str | None  # the reason written before the fence, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, each with the ``not run`` reason before it."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: fence never closed"
        before = "\n".join(lines[:i]).rstrip()
        comment = NOT_RUN.search(before[before.rfind("<!--") :]) if before.endswith("-->") else None
        reason = " ".join(comment.group(1).split()) if comment else None
        code = textwrap.dedent("\n".join(lines[i + 1 : end]))
        found.append(Block(path, i + 1, opening.group(1), code, reason))
        i = end + 1
    return found


ALL_BLOCKS = [b for path in DOCS for b in blocks(path)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.tag in RUN]


@dataclass
class Session:
    """One reader going through one file: a home, a working directory, a Python namespace."""

    root: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    exported: dict[str, str] = field(default_factory=dict)  # `export NAME=VALUE` lines

    def __post_init__(self) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        self.work.mkdir(exist_ok=True)
        (self.root / "fast.toml").write_text(FAST_CONFIG)

    @property
    def work(self) -> Path:
        return self.root / "work"

    def env(self) -> dict[str, str | None]:
        """What the session changes in the environment (None: removed)."""
        return {
            "HOME": str(self.root / "home"),
            "XDG_DATA_HOME": None,
            "FERRY_DB": None,
            "FERRY_CONFIG": str(self.root / "fast.toml"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **self.exported,
        }

    def ferry(self, args: list[str]) -> tuple[int, str]:
        """``ferry ARGS`` in-process; the exit code and what it printed."""
        result = CliRunner().invoke(cli, args, env=self.env(), catch_exceptions=False)
        return result.exit_code, result.output

    def bash(self, line: str) -> tuple[int, str]:
        env = {k: v for k, v in {**os.environ, **self.env()}.items() if v is not None}
        proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=self.work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, ended below if it overstays
        )
        try:
            out, _ = proc.communicate(timeout=BASH_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"`{line}` ran over {BASH_S} s:\n{out}")
        return proc.returncode, out

    def migrations(self, global_args: list[str]) -> list[dict[str, Any]]:
        code, out = self.ferry([*global_args, "list", "--json"])
        assert code == 0, out
        return json.loads(out)  # type: ignore[no-any-return]

    def wait_until_ended(self, global_args: list[str], deadline_s: float = 60.0) -> None:
        """Detached runs go on in their own process: wait for every migration to end."""
        deadline = time.monotonic() + deadline_s
        while any(m["status"] not in TERMINAL for m in self.migrations(global_args)):
            assert time.monotonic() < deadline, "a detached migration did not end in time"
            time.sleep(0.1)  # polling another process's progress, not synchronising threads

    def enter(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make this process look like the session (undone after the test)."""
        monkeypatch.chdir(self.work)
        for name, value in self.env().items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    def close(self) -> None:
        for value in self.namespace.values():
            if hasattr(value, "close") and type(value).__name__ == "Orchestrator":
                value.close()


SESSIONS: dict[Path, Session] = {}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("docs")

    def session_for(path: Path) -> Session:
        if path not in SESSIONS:
            SESSIONS[path] = Session(root / path.stem)
        return SESSIONS[path]

    yield session_for
    for session in SESSIONS.values():
        session.close()
    SESSIONS.clear()


def commands(block: Block) -> list[str]:
    """The command lines of a shell block (``console``: the ``$`` lines)."""
    lines = block.code.splitlines()
    if block.tag == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def split_ferry_line(line: str) -> list[tuple[str, list[str]]] | None:
    """``ferry ...`` commands joined by ``&&``/``;`` as (joiner, args), or None when the line
    needs a shell (pipes, redirections, other programs, ``VAR=value`` prefixes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts: list[tuple[str, list[str]]] = []
    joiner, current = ";", []
    for token in lexer:
        if token in ("&&", ";"):
            parts.append((joiner, current))
            joiner, current = token, []
        else:
            current.append(token)
    parts.append((joiner, current))
    for _, args in parts:
        if not args or args[0] != "ferry" or any(set(a) <= set("|&<>()") for a in args):
            return None
    return [(j, args[1:]) for j, args in parts]


def expand(arg: str, env: dict[str, str | None]) -> str:
    return re.sub(
        r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1)) or os.environ.get(m.group(1), ""), arg
    )


def global_args(args: list[str]) -> list[str]:
    """The options before the command name (``--db URL``, ``--config FILE``, ``-v``)."""
    for i, arg in enumerate(args):
        if arg in cli.list_commands(None):  # type: ignore[arg-type]
            return args[:i]
    return args


def newest_id(session: Session, g: list[str], where: str) -> str:
    found = session.migrations(g)
    assert found, f"{where}: `ID` is used before any migration was made"
    return str(found[0]["id"])


def run_shell(block: Block, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    detached: list[list[str]] = []
    skipped: list[str] = []
    for line in commands(block):
        assert not re.search(r"(?<![&>])&\s*(#.*)?$", line), (
            f"{block.where}: `{line}` starts a background process; "
            "write <!-- not run: REASON --> before the block"
        )
        if re.search(r"ferry graph .*\.(svg|png)\b", line) and shutil.which("dot") is None:
            skipped.append(line)  # as the viz tests do where Graphviz is missing
            continue
        if exported := EXPORT.match(line):
            name, value = exported.groups()
            session.exported[name] = expand(shlex.split(value, comments=True)[0], session.env())
            session.enter(monkeypatch)
            continue
        expected = int(m.group(1)) if (m := EXIT.search(line)) else 0
        code, out = run_line(line, block, session, detached)
        assert code == expected, f"{block.where}: `{line}` exited {code}, not {expected}:\n{out}"
    for g in detached:
        session.wait_until_ended(g)
    if skipped:
        pytest.skip(f"Graphviz's dot is not installed: not run: {'; '.join(skipped)}")


def run_line(
    line: str, block: Block, session: Session, detached: list[list[str]]
) -> tuple[int, str]:
    """One command line: ``ferry`` commands in-process, anything else in bash."""
    parts = split_ferry_line(line)
    if parts is None:
        if PLACEHOLDER.search(line.split("#", 1)[0]):
            line = PLACEHOLDER.sub(newest_id(session, [], block.where), line)
        return session.bash(line)
    code, out = 0, ""
    for joiner, raw in parts:
        if joiner == "&&" and code != 0:
            break
        args = [expand(a, session.env()) for a in raw]
        g = global_args(args)
        name = args[len(g)] if len(g) < len(args) else ""
        assert name not in SERVERS, (
            f"{block.where}: `ferry {name}` serves until stopped; "
            "write <!-- not run: REASON --> before the block"
        )
        if "ID" in args:
            mid = newest_id(session, g, block.where)
            args = [mid if a == "ID" else a for a in args]
        if "--detach" in args:
            detached.append(g)
        code, out = session.ferry(args)
    return code, out


def run_python(block: Block, session: Session) -> None:
    exec(compile(block.code, block.where, "exec"), session.namespace)


def check_toml(block: Block) -> None:
    data = tomllib.loads(block.code)
    parse_settings(data, block.where)  # raises ConfigError on unknown keys, types, ranges


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.where for b in RUN_BLOCKS])
def test_block_runs_or_says_why_not(
    block: Block, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.not_run is not None:
        assert block.not_run, f"{block.where}: `not run:` needs a reason"
        pytest.skip(f"not run: {block.not_run}")
    if block.tag == "toml":
        check_toml(block)
        return
    session: Session = sessions(block.path)
    session.enter(monkeypatch)
    if block.tag == "python":
        run_python(block, session)
    else:
        run_shell(block, session, monkeypatch)


def test_every_fence_names_its_language() -> None:
    """An untagged block could hide a command from the test above."""
    bad = [f"{b.where}: ```{b.tag}" for b in ALL_BLOCKS if b.tag not in TAGS]
    assert not bad, f"tag every fence with one of {', '.join(TAGS)}:\n" + "\n".join(bad)


def test_readme_is_a_front_page() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_and_images_resolve() -> None:
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists() or (anchor and anchor not in anchors(linked)):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to files or headings that do not exist:\n" + "\n".join(broken)


def test_readme_embedding_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's embedding example, run alone, ends as its comments say."""
    (block,) = [b for b in blocks(ROOT / "README.md") if b.tag == "python"]
    session = Session(tmp_path)
    session.enter(monkeypatch)
    try:
        run_python(block, session)
        ns = session.namespace
        assert ns["m"].status == "completed"
        assert ns["orch"].get(ns["mid"]).status == "cancelled"
    finally:
        session.close()
