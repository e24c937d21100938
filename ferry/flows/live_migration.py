"""The live-migration flow (see ARCHITECTURE.md and the README's flow picture)."""

from __future__ import annotations

from taskflow.patterns import linear_flow

from ferry.flows import constants as c
from ferry.tasks.checks import CheckDestination, CheckHypervisor, CheckSource
from ferry.tasks.finish import Complete, PostAtDestination, PostAtSource, RollForward
from ferry.tasks.lifecycle import Sentinel
from ferry.tasks.prepare import PreLiveMigration
from ferry.tasks.scheduling import ClaimDestination, Reschedule, Schedule
from ferry.tasks.transfer import Transfer
from ferry.tasks.validate import Validate


def get_live_migration_flow() -> linear_flow.Flow:
    """Build the flow that live-migrates one instance.

    Steps, in order:

    1. ``sentinel`` -- record ``preparing``; its revert records ``failed``/``cancelled``.
    2. ``validate`` -- instance running or paused, source up, not migrating to itself.
    3. ``select-destination`` (retry ``reschedule``): ``schedule``, ``claim-destination``,
       ``check-hypervisor``, ``check-destination``, ``check-source``; a failing host is excluded
       and the next one tried.
    4. ``pre-live-migration`` -- prepare the destination.
    5. ``transfer`` -- start and monitor the transfer; its success is the switchover.
    6. ``finish`` (retry ``roll-forward``): ``post-at-source``, ``post-at-destination``,
       ``complete``; never reverts past the switchover.

    Inputs in the store: ``migration_id``, ``request`` (a MigrationRequest dict), ``settings``
    (MigrationSettings dict) and, injected transiently by the runner, ``context``.
    """
    select = linear_flow.Flow(
        c.SELECT_DESTINATION, retry=Reschedule(name=c.RESCHEDULE, provides=c.EXCLUDED)
    )
    select.add(
        Schedule(c.SCHEDULE, provides=c.DESTINATION),
        ClaimDestination(c.CLAIM),
        CheckHypervisor(c.CHECK_HYPERVISOR),
        CheckDestination(c.CHECK_DESTINATION, provides=c.DEST_CHECK),
        CheckSource(c.CHECK_SOURCE, provides=c.MIGRATE_DATA),
    )
    roll_forward = RollForward(
        name=c.ROLL_FORWARD, provides=c.ATTEMPT, steps=c.POST_SWITCHOVER_ATOMS
    )
    finish = linear_flow.Flow(c.FINISH, retry=roll_forward)
    finish.add(
        PostAtSource(c.POST_AT_SOURCE),
        PostAtDestination(c.POST_AT_DESTINATION),
        Complete(c.COMPLETE),
    )
    flow = linear_flow.Flow(c.FLOW_NAME)
    flow.add(
        Sentinel(c.SENTINEL),
        Validate(c.VALIDATE, provides=(c.INSTANCE, c.SOURCE)),
        select,
        PreLiveMigration(c.PRE_LIVE_MIGRATION, provides=c.PREPARED),
        Transfer(c.TRANSFER, provides=c.TRANSFER_RESULT),
        finish,
    )
    return flow
