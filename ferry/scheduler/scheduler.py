"""Choosing a destination from the host state cache.

:meth:`HostScheduler.select` runs the filters of :mod:`ferry.scheduler.filters` plus, per request,
host-group affinity (``--to-group``), anti-affinity (``--not-with``) and the NUMA fit of a pinned
guest, on the cached host states (:mod:`ferry.scheduler.state`); no hypervisor is called.

At 10,000+ hosts one Python pass over every cached host is too slow, so the filters run twice,
both over the same cached data:

1. *in SQL* (the fast path): one query keeps the hosts that are up, enabled, not the source, not
   excluded, of the source's hypervisor type at a version not older, with room after the claims,
   in the group, away from the named instances and, for a pinned guest, with one NUMA cell with
   enough free pCPUs and memory; it returns only the best-weighed survivors (free RAM order,
   with the minimum and maximum over all survivors for the weighers' normalisation) and those
   with migrations in flight;
2. *in Python* (the specification): the best-weighed survivors are checked with the Python
   filters on their full cached state before one is returned; when no host survives, every
   cached host goes through the Python filters so that :class:`~ferry.errors.NoValidHost` carries
   each host's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferry.config import SchedulerSettings
from ferry.errors import ComputeHostUnavailable, NoValidHost
from ferry.model import Host, Instance
from ferry.model.numa import GuestRequest
from ferry.persistence.db import Database
from ferry.scheduler.filters import FILTERS, Filter, Weighers, in_group, not_with, reasons_of
from ferry.scheduler.numa import numa_fit_filter
from ferry.scheduler.state import CELLS, CL, HM, HS, HostState, load_states

LOG = logging.getLogger(__name__)

#: how many of the best-weighed survivors are checked per round with the Python filters
VERIFY_BATCH = 8
#: how many hosts without migrations in flight are fetched, best first (see ``_best``)
TOP_IDLE = 32


class HostScheduler:
    """Destination selection over the host state cache in ``db`` (see the module doc)."""

    def __init__(self, db: Database, settings: SchedulerSettings | None = None) -> None:
        self.db = db
        self.settings = settings or SchedulerSettings()
        self.weighers = Weighers(
            self.settings.weigher,
            self.settings.ram_weight_multiplier,
            self.settings.in_flight_weight_multiplier,
        )

    # ------------------------------------------------------------------------------ groups
    def group_members(self, name: str) -> frozenset[str]:
        """The hosts the config lists in group ``name`` (``[scheduler.groups]``)."""
        return frozenset(self.settings.groups.get(name, ()))

    def group_known(self, name: str) -> bool:
        """Whether group ``name`` is in the config or on any cached host's labels."""
        if name in self.settings.groups:
            return True
        with self.db.connect() as conn:
            hit = conn.execute(sa.select(HS.c.name).where(_group_match(name)).limit(1)).first()
        return hit is not None

    def filters(
        self, to_group: str | None = None, avoid: Mapping[str, str] | None = None
    ) -> tuple[Filter, ...]:
        """The Python filter chain of a request (the specification the SQL follows)."""
        chain: list[Filter] = list(FILTERS)
        if to_group:
            chain.append(in_group(to_group, self.group_members(to_group)))
        if avoid:
            chain.append(not_with(dict(avoid)))
        chain.append(numa_fit_filter)
        return tuple(chain)

    # ------------------------------------------------------------------------------ select
    def select(
        self,
        instance: Instance,
        source: str,
        excluded: Mapping[str, str] | None = None,
        *,
        to_group: str | None = None,
        avoid: Mapping[str, str] | None = None,
    ) -> str:
        """The best destination for ``instance`` leaving ``source``.

        ``excluded``: hosts already tried, with their reasons; ``to_group``: only hosts of that
        group; ``avoid``: host -> reason for the hosts anti-affinity rules out.

        :raises ComputeHostUnavailable: the source is not in the cache.
        :raises NoValidHost: with every cached host's reason.
        """
        excluded = dict(excluded or {})
        avoid = dict(avoid or {})
        filters = self.filters(to_group, avoid)
        with self.db.connect() as conn:
            found = load_states(conn, [source])
            if not found:
                raise ComputeHostUnavailable(source, "not in the host state cache")
            src = found[0].host
            query = self.candidates_query(instance, src, excluded, to_group, avoid)
            flight = in_flight(conn)
            ranked, complete = self._best(conn, query, flight)
            tried: set[str] = set()
            for attempt in range(2):
                if attempt:  # the best part did not do: rank every candidate
                    rows = conn.execute(query).all()
                    ranked = self.weighers.rank(
                        [(r[0], float(r[1]), flight.get(r[0], 0)) for r in rows]
                    )
                for start in range(0, len(ranked), VERIFY_BATCH):
                    batch = [n for n in ranked[start : start + VERIFY_BATCH] if n not in tried]
                    tried.update(batch)
                    states = {s.host.name: s for s in load_states(conn, batch)}
                    for name in batch:
                        state = states.get(name)
                        if state is not None and _passes(state, instance, src, filters):
                            return name
                if complete:
                    break
            everything = load_states(conn)
        passing, reasons = reasons_of(
            (s.candidate() for s in everything), instance, src, excluded, filters
        )
        if passing:  # the SQL and the Python filters disagree: trust the Python ones
            LOG.warning("scheduler: the SQL pre-filter missed %d host(s)", len(passing))
            return self.weighers.rank(
                [(c.host.name, c.free_memory_mb, c.in_flight) for c in passing]
            )[0]
        raise NoValidHost(reasons)

    def _best(
        self, conn: Connection, query: sa.Select[Any], flight: Mapping[str, int]
    ) -> tuple[list[str], bool]:
        """The best-weighed candidates of ``query`` (best first) without fetching them all, and
        whether that is every candidate.

        Hosts without migrations in flight all score the same on that weigher, so among them the
        free-RAM order decides: SQL returns the first :data:`TOP_IDLE` of them in that order,
        with the minimum and maximum free RAM of every candidate (window functions) for the
        normalisation; the few hosts with migrations in flight are fetched as well. The global
        best is among these."""
        sub = query.subquery()
        free = sub.c.free_mb
        busy = sorted(h for h, n in flight.items() if n > 0)
        if self.weighers.ram_multiplier > 0:
            spread = self.weighers.strategy == "spread"
            order = [free.desc() if spread else free.asc(), sub.c.name]
        else:
            order = [sub.c.name]
        top = (
            sa.select(
                sub.c.name,
                free,
                sa.func.min(free).over(),
                sa.func.max(free).over(),
                sa.func.count().over(),
            )
            .order_by(*order)
            .limit(TOP_IDLE + len(busy))
        )
        rows = conn.execute(top).all()
        if not rows:
            return [], True
        low, high, total = float(rows[0][2]), float(rows[0][3]), int(rows[0][4])
        items = {r[0]: float(r[1]) for r in rows}
        if busy:
            items.update(
                (r[0], float(r[1]))
                for r in conn.execute(sa.select(sub.c.name, free).where(sub.c.name.in_(busy)))
            )
        counts = [flight.get(h, 0) for h in items if flight.get(h, 0) > 0]
        most = max(counts, default=0)
        least = 0 if total > len(counts) else min(counts, default=0)
        ranked = self.weighers.rank(
            [(h, f, flight.get(h, 0)) for h, f in items.items()],
            ram_bounds=(low, high),
            in_flight_bounds=(least, most),
        )
        return ranked, total <= len(items)

    def candidates_query(
        self,
        instance: Instance,
        source: Host,
        excluded: Iterable[str] = (),
        to_group: str | None = None,
        avoid: Iterable[str] = (),
    ) -> sa.Select[Any]:
        """``(name, free RAM MiB after claims)`` of the hosts passing every filter, computed in
        SQL on the cached states (one scan of ``ferry_host_states``, no join: the migrations in
        flight come from :func:`in_flight`)."""
        free_mb = HS.c.memory_mb - HS.c.memory_mb_used - HS.c.claimed_memory_mb
        q = sa.select(HS.c.name, free_mb.label("free_mb")).where(
            HS.c.name != source.name,
            HS.c.up.is_(True),
            HS.c.enabled.is_(True),
            HS.c.name.not_in(sa.select(HM.c.host)),
            HS.c.hypervisor_type == source.hypervisor_type,
            HS.c.hypervisor_version >= source.hypervisor_version,
            free_mb >= instance.memory_mb,
            HS.c.vcpus - HS.c.vcpus_used - HS.c.claimed_vcpus >= instance.vcpus,
            HS.c.disk_gb - HS.c.disk_gb_used - HS.c.claimed_disk_gb >= instance.disk_gb,
        )
        skip = sorted(set(excluded) | set(avoid))
        if skip:
            q = q.where(HS.c.name.not_in(skip))
        if to_group:
            members = sorted(self.group_members(to_group))
            match = _group_match(to_group)
            q = q.where(sa.or_(match, HS.c.name.in_(members)) if members else match)
        request = GuestRequest.from_instance(instance)
        if request.pinned:
            fits = sa.select(CELLS.c.host).where(
                CELLS.c.n_cpus - CELLS.c.n_pinned - CELLS.c.claimed_pcpus >= request.vcpus,
                CELLS.c.memory_mb - CELLS.c.used_mb - CELLS.c.claimed_mb >= request.memory_mb,
            )
            q = q.where(HS.c.name.in_(fits))
        return q

    def states(self, names: Sequence[str] | None = None) -> list[HostState]:
        """The cached host states (all, or ``names``)."""
        with self.db.connect() as conn:
            return load_states(conn, names)


