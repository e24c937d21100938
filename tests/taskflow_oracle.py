"""TaskFlow's stock SQLAlchemy backend as the oracle for ferry's: the same operations on both,
and what TaskFlow's models show of them (each step's return value or error, the rows read back)."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from taskflow import engines, states, task
from taskflow.patterns import linear_flow
from taskflow.persistence import models
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.types import failure

from ferry.jobs.ownership import FencedBackend, Ownership
from ferry.persistence.db import Database
from ferry.persistence.repository import LeaseRepository

#: what ferry adds to an atom's meta (documented in ferry.persistence.taskflow_backend)
FERRY_META = ("timestamps", "last_state")


def stock_backend(url: str, **conf: Any) -> impl_sqlalchemy.SQLAlchemyBackend:
    return impl_sqlalchemy.SQLAlchemyBackend({"connection": url, **conf})


class _Board:
    def find_owner(self, job: Any) -> str:
        return "me"

    def extend_claim(self, job: Any, who: str, expiry: float) -> bool:
        return True


def fenced(backend: Any, db: Database, migration_id: str = "m-1") -> FencedBackend:
    """``backend`` as a conductor that holds the lease of ``migration_id`` writes through it."""
    leases = LeaseRepository(db)
    assert leases.acquire(migration_id, "me", 300)
    own = Ownership(
        board=_Board(),
        job=object(),
        leases=leases,
        migration_id=migration_id,
        owner="me",
        ttl=300,
        stopping=threading.Event(),
    )
    own.leased = True
    return FencedBackend(backend, own)


def atom_view(ad: Any) -> dict[str, Any]:
    view = ad.to_dict()
    meta = {k: v for k, v in (view["meta"] or {}).items() if k not in FERRY_META}
    view["meta"] = meta
    view["type"] = type(ad).__name__
    return view


def flow_view(fd: Any, *, by_name: bool = False) -> dict[str, Any]:
    atoms = [atom_view(ad) for ad in fd]
    if by_name:  # atoms made by TaskFlow's storage have random uuids
        for a in atoms:
            a.pop("uuid")
        atoms.sort(key=lambda a: a["name"])
    else:
        atoms.sort(key=lambda a: a["uuid"])
    return {
        "name": fd.name,
        "uuid": None if by_name else fd.uuid,
        "state": fd.state,
        "meta": fd.meta,
        "atoms": atoms,
    }


def book_view(book: Any, *, by_name: bool = False) -> dict[str, Any]:
    flows = sorted(
        (flow_view(fd, by_name=by_name) for fd in book), key=lambda f: (f["name"], f["uuid"] or "")
    )
    return {"name": book.name, "uuid": book.uuid, "meta": book.meta, "flows": flows}


def view(value: Any) -> Any:
    if isinstance(value, models.AtomDetail):
        return atom_view(value)
    if isinstance(value, models.FlowDetail):
        return flow_view(value)
    if isinstance(value, models.LogBook):
        return book_view(value)
    return value


class Recorder:
    """Runs steps, recording each one's model (or the error's type) and the atom rows after it."""

    def __init__(self, reader: Any, flow_uuid: str) -> None:
        self.reader = reader
        self.flow_uuid = flow_uuid
        self.seen: list[tuple[str, Any]] = []

    def step(self, label: str, fn: Callable[[], Any]) -> None:
        try:
            self.seen.append((label, view(fn())))
        except Exception as exc:
            self.seen.append((label, f"raised {type(exc).__name__}"))
        with contextlib.closing(self.reader.get_connection()) as conn:
            stored = [atom_view(ad) for ad in conn.get_atoms_for_flow(self.flow_uuid)]
        self.seen.append((f"{label}: stored", sorted(stored, key=lambda a: a["uuid"])))


def _failure(message: str) -> failure.Failure:
    try:
        raise ValueError(message)
    except ValueError:
        return failure.Failure()


def direct_scenario(first: Any, second: Any, reader: Any, p: str) -> list[tuple[str, Any]]:
    """Connection calls a runner makes, on backend object ``first``; ``second`` is another
    backend object writing the same rows; uuids start with ``p`` (both runs may share a DB)."""

    def on(backend: Any, call: str, *args: Any) -> Callable[[], Any]:
        def run() -> Any:
            with contextlib.closing(backend.get_connection()) as conn:
                return getattr(conn, call)(*args)

        return run

    book = models.LogBook("book", uuid=f"{p}-lb")
    fd = models.FlowDetail("flow", uuid=f"{p}-fd")
    book.add(fd)
    td = models.TaskDetail("copy", uuid=f"{p}-task")
    td.version = "1.0"
    rd = models.RetryDetail("reschedule", uuid=f"{p}-retry")
    fd.add(td)
    rec = Recorder(reader, fd.uuid)
    rec.step("save logbook", on(first, "save_logbook", book))
    ghost = models.TaskDetail("ghost", uuid=f"{p}-ghost")
    ghost.state, ghost.meta = states.RUNNING, {"progress": 0.0}
    rec.step("update an atom not stored", on(first, "update_atom_details", ghost))
    rec.step("update it again", on(first, "update_atom_details", ghost))
    fd.add(rd)
    td.state, td.meta = states.PENDING, {"hint": 1}
    rec.step("flow update: new atom, stored one changed", on(first, "update_flow_details", fd))
    td.state = states.RUNNING
    rec.step("running", on(first, "update_atom_details", td))
    td.meta = {**td.meta, "progress": 0.0}
    rec.step("progress 0.0", on(first, "update_atom_details", td))
    td.meta = {**td.meta, "progress": 0.5, "progress_details": {"at_progress": 0.5, "details": {}}}
    rec.step("progress only", on(first, "update_atom_details", td))
    td.state, td.results = states.SUCCESS, {"host": "lv-b", "numbers": [1, 2.5], "none": None}
    rec.step("success", on(first, "update_atom_details", td))
    td.meta = {**td.meta, "progress": 1.0, "progress_details": None}
    rec.step("progress 1.0", on(first, "update_atom_details", td))
    meta = {"progress": 1.0, "nested": {"ok": True}}
    td.meta, before = meta, copy.deepcopy(meta)
    rec.step("meta write", on(first, "update_atom_details", td))
    rec.seen.append(("caller's meta untouched", (td.meta is meta, meta == before)))
    rd.state, rd.failure = states.FAILURE, _failure("no room")
    rd.results = [("lv-a", {"check": _failure("full")})]
    rec.step("retry failure", on(first, "update_atom_details", rd))
    rd.state, rd.intention = states.REVERTING, states.REVERT
    rd.revert_failure = _failure("revert broke")
    rec.step("retry revert failure", on(first, "update_atom_details", rd))
    theirs = models.TaskDetail("copy", uuid=td.uuid)
    theirs.state, theirs.intention, theirs.meta = states.REVERTING, states.REVERT, {"x": 2}
    rec.step("second backend writes the row", on(second, "update_atom_details", theirs))
    rec.step("first writes its own values again", on(first, "update_atom_details", td))
    renamed = models.TaskDetail("renamed", uuid=td.uuid)
    renamed.state = states.SUCCESS
    rec.step("same uuid, another name", on(first, "update_atom_details", renamed))
    other_type = models.RetryDetail("copy", uuid=td.uuid)
    rec.step("same uuid, another type", on(first, "update_atom_details", other_type))
    fd_b = models.FlowDetail("flow", uuid=fd.uuid)
    fd_b.add(models.TaskDetail("theirs", uuid=f"{p}-theirs"))
    rec.step("second backend adds an atom", on(second, "update_flow_details", fd_b))
    fd.state, fd.meta = states.RUNNING, {"factory": "x"}
    rec.step("flow update without that atom", on(first, "update_flow_details", fd))
    renamed_fd = models.FlowDetail("other-name", uuid=fd.uuid)
    renamed_fd.state = states.SUCCESS
    rec.step("flow of another name", on(first, "update_flow_details", renamed_fd))
    ghost_fd = models.FlowDetail("ghost", uuid=f"{p}-ghost-fd")
    rec.step("flow not stored", on(first, "update_flow_details", ghost_fd))
    rec.step("read logbook", on(reader, "get_logbook", book.uuid))
    rec.step("read flow", on(reader, "get_flow_details", fd.uuid))
    rec.step("read atom", on(reader, "get_atom_details", rd.uuid))
    return rec.seen


def updated_rows(engine: sa.Engine, p: str) -> list[tuple[str, bool]]:
    """Which atom rows carry an ``updated_at``, by uuid without the run's prefix."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT uuid, updated_at FROM atomdetails WHERE uuid LIKE :p ORDER BY uuid"),
            {"p": f"{p}-%"},
        )
        return [(uuid.removeprefix(p), stamp is not None) for uuid, stamp in rows]


