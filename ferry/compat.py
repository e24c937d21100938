"""The TaskFlow internals ferry relies on, in one place.

TaskFlow has no public API for two things ferry does for speed, so they are done here and only
here; TaskFlow is pinned to 6.5.x and ``tests/unit/test_compat.py`` fails loudly when a release
changes what these functions touch:

* :func:`share_compilation`: engines of one flow object share one compiled graph. TaskFlow's
  ``PatternCompiler`` compiles once and freezes the graph, which engines only read (each keeps
  its own runtime), so recompiling it for every run only costs time (~2 ms a migration). The
  compiler lives in the private ``engine._compiler``.
* :func:`use_storage_lock`: a run's storage takes one re-entrant lock instead of fasteners'
  pure-Python reader-writer lock (a condition variable, a generator context manager and a thread
  lookup per call; about 650 per migration). One engine thread does nearly all of those calls,
  so readers gain nothing from sharing and an ``RLock`` is as safe (more exclusive) at a fraction
  of the cost. TaskFlow only uses the lock as ``with lock.read_lock():`` /
  ``with lock.write_lock():``; it is the private ``storage._lock`` (``storage.lock`` reads it).

* :func:`sqlalchemy_backend`: TaskFlow's SQL backend module without Alembic. ``impl_sqlalchemy``
  imports its ``migration`` module at the top, and that imports Alembic (about a quarter of a
  second of a command's start), which only an upgrade of TaskFlow's schema on PostgreSQL uses.
  The module is put in ``sys.modules`` as a stand-in that imports the real one the first time
  one of its names is read (``migration.db_sync`` in an upgrade).

Failure type names are read through the public ``iter(failure)``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

import taskflow.version

_COMPILER = "_compiler"
_STORAGE_LOCK = "_lock"
_SQL_BACKEND = "taskflow.persistence.backends.impl_sqlalchemy"
_SQL_MIGRATION = "taskflow.persistence.backends.sqlalchemy.migration"


class TaskFlowChanged(RuntimeError):
    """The installed TaskFlow no longer has an internal ferry relies on."""


def _require(obj: Any, attribute: str) -> None:
    if not hasattr(obj, attribute):
        version = taskflow.version.version_string()
        raise TaskFlowChanged(
            f"TaskFlow {version}: {type(obj).__name__} has no {attribute!r} any more; "
            "ferry needs TaskFlow 6.5.x (see ferry/compat.py)"
        )


class StorageLock:
    """One re-entrant lock for a run's storage readers and writers (see the module doc)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def read_lock(self) -> Any:
        return self._lock

    def write_lock(self) -> Any:
        return self._lock


def use_storage_lock(storage: Any) -> None:
    """Give ``storage`` (an engine's ``engine.storage``) a :class:`StorageLock`."""
    _require(storage, _STORAGE_LOCK)
    setattr(storage, _STORAGE_LOCK, StorageLock())


def share_compilation(engine: Any, shared: Any | None) -> Any:
    """Make ``engine`` use the compiler ``shared`` (one engine's :func:`share_compilation`
    result, for the same flow object); None: keep its own. Returns the compiler to share."""
    _require(engine, _COMPILER)
    if shared is None:
        return getattr(engine, _COMPILER)
    setattr(engine, _COMPILER, shared)
    return shared


def type_names(failure: Any) -> list[str]:
    """The exception type names of a TaskFlow ``Failure``, most specific first."""
    return list(failure)


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its names is read."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def sqlalchemy_backend() -> types.ModuleType:
    """``taskflow.persistence.backends.impl_sqlalchemy``, imported without Alembic (see the
    module doc)."""
    loaded = sys.modules.get(_SQL_BACKEND)
    if loaded is not None:
        return loaded
    if _SQL_MIGRATION not in sys.modules:
        sys.modules[_SQL_MIGRATION] = _Deferred(_SQL_MIGRATION)
    module = importlib.import_module(_SQL_BACKEND)
    _require(module, "migration")
    return module
