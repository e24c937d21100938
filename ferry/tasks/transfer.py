"""The live transfer: start (or re-attach to) it and monitor it to the switchover.

Nova's ``_live_migration_operation`` + ``_live_migration_monitor``: progress into TaskFlow and the
migration record, downtime raised in steps, completion timeout with an action, abort on request.
"""

from __future__ import annotations

from typing import Any

from ferry import errors
from ferry.config import MigrationSettings
from ferry.context import Context, Event
from ferry.drivers.base import Driver, TransferPolicy
from ferry.model import Instance, MigrateData, MigrationStatus, TransferProgress
from ferry.persistence.repository import Requests
from ferry.policy import completion_timeout, data_gb, downtime_steps
from ferry.tasks.base import LOG, FerryTask, instance_of, migrate_data_of, safe_revert


def progress_dict(p: TransferProgress) -> dict[str, Any]:
    rate = p.memory_processed_mb / p.elapsed_s if p.elapsed_s > 0 else 0.0
    eta = p.memory_remaining_mb / rate if rate > 0 and p.state == "running" else None
    return {
        "phase": "transfer",
        "state": p.state,
        "percent": round(p.fraction * 100, 1),
        "memory_total_mb": round(p.memory_total_mb, 1),
        "memory_processed_mb": round(p.memory_processed_mb, 1),
        "memory_remaining_mb": round(p.memory_remaining_mb, 1),
        "dirty_rate_mbps": round(p.dirty_rate_mbps, 1),
        "iteration": p.iteration,
        "downtime_ms": p.downtime_ms,
        "throttle_percent": p.throttle_percent,
        "elapsed_s": round(p.elapsed_s, 2),
        "eta_s": round(eta, 1) if eta is not None else None,
        "transfer_started": True,
    }


class StuckDetector:
    """Is a pre-copy transfer converging? The rule for switching to post-copy: after the
    first full pass, each memory iteration must shrink what is left to copy by at least 10 %.
    Measured on the memory remaining when each iteration is first seen."""

    def __init__(self, min_progress: float = 0.10) -> None:
        self.min_progress = min_progress
        self._starts: dict[int, float] = {}

    def update(self, p: TransferProgress) -> bool:
        """Feed one progress sample; True when the transfer does not converge."""
        if p.state != "running" or p.iteration < 1 or p.iteration in self._starts:
            return False
        earlier = [i for i in self._starts if i < p.iteration]
        self._starts[p.iteration] = p.memory_remaining_mb
        if p.iteration < 3 or not earlier:
            return False  # pass 1 copies everything once; pass 2 sets the baseline
        before = self._starts[max(earlier)]
        return before > 0 and p.memory_remaining_mb > before * (1.0 - self.min_progress)


