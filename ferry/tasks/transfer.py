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
from ferry.policy import (
    AbortOnRequest,
    Fail,
    Finish,
    ForceCompleteOnRequest,
    MonitorPolicy,
    MonitorState,
    Sample,
    StepDowntime,
    SwitchToPostCopy,
    TimeoutAbort,
    TimeoutForceComplete,
    Wait,
    data_gb,
    decide,
    finished,
)
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
    }


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
        conf = MigrationSettings.from_store(settings)
        policy = MonitorPolicy.of(conf, data_gb(inst.memory_mb, inst.disk_gb, data.block_migration))
        driver = context.driver(data.source)
        started = context.migrations.transfer_started_at(migration_id) is not None
        if started:
            loc = driver.locate(inst.uuid)
            if loc.host == data.destination and not loc.transfer_in_flight:
                LOG.info("migration %s: switchover already done before the restart", migration_id)
                p = driver.transfer_progress(inst, data)
                result = self._result(p, MonitorState().finish())
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
            context.migrations.mark_transfer_started(
                migration_id, {"phase": "transfer", "state": "starting", "percent": 0.0}
            )
            driver.start_transfer(
                inst,
                data,
                TransferPolicy(
                    bandwidth_mbps=float(conf.live_migration_bandwidth),
                    initial_downtime_ms=policy.steps[0][1],
                    permit_auto_converge=conf.live_migration_permit_auto_converge,
                    auto_converge_initial=conf.live_migration_auto_converge_initial,
                    auto_converge_increment=conf.live_migration_auto_converge_increment,
                    permit_post_copy=conf.live_migration_permit_post_copy,
                ),
            )
        else:
            context.migrations.set_status(migration_id, MigrationStatus.RUNNING)
        return self._monitor(context, migration_id, driver, inst, data, policy, conf.poll_interval)

    def _monitor(
        self,
        ctx: Context,
        migration_id: str,
        driver: Driver,
        inst: Instance,
        data: MigrateData,
        policy: MonitorPolicy,
        poll_interval: float,
    ) -> dict[str, Any]:
        """Poll the transfer to its end: report each sample, ask :func:`~ferry.policy.decide`
        what to do and do it through the driver."""
        state = MonitorState()
        while True:
            p = driver.transfer_progress(inst, data)
            done = finished(p, state)
            result = None if done is None else self._result(p, done)
            requests = self._report(ctx, migration_id, p, result)
            if result is not None:
                return result
            sample = Sample(p, requests.abort, requests.force_complete)
            action, state = decide(sample, policy, state)
            while isinstance(action, StepDowntime):  # the same sample may also be past the timeout
                driver.set_max_downtime(inst, data, action.downtime_ms)
                LOG.info(
                    "migration %s: max downtime raised to %d ms", migration_id, action.downtime_ms
                )
                action, state = decide(sample, policy, state)
            match action:
                case Fail(cancelled=True):
                    raise errors.MigrationCancelled(migration_id, action.reason)
                case Fail():
                    raise errors.TransferFailed(data.source, action.reason)
                case AbortOnRequest():
                    if self._abort(driver, inst, data):
                        raise errors.MigrationCancelled(migration_id, "during the transfer")
                    # switched over meanwhile: too late to abort, finish instead
                case TimeoutAbort():
                    if self._abort(driver, inst, data):
                        raise errors.TransferTimeout(data.source, action.timeout)
                case SwitchToPostCopy() | ForceCompleteOnRequest():
                    state = self._force(migration_id, driver, inst, data, action, state)
                case TimeoutForceComplete():
                    state = self._force(migration_id, driver, inst, data, action, state)
                    self._pause(ctx, driver, inst, data, poll_interval)
                case Wait():
                    self._pause(ctx, driver, inst, data, poll_interval)

    @staticmethod
    def _force(
        migration_id: str,
        driver: Driver,
        inst: Instance,
        data: MigrateData,
        action: SwitchToPostCopy | ForceCompleteOnRequest | TimeoutForceComplete,
        state: MonitorState,
    ) -> MonitorState:
        """Force completion; a refusal on the timeout fails the transfer, otherwise the transfer
        goes on under its policy and the user sees why in the log."""
        try:
            lever = driver.force_complete(inst, data)
        except errors.DriverError as exc:
            if isinstance(action, TimeoutForceComplete):
                raise
            what = (
                "switch to post-copy"
                if isinstance(action, SwitchToPostCopy)
                else "force completion"
            )
            LOG.warning("migration %s: cannot %s: %s", migration_id, what, exc)
            return state.refusal()
        if isinstance(action, SwitchToPostCopy):
            LOG.warning(
                "migration %s: not converging (iteration %d, %.0f MiB left): switched to %s",
                migration_id,
                action.iteration,
                action.remaining_mb,
                lever,
            )
        elif isinstance(action, ForceCompleteOnRequest):
            LOG.warning("migration %s: forced to complete on request, by %s", migration_id, lever)
        else:
            LOG.warning(
                "migration %s: completion timeout, forced to complete by %s", migration_id, lever
            )
        return state.forced(lever)

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
    def _result(p: TransferProgress, done: Finish) -> dict[str, Any]:
        return {
            "downtime_ms": p.downtime_ms,
            "iterations": p.iteration,
            "elapsed_s": round(p.elapsed_s, 3),
            "lever": done.lever,
            "downtime_steps_applied": done.steps_applied,
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
