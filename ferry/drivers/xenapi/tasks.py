"""The migrate tasks (``Async.VM.migrate_send`` / ``Async.VM.pool_migrate``) of migrations.

Each task is tagged in its ``other_config`` with the instance, the migration's token (from
``driver_data``) and the destination, so that a restarted ferry finds it again; a task started
just before a crash, before it was tagged, is found through the VM's ``current_operations``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from ferry.clock import Clock
from ferry.model import MigrateData

from .faults import Redactor, XapiError
from .lookup import Lookup
from .records import (
    IN_FLIGHT,
    TAG_DESTINATION,
    TAG_INSTANCE,
    TAG_TOKEN,
    XAPI_PROBLEMS,
    Refused,
    Task,
    Vm,
    tags_of,
)
from .session import PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")
MIGRATE_OPERATIONS = frozenset({"migrate_send", "pool_migrate"})
#: how long a cancelled task may take to stop (s of the driver's clock), and the poll interval
ABORT_WAIT_S = 120.0
ABORT_POLL_S = 0.5


def token_of(data: MigrateData) -> str:
    return str(data.driver_data.get("token"))


class TaskBook:
    """Finds, tags, cancels and forgets migrate tasks; remembers this process's by token."""

    def __init__(self, lookup: Lookup, redact: Redactor) -> None:
        self._lookup = lookup
        self._redact = redact
        self._known: dict[str, tuple[str, str]] = {}  # token -> (pool url, task ref)
        self._lock = threading.Lock()

    def remember(self, data: MigrateData, pool: PoolSession, task: str) -> None:
        with self._lock:
            self._known[token_of(data)] = (pool.url, task)

    def tag(self, pool: PoolSession, task: str, data: MigrateData) -> None:
        """Tag ``task`` with the instance, the migration's token and the destination."""
        tags = {
            TAG_INSTANCE: data.instance_uuid,
            TAG_TOKEN: token_of(data),
            TAG_DESTINATION: data.destination,
        }
        current = tags_of(pool.call("task.get_record", task))
        for key, value in tags.items():
            if key in current:
                pool.call("task.remove_from_other_config", task, key)
            pool.call("task.add_to_other_config", task, key, value)

    def start(self, pool: PoolSession, method: str, *args: Any, data: MigrateData) -> str:
        """Call ``method`` (an ``Async.*`` call) and tag the task it returns. A task that cannot
        be tagged is cancelled (a restarted ferry could not find it)."""
        task = str(pool.call(method, *args))
        self.remember(data, pool, task)
        try:
            self.tag(pool, task, data)
        except XAPI_PROBLEMS:
            with contextlib.suppress(*XAPI_PROBLEMS):
                pool.call("task.cancel", task)
            raise
        return task

    def of_instance(self, instance_uuid: str, copies: Sequence[Vm]) -> list[Task]:
        """Migrate tasks of the instance in the pools of ``copies`` (every pool without a copy):
        those tagged with it and those in a copy's ``current_operations``."""
        pools = {vm.pool.url: vm.pool for vm in copies} or self._lookup.pools
        busy = {
            ref: vm.pool.url
            for vm in copies
            for ref, op in (vm.rec.get("current_operations") or {}).items()
            if op in MIGRATE_OPERATIONS
        }
        out = []
        for pool in pools.values():
            for ref, rec in pool.call("task.get_all_records").items():
                if tags_of(rec).get(TAG_INSTANCE) == instance_uuid or busy.get(ref) == pool.url:
                    out.append(Task(pool, ref, rec))
        return out

    def find(self, data: MigrateData) -> Task | None:
        """This migration's task (remembered, else by its token tag in the source pool)."""
        token = token_of(data)
        with self._lock:
            known = self._known.get(token)
        if known is not None:
            pool = self._lookup.pools[known[0]]
            try:
                return Task(pool, known[1], pool.call("task.get_record", known[1]))
            except XapiError as exc:
                if exc.code != "HANDLE_INVALID":
                    raise
                with self._lock:
                    self._known.pop(token, None)
                return None
        spool = self._lookup.pool_of(data.source)
        for ref, rec in spool.call("task.get_all_records").items():
            if tags_of(rec).get(TAG_TOKEN) == token:
                self.remember(data, spool, ref)
                return Task(spool, ref, rec)
        return None

    def adopt(self, task: Task, data: MigrateData) -> None:
        """Make an untagged task of the instance this migration's (see module doc)."""
        self.tag(task.pool, task.ref, data)
        self.remember(data, task.pool, task.ref)
        LOG.warning(
            "xenapi: adopted the untagged migrate task %s of %s", task.ref, data.instance_uuid
        )

    def cancel_and_wait(self, task: Task, clock: Clock) -> Task:
        """``task.cancel`` (late in a migration XAPI no longer cancels: the task then just
        finishes) and wait until the task stopped; returns it as it ended.

        :raises Refused: it did not stop within ``ABORT_WAIT_S``.
        """
        if task.status == "pending":
            try:
                task.pool.call("task.cancel", task.ref)
                LOG.info("xenapi: migrate task %s cancelled", task.ref)
            except XapiError as exc:
                if exc.code != "OPERATION_NOT_ALLOWED":
                    raise
                LOG.info("xenapi: migrate task %s can no longer be cancelled", task.ref)
        waited = 0.0
        while True:
            task = Task(task.pool, task.ref, task.pool.call("task.get_record", task.ref))
            if task.status not in IN_FLIGHT:
                return task
            if waited >= ABORT_WAIT_S:
                raise Refused(
                    f"the migrate task was cancelled but is still {task.status} after "
                    f"{waited:.0f} s"
                )
            clock.sleep(ABORT_POLL_S)
            waited += ABORT_POLL_S

    def forget(self, data: MigrateData, task: Task) -> None:
        """Destroy this migration's finished task (best effort) and forget it."""
        with self._lock:
            self._known.pop(token_of(data), None)
        if task.status in IN_FLIGHT:
            return
        try:
            task.pool.call("task.destroy", task.ref)
        except XAPI_PROBLEMS as exc:
            LOG.debug("xenapi: task %s not destroyed: %s", task.ref, self._redact(str(exc)))

    def error(self, task: Task) -> str:
        """A failed task's ``error_info`` as a sentence."""
        info = [str(x) for x in task.rec.get("error_info") or []]
        if not info:
            return "the XAPI task failed without an error code"
        return self._redact(str(XapiError(str(task.rec.get("name_label")), info[0], info[1:])))