def in_flight(conn: Connection) -> dict[str, int]:
    """Host -> migrations in flight into or out of it (claims and source holds; a small table:
    migrations in flight only)."""
    rows = conn.execute(sa.select(CL.c.host, sa.func.count()).group_by(CL.c.host))
    return {h: int(n) for h, n in rows}


def _group_match(name: str) -> sa.ColumnElement[bool]:
    return HS.c.groups.contains(f",{name},", autoescape=True)


def _passes(state: HostState, instance: Instance, source: Host, filters: Sequence[Filter]) -> bool:
    c = state.candidate()
    return all(f(c, instance, source) is None for f in filters)


def anti_affinity(named: Iterable[Instance], claims: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Host -> reason for the hosts ``--not-with`` rules out: where each named instance runs and
    where a migration of it holds a destination claim."""
    out: dict[str, str] = {}
    by_uuid = {i.uuid: i for i in named}
    for inst in by_uuid.values():
        out.setdefault(inst.host, f"anti-affinity: {inst.name} runs here")
    for claim in claims:
        moving = by_uuid.get(str(claim["instance_uuid"]))
        if moving is not None and claim.get("kind", "destination") == "destination":
            out.setdefault(
                str(claim["host"]), f"anti-affinity: {moving.name} is being migrated here"
            )
    return out
