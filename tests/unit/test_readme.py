"""The README's embedding example runs as written (on stepped simulated time, in a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_embedding_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    source = code.group(1).replace(
        'Orchestrator("sqlite:///ferry.db")',
        'Orchestrator("sqlite:///ferry.db", settings=fast_settings())',
    )
    assert "fast_settings()" in source
    monkeypatch.chdir(tmp_path)
    from tests.conftest import fast_settings

    namespace: dict[str, object] = {"fast_settings": fast_settings}
    exec(compile(source, str(README), "exec"), namespace)
    assert namespace["m"].status == "completed"  # type: ignore[attr-defined]
    assert namespace["orch"].get(namespace["mid"]).status == "cancelled"  # type: ignore[attr-defined]
