"""A run's TaskFlow side: its logbook, its engine, and what the logbook says about it.

Every migration is one logbook and one flow detail, both keyed by the migration id. The store's
inputs (the migration id, the request, the migration policy) are saved once, in the flow detail's
``meta["ferry_store"]``, when the run is created; every load injects them, and the process-local
resolver (:class:`~ferry.context.Context`), transiently, so nothing but plain JSON is persisted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any

from taskflow import engines, exceptions as tf_exc, states
from taskflow.persistence import models as tf_models

from ferry import compat, errors
from ferry.config import MigrationSettings, Settings
from ferry.context import Context
from ferry.flows import constants as c
from ferry.flows.live_migration import get_live_migration_flow
from ferry.model import MigrationRequest, PhaseState
from ferry.runner.phases import atom_facts, phase_states

#: the flow detail's meta key holding the store's inputs
STORE_META_KEY = "ferry_store"
#: the flow factory of every migration, as TaskFlow records it in the flow detail
FLOW_FACTORY = "ferry.flows.live_migration.get_live_migration_flow"


def policy_for(settings: Settings, request: MigrationRequest) -> MigrationSettings:
    """The migration policy of ``request``: the configured one with its overrides (the one
    place a request's settings are validated; raises ConfigError naming the problem)."""
    policy = settings.migration.with_overrides(request.overrides)
    if request.max_attempts is not None:
        if request.max_attempts < 0:
            raise errors.ConfigError("max_attempts must be >= 0")
        policy = dataclasses.replace(policy, max_attempts=request.max_attempts)
    return policy


class Logbooks:
    """Saving, reading and loading the runs of one TaskFlow backend."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        # Runs of one thread share one flow object and its compilation (the engine's runtime is
        # per run): see ferry.compat.share_compilation.
        self._local = threading.local()

    def save(self, migration_id: str, request: MigrationRequest, policy: MigrationSettings) -> None:
        """The run's logbook and flow detail with the store's inputs (run nothing)."""
        book = tf_models.LogBook(f"migration-{migration_id}", uuid=migration_id)
        fd = tf_models.FlowDetail(c.FLOW_NAME, uuid=migration_id)
        fd.meta = {
            STORE_META_KEY: {
                c.MIGRATION_ID: migration_id,
                c.REQUEST: request.to_dict(),
                c.SETTINGS: dataclasses.asdict(policy),
            }
        }
        book.add(fd)
        engines.save_factory_details(fd, get_live_migration_flow, [], {}, backend=None)
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.save_logbook(book)

    def store(self, migration_id: str) -> dict[str, Any]:
        """The store's inputs saved with the run ({} when it has no logbook)."""
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                fd = conn.get_flow_details(migration_id, lazy=True)
        except tf_exc.NotFound:
            return {}
        return dict((fd.meta or {}).get(STORE_META_KEY, {}))

    def flow_state(self, migration_id: str) -> str | None:
        """The flow's persisted state (PENDING, RUNNING, SUCCESS, REVERTED, ...); None when the
        run has no logbook."""
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                return str(conn.get_flow_details(migration_id, lazy=True).state or states.PENDING)
        except tf_exc.NotFound:
            return None

    def phases(self, migration_id: str) -> list[PhaseState]:
        """Every phase's state, duration and error, read from the logbook."""
        try:
            with contextlib.closing(self.backend.get_connection()) as conn:
                atoms = {ad.name: atom_facts(ad) for ad in conn.get_atoms_for_flow(migration_id)}
        except tf_exc.StorageFailure:
            return []
        return phase_states(atoms)

    def find(self, migration_id: str) -> Any | None:
        """The run's flow detail, or None when it has no logbook."""
        with contextlib.closing(self.backend.get_connection()) as conn:
            try:
                book = conn.get_logbook(migration_id)
            except tf_exc.NotFound:
                return None
        return book.find(migration_id)

    def engine(
        self, fd: Any, context: Context, *, backend: Any = None, nested: bool = False
    ) -> Any:
        """The engine of the saved run ``fd``, its store's inputs and ``context`` injected.

        ``backend``: the backend its writes go through (default: this one); ``nested``: the run
        is started from inside another run of this thread (an event callback), so it gets a flow
        object of its own."""
        store = dict((fd.meta or {}).get(STORE_META_KEY, {}))
        flow, shared = self._flow(fd, nested)
        engine = engines.load(
            flow, flow_detail=fd, backend=backend or self.backend, engine="serial"
        )
        if shared:
            self._local.compiler = compat.share_compilation(
                engine, getattr(self._local, "compiler", None)
            )
        compat.use_storage_lock(engine.storage)
        engine.storage.inject({**store, c.CONTEXT: context}, transient=True)
        return engine

    def _flow(self, fd: Any, nested: bool) -> tuple[Any, bool]:
        """The flow of a saved run and whether it is this thread's shared one. Flows are
        immutable once built but their tasks carry notifiers the engine uses while running
        them, so each thread keeps its own."""
        factory = (fd.meta or {}).get("factory", {}).get("name", "")
        if not factory.endswith("get_live_migration_flow"):
            return engines.flow_from_detail(fd), False
        if nested:
            return get_live_migration_flow(), False
        flow = getattr(self._local, "flow", None)
        if flow is None:
            flow = self._local.flow = get_live_migration_flow()
        return flow, True
