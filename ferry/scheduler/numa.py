"""The scheduler's NUMA filters: pinned-CPU fit (seed 004) on the cached host states.

The data and the fit itself are part of the model (:mod:`ferry.model.numa`).

Wiring (issue 7)
----------------
1. *Host state cache.* Drivers report each host's :class:`HostNumaState` as ``Host.numa``;
   :mod:`ferry.scheduler.state` caches it as one row per cell in ``ferry_host_numa_cells``
   (pinned pCPUs, used memory, and the pCPUs / memory migrations in flight claimed), so
   scheduling never calls every hypervisor.
2. *Filtering.* :class:`ferry.scheduler.scheduler.HostScheduler` filters NUMA fit in SQL (a cell
   with enough free pCPUs and memory) and checks its choice with :func:`numa_fit_filter` on the
   candidate's cached state (claimed pCPUs merged in); unpinned guests always pass. When no host
   is left, every host's reason comes from the same Python filters.
3. *Claim.* :func:`ferry.scheduler.claims.take` computes the pinning on the locked host state
   (:meth:`HostNumaState.fit`) and stores its exact pCPUs (``ferry_pcpu_claims``, primary key
   host + pCPU) and cell in the same transaction, so two concurrent migrations cannot take the
   same pCPUs.
4. *Driver.* The check-destination task puts the claimed :class:`Pinning` into
   ``MigrateData.pinning`` (the claimed pinning wins over the driver's own);
   the libvirt driver rewrites ``<cputune>/<vcpupin>`` and ``<numatune>`` in the destination
   XML, the simulated driver records it.
5. *Release order.* The source's pinned pCPUs stay accounted until post-migration at the source
   releases them; then the instance record is updated; then the destination's claim turns into
   usage (:mod:`ferry.tasks.finish`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ferry.model import Host, Instance
from ferry.model.numa import GuestRequest, HostNumaState, Pinning
from ferry.scheduler.filters import Filter, HostCandidate

NO_TOPOLOGY = "no NUMA topology known for this host (refresh its state)"

NumaLookup = Callable[[str], HostNumaState | None]


def numa_filter(states: Mapping[str, HostNumaState] | NumaLookup) -> Filter:
    """A scheduler filter over cached NUMA states (a mapping host name -> state, or a lookup).

    Unpinned guests always pass; a pinned guest passes when one cell of the host has enough
    free pCPUs and memory; a host without a known topology rejects pinned guests.
    """
    lookup: NumaLookup = states.get if isinstance(states, Mapping) else states

    def numa_fit(c: HostCandidate, inst: Instance, _src: Host) -> str | None:
        request = _request(inst)
        if not request.pinned:
            return None
        state = lookup(c.host.name)
        if state is None:
            return NO_TOPOLOGY
        return state.check(request)

    return numa_fit


def numa_fit_filter(c: HostCandidate, inst: Instance, _src: Host) -> str | None:
    """The NUMA fit filter on the candidate's cached state (``c.numa``, claimed pCPUs merged in)
    or, without one, the host's own report (``c.host.numa``). Same signature as the filters in
    ``filters.py``."""
    request = _request(inst)
    if not request.pinned:
        return None
    state = c.numa if c.numa is not None else c.host.numa
    if state is None:
        return NO_TOPOLOGY
    return state.check(request)


def pin_instance(state: HostNumaState, instance: Instance) -> Pinning | str | None:
    """The pinning for ``instance`` on a host in ``state``: None for an unpinned guest."""
    request = _request(instance)
    if not request.pinned:
        return None
    return state.fit(request)


def _request(inst: Instance) -> GuestRequest:
    return GuestRequest.from_instance(inst)