def strip_prefix(seen: Any, p: str) -> Any:
    """The recorded models with the run's uuid prefix removed (compare two runs)."""
    if isinstance(seen, str):
        return seen.replace(f"{p}-", "")
    if isinstance(seen, dict):
        return {k: strip_prefix(v, p) for k, v in seen.items()}
    if isinstance(seen, list | tuple):
        return type(seen)(strip_prefix(v, p) for v in seen)
    return seen


# ------------------------------------------------------------------ a real engine run
class Step(task.Task):
    def execute(self) -> dict[str, str]:
        self.update_progress(0.5)
        return {"done": self.name}

    def revert(self, *args: Any, **kwargs: Any) -> str:
        return f"undone {self.name}"


class Boom(task.Task):
    def execute(self, vm: str) -> None:
        raise RuntimeError(f"no room for {vm}")


def engine_scenario(backend: Any, reader: Any, p: str) -> dict[str, Any]:
    """A flow that succeeds and one that fails and reverts, run by TaskFlow's engine."""
    book = models.LogBook("engine-book", uuid=f"{p}-engine")
    ok = linear_flow.Flow("ok").add(Step("a"), Step("b", provides="b_out"))
    bad = linear_flow.Flow("bad").add(Step("c"), Boom("d"))
    for flow in (ok, bad):
        engine = engines.load(flow, store={"vm": "web-1"}, book=book, backend=backend)
        with contextlib.suppress(RuntimeError):
            engine.run()
    with contextlib.closing(reader.get_connection()) as conn:
        return book_view(conn.get_logbook(book.uuid), by_name=True)
