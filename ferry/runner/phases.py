"""A run's phases (state, seconds, error) as its logbook holds them: the one rule that turns atom
details into :class:`~ferry.model.PhaseState`, and a light reader of ferry's own logbook tables.

:func:`phase_states` is used by :meth:`ferry.runner.engine.Logbooks.phases` (any TaskFlow
backend, atom details through TaskFlow's API) and by :func:`read_phases` (ferry's database: one
query on TaskFlow's ``atomdetails`` table, without loading TaskFlow's SQL backend, its engines or
Alembic), which the read commands use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from taskflow import states

from ferry.flows import constants as c
from ferry.model import PhaseState
from ferry.persistence.db import Database

_ATOMS = sa.text("SELECT name, state, meta, failure FROM atomdetails WHERE parent_uuid = :flow")


class AtomFacts(NamedTuple):
    """What a phase needs of one atom detail."""

    state: str | None
    timestamps: Mapping[str, float]
    error: str | None


def atom_facts(ad: Any) -> AtomFacts:
    """The facts of a TaskFlow atom detail."""
    return AtomFacts(
        ad.state,
        (ad.meta or {}).get("timestamps", {}),
        ad.failure.exception_str if ad.failure is not None else None,
    )


def phase_states(atoms: Mapping[str, AtomFacts]) -> list[PhaseState]:
    """Every stored atom of the flow as a phase, in flow order."""
    phases = []
    for name in c.ALL_ATOMS:
        atom = atoms.get(name)
        if atom is None:
            continue
        start = atom.timestamps.get(states.RUNNING)
        end = atom.timestamps.get(states.SUCCESS) or atom.timestamps.get(states.FAILURE)
        seconds = round(end - start, 3) if start and end and end >= start else None
        phases.append(
            PhaseState(
                name=name, state=atom.state or states.PENDING, seconds=seconds, error=atom.error
            )
        )
    return phases


def read_phases(db: Database, migration_id: str) -> list[PhaseState]:
    """The phases of ``migration_id`` from TaskFlow's tables in ``db`` ([] without a logbook)."""
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(_ATOMS, {"flow": migration_id}).all()
    except sa.exc.DBAPIError:  # as Logbooks.phases: a logbook that cannot be read has no phases
        return []
    atoms = {}
    for name, state, meta, failure in rows:
        failure = _json(failure)
        atoms[name] = AtomFacts(
            state,
            (_json(meta) or {}).get("timestamps", {}),
            failure.get("exception_str") if failure else None,
        )
    return phase_states(atoms)


def _json(value: Any) -> Any:
    """A JSON column's value: text on SQLite (TaskFlow's JSONType), decoded by the driver on
    PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value