class Transfer(FerryTask):
    """Move the running guest: start the transfer on the source and monitor it until the
    switchover. Re-run after a crash, it first reconciles with the driver: transfer already done
    -> move on; in flight -> re-attach the monitor; never started -> start it.

    Revert: abort the transfer if it is still in flight (the guest keeps running on the source);
    if the switchover already happened the guest is never moved back (a leftover is recorded).
    """

    def execute(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        prepared_migrate_data: dict[str, Any],
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        inst = instance_of(instance)
        data = migrate_data_of(prepared_migrate_data)
        policy = MigrationSettings.from_store(settings)
        driver = context.driver(data.source)
        started = bool(
            (context.migrations.field(migration_id, "progress") or {}).get("transfer_started")
        )
        if started:
            loc = driver.locate(inst.uuid)
            if loc.host == data.destination and not loc.transfer_in_flight:
                LOG.info("migration %s: switchover already done before the restart", migration_id)
                p = driver.transfer_progress(inst, data)
                result = self._result(p, None, 0)
                self._report(context, migration_id, p, result)
                return result
            state = driver.transfer_progress(inst, data).state
            if state == "none":
                started = False
            else:
                LOG.info(
                    "migration %s: re-attaching to a transfer in state %s", migration_id, state
                )
        if not started:
            context.check_abort(migration_id, "before the transfer")
            context.migrations.set_status(
                migration_id,
                MigrationStatus.RUNNING,
                progress={
                    "phase": "transfer",
                    "state": "starting",
                    "percent": 0.0,
                    "transfer_started": True,
                },
            )
            steps = list(downtime_steps(policy, self._gb(inst, data)))
            driver.start_transfer(
                inst,
                data,
                TransferPolicy(
                    bandwidth_mbps=float(policy.live_migration_bandwidth),
                    initial_downtime_ms=steps[0][1],
                    permit_auto_converge=policy.live_migration_permit_auto_converge,
                    auto_converge_initial=policy.live_migration_auto_converge_initial,
                    auto_converge_increment=policy.live_migration_auto_converge_increment,
                    permit_post_copy=policy.live_migration_permit_post_copy,
                ),
            )
        else:
            context.migrations.set_status(migration_id, MigrationStatus.RUNNING)
        return self._monitor(context, migration_id, driver, inst, data, policy)

    @staticmethod
    def _gb(inst: Instance, data: MigrateData) -> float:
        return data_gb(inst.memory_mb, inst.disk_gb, data.block_migration)

    def _monitor(
        self,
        ctx: Context,
        migration_id: str,
        driver: Driver,
        inst: Instance,
        data: MigrateData,
        policy: MigrationSettings,
    ) -> dict[str, Any]:
        gb = self._gb(inst, data)
        steps = list(downtime_steps(policy, gb))
        timeout = completion_timeout(policy, gb)
        applied = 0
        lever: str | None = None
        refused = False
        throttled = False
        stuck = StuckDetector()
        while True:
            p = driver.transfer_progress(inst, data)
            throttled = throttled or p.throttle_percent > 0
            if p.state == "completed":
                if lever is None and throttled:
                    lever = "auto-converge"
                result: dict[str, Any] | None = self._result(p, lever, applied)
            else:
                result = None
            requests = self._report(ctx, migration_id, p, result)
            if result is not None:
                return result
            if p.state == "cancelled":
                raise errors.MigrationCancelled(migration_id, "during the transfer")
            if p.state == "failed":
                raise errors.TransferFailed(
                    data.source, p.error or "the hypervisor reported a failure"
                )
            if p.state == "none":
                raise errors.TransferFailed(
                    data.source, "the transfer disappeared from the hypervisor"
                )
            if requests.abort:
                if self._abort(driver, inst, data):
                    raise errors.MigrationCancelled(migration_id, "during the transfer")
                continue  # switched over meanwhile: too late to abort, finish instead
            if (
                policy.live_migration_permit_post_copy
                and lever is None
                and not refused
                and stuck.update(p)
            ):
                try:
                    lever = driver.force_complete(inst, data)
                except errors.DriverError as exc:
                    refused = True
                    LOG.warning("migration %s: cannot switch to post-copy: %s", migration_id, exc)
                else:
                    LOG.warning(
                        "migration %s: not converging (iteration %d, %.0f MiB left): "
                        "switched to %s",
                        migration_id,
                        p.iteration,
                        p.memory_remaining_mb,
                        lever,
                    )
                continue
            if requests.force_complete and lever is None and not refused:
                try:
                    lever = driver.force_complete(inst, data)
                except errors.DriverError as exc:
                    # the transfer goes on under its policy; the user sees why in the log
                    refused = True
                    LOG.warning("migration %s: cannot force completion: %s", migration_id, exc)
                else:
                    LOG.warning(
                        "migration %s: forced to complete on request, by %s", migration_id, lever
                    )
                continue
            due = applied
            while due + 1 < len(steps) and steps[due + 1][0] <= p.elapsed_s:
                due += 1
            if due != applied:
                applied = due
                driver.set_max_downtime(inst, data, steps[applied][1])
                LOG.info(
                    "migration %s: max downtime raised to %d ms", migration_id, steps[applied][1]
                )
            if timeout is not None and p.elapsed_s > timeout and lever is None:
                if policy.live_migration_timeout_action == "force_complete":
                    lever = driver.force_complete(inst, data)
                    LOG.warning(
                        "migration %s: completion timeout, forced to complete by %s",
                        migration_id,
                        lever,
                    )
                elif self._abort(driver, inst, data):
                    raise errors.TransferTimeout(data.source, timeout)
                else:
                    continue
            self._pause(ctx, driver, inst, data, policy.poll_interval)

    @staticmethod
    def _pause(
        ctx: Context, driver: Driver, inst: Instance, data: MigrateData, seconds: float
    ) -> None:
        """Wait one poll interval. A driver that runs the transfer call itself waits on it
        (:meth:`~ferry.drivers.base.Driver.wait_transfer_end`), so the monitor sees the
        switchover at once rather than up to a poll interval late (on a small guest that was
        most of ferry's cost over the transfer itself); otherwise the run's clock sleeps."""
        ctx.clock.sleep(0)  # the run's clock still checks what it checks (a conductor's fence)
        if not driver.wait_transfer_end(inst, data, seconds):
            ctx.clock.sleep(seconds)

    @staticmethod
    def _abort(driver: Driver, inst: Instance, data: MigrateData) -> bool:
        """Abort the transfer; False when it switched over first (then it cannot be aborted)."""
        try:
            driver.abort_transfer(inst, data)
        except errors.DriverError:
            if driver.transfer_progress(inst, data).state == "completed":
                return False
            raise
        return True

    def _report(
        self,
        ctx: Context,
        migration_id: str,
        p: TransferProgress,
        result: dict[str, Any] | None = None,
    ) -> Requests:
        """Progress into TaskFlow, the record and the events; returns the users' requests."""
        progress = progress_dict(p)
        if result is not None:
            progress["result"] = result
        self.update_progress(p.fraction)
        requests = ctx.migrations.report_progress(migration_id, progress)
        ctx.events.emit(
            Event(kind="progress", migration_id=migration_id, phase=self.name, data=progress)
        )
        return requests

    @staticmethod
    def _result(p: TransferProgress, lever: str | None, steps_applied: int) -> dict[str, Any]:
        if lever is None:
            lever = "downtime steps" if steps_applied else "none needed"
        return {
            "downtime_ms": p.downtime_ms,
            "iterations": p.iteration,
            "elapsed_s": round(p.elapsed_s, 3),
            "lever": lever,
            "downtime_steps_applied": steps_applied,
        }

    def revert(
        self,
        context: Context,
        migration_id: str,
        instance: dict[str, Any],
        prepared_migrate_data: dict[str, Any],
        result: Any,
        **kwargs: Any,
    ) -> None:
        inst = instance_of(instance)
        data = migrate_data_of(prepared_migrate_data)

        def undo() -> None:
            driver = context.driver(data.source)
            loc = driver.locate(inst.uuid)
            if loc.host == data.destination and not loc.transfer_in_flight:
                # the switchover happened: the VM is never moved back
                raise errors.DriverError(
                    data.destination,
                    "revert of the transfer",
                    f"{inst.name} already switched over to {data.destination}; not moved back",
                )
            if loc.transfer_in_flight:
                driver.abort_transfer(inst, data)

        safe_revert(context, migration_id, f"transfer to {data.destination}", undo)
