"""Destination selection (Nova's filter scheduler, reduced to what live migration needs): the
host state cache (:mod:`.state`), filters and weighers (:mod:`.filters`), NUMA fit of pinned
guests (:mod:`.numa`), atomic claims of resources and pCPUs (:mod:`.claims`) and the scheduler
that puts them together over the database (:mod:`.scheduler`)."""

from ferry.scheduler.filters import FILTERS, HostCandidate, Weighers, select_destination

__all__ = ["FILTERS", "HostCandidate", "Weighers", "select_destination"]
