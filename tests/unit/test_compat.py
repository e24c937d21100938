"""The TaskFlow internals of ferry.compat still exist and mean what ferry assumes.

These fail loudly when a TaskFlow release renames or changes them (ferry pins 6.5.x)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from taskflow import engines, task
from taskflow.patterns import linear_flow
from taskflow.types import failure

from ferry import compat


class Noop(task.Task):
    def execute(self) -> int:
        return 1


def engine_of(flow: Any) -> Any:
    engine = engines.load(flow, engine="serial")
    return engine


def test_storage_lock_replaces_what_storage_lock_returns() -> None:
    engine = engine_of(linear_flow.Flow("f").add(Noop("a")))
    compat.use_storage_lock(engine.storage)
    lock = engine.storage.lock  # TaskFlow's public reader of the same attribute
    assert isinstance(lock, compat.StorageLock)
    with lock.read_lock(), lock.write_lock():  # re-entrant, as TaskFlow nests them
        pass
    engine.run()
    assert engine.storage.get("a") == 1


def test_shared_compilation_is_one_frozen_graph_and_separate_runtimes() -> None:
    flow = linear_flow.Flow("f").add(Noop("a", provides="x"), Noop("b"))
    first, second = engine_of(flow), engine_of(flow)
    shared = compat.share_compilation(first, None)
    assert type(shared).__name__ == "PatternCompiler"
    assert compat.share_compilation(second, shared) is shared
    first.run()
    second.run()
    assert first.compilation is second.compilation
    assert first.compilation.execution_graph.frozen
    assert first._runtime is not second._runtime


def test_a_missing_internal_is_a_clear_error() -> None:
    class NotAnEngine:
        pass

    with pytest.raises(compat.TaskFlowChanged, match=r"_compiler.*TaskFlow 6\.5"):
        compat.share_compilation(NotAnEngine(), None)
    with pytest.raises(compat.TaskFlowChanged, match="_lock"):
        compat.use_storage_lock(NotAnEngine())


def test_failure_type_names_most_specific_first() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        f = failure.Failure()
    names = compat.type_names(f)
    assert names == ["KeyError", "LookupError", "Exception"]
    restored = failure.Failure.from_dict(f.to_dict())
    assert compat.type_names(restored) == names


def test_taskflow_sql_backend_loads_without_alembic_until_an_upgrade_needs_it() -> None:
    """ferry's TaskFlow backend imports TaskFlow's SQL backend without Alembic; the deferred
    ``migration`` module still hands out ``db_sync`` (and Alembic) when an upgrade asks."""
    code = (
        "import sys, json\n"
        "import ferry.persistence.taskflow_backend\n"
        "before = 'alembic' in sys.modules\n"
        "from taskflow.persistence.backends import impl_sqlalchemy\n"
        "sync = impl_sqlalchemy.migration.db_sync\n"
        "print(json.dumps([before, callable(sync), 'alembic' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True, True]
