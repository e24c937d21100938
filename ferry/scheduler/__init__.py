"""Destination selection: filters, a weigher and an exclusion list (Nova's filter scheduler,
reduced to what live migration needs)."""

from ferry.scheduler.filters import FILTERS, HostCandidate, select_destination

__all__ = ["FILTERS", "HostCandidate", "select_destination"]
