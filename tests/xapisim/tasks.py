"""XAPI tasks: records, the jobs that move a migration forward with the clock, cancellation.

A migrate job's progress is ``elapsed / duration`` (see :meth:`Plan.duration`); ``tick()`` brings
every pending task up to the clock, applies a fault when its progress is reached, and makes the
move at 1.0. Everything runs under the model lock.
"""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from tests.xapisim import migrate
from tests.xapisim.migrate import Plan
from tests.xapisim.model import NULL, Model, XapiError, new_ref

CANCELLABLE_UNTIL = 0.9
DONE = ("success", "failure", "cancelled")


def result_xml(value: Any) -> str:
    """``task.result``: the XML-RPC ``<value>`` fragment XAPI stores (strings bare)."""
    if isinstance(value, str):
        return f"<value>{escape(value)}</value>" if value else "<value></value>"
    body = xmlrpc.client.dumps((value,), allow_none=False)
    return body[body.index("<value>") : body.rindex("</value>") + len("</value>")]


@dataclass
class Job:
    task: str
    plan: Plan
    started: float
    duration: float
    cancel_requested: float | None = None


class Tasks:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.jobs: dict[str, Job] = {}

    def create(self, pool: str, name: str, host: str = NULL, cancellable: bool = False) -> str:
        m = self.model
        if host == NULL:
            host = m.get(pool, "pool", m.one(pool, "pool"))["master"]
        return m.add(
            pool,
            "task",
            name_label=name,
            name_description="",
            allowed_operations=["cancel"] if cancellable else [],
            created=m.clock.now(),
            status="pending",
            resident_on=host,
            backtrace="()",
        )

    def succeed(self, pool: str, task: str, value: Any) -> None:
        self.model.update(
            pool,
            "task",
            task,
            status="success",
            progress=1.0,
            result=result_xml(value),
            finished=self.model.clock.now(),
            allowed_operations=[],
            current_operations={},
        )

    def fail(self, pool: str, task: str, error: XapiError | None, cancelled: bool = False) -> None:
        self.model.update(
            pool,
            "task",
            task,
            status="cancelled" if cancelled else "failure",
            error_info=[] if cancelled or error is None else error.description,
            finished=self.model.clock.now(),
            allowed_operations=[],
            current_operations={},
        )

    def start(self, pool: str, task: str, plan: Plan) -> None:
        """Run ``plan`` as ``task``; the VM is busy with it until the task ends."""
        m = self.model
        vm = m.get(pool, "VM", plan.vm)
        m.update(pool, "VM", plan.vm, current_operations={task: plan.kind})
        m.update(pool, "task", task, resident_on=vm["resident_on"])
        self.jobs[task] = Job(task, plan, m.clock.now(), plan.duration(m))
        self.tick()

    def cancel(self, pool: str, task: str) -> None:
        """A request, as in XAPI: acted on at the job's next checkpoint (once the clock has moved
        on), ignored once the task is no longer cancellable."""
        rec = self.model.get(pool, "task", task)
        if rec["status"] == "pending" and "cancel" in rec["allowed_operations"]:
            if task in self.jobs:
                self.jobs[task].cancel_requested = self.model.clock.now()
            self.model.update(
                pool,
                "task",
                task,
                status="cancelling",
                allowed_operations=[],
                current_operations={new_ref(): "cancel"},
            )

    def tick(self) -> None:
        m = self.model
        now = m.clock.now()
        for ref, job in list(self.jobs.items()):
            plan = job.plan
            if not m.exists(plan.pool, "task", ref):
                self._end(job)
                continue
            if job.cancel_requested is not None and now > job.cancel_requested:
                self._end(job)
                self.fail(plan.pool, ref, None, cancelled=True)
                continue
            progress = 1.0 if job.duration <= 0 else min(1.0, (now - job.started) / job.duration)
            fault = self._fault(plan)
            if fault is not None and progress >= fault[0]:
                self._end(job)
                m.update(plan.pool, "task", ref, progress=round(fault[0], 2))
                self.fail(plan.pool, ref, fault[1])
            elif progress >= 1.0:
                self._end(job)
                try:
                    self.succeed(plan.pool, ref, migrate.apply(m, plan))
                except XapiError as exc:
                    self.fail(plan.pool, ref, exc)
            else:
                changes: dict[str, Any] = {"progress": round(progress, 2)}
                if progress >= CANCELLABLE_UNTIL:
                    changes["allowed_operations"] = []
                m.update(plan.pool, "task", ref, **changes)

    def _fault(self, plan: Plan) -> tuple[float, XapiError] | None:
        m = self.model
        name = m.get(plan.pool, "VM", plan.vm)["name_label"]
        if plan.kind == "migrate_send" and plan.copied_vdis(m):
            f = m.fault("mirror_failed", vm=name)
            if f:
                return f.at, migrate.failure_for(m, plan, "MIRROR_FAILED")
        f = m.fault("task_fails", vm=name)
        if f:
            return f.at, migrate.failure_for(m, plan, f.code)
        return None

    def _end(self, job: Job) -> None:
        self.jobs.pop(job.task, None)
        if self.model.exists(job.plan.pool, "VM", job.plan.vm):
            self.model.update(job.plan.pool, "VM", job.plan.vm, current_operations={})
