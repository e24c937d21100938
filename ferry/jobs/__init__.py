"""The job store: migrations posted to a TaskFlow job board (Redis or ZooKeeper) and run by
conductors that take over each other's runs (``ferry submit``, ``ferry conductor``, ``ferry
jobs``).

* :mod:`ferry.jobs.url` -- TaskFlow's board configuration for a board URL (:mod:`ferry.board_url`);
* :mod:`ferry.jobs.board` -- TaskFlow's boards with expiring claims, a claim filter, FIFO order;
* :mod:`ferry.jobs.store` -- posting jobs and listing the board (:class:`JobStore`);
* :mod:`ferry.jobs.conductor` -- the conductor (:class:`Conductor`);
* :mod:`ferry.jobs.ownership` -- claim + lease, heartbeat, claim listener, fenced writes;
* :mod:`ferry.jobs.limits` -- the concurrency limits' slots;
* :mod:`ferry.jobs.tables` -- their tables.

Attributes are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Conductor": "ferry.jobs.conductor",
    "JobStore": "ferry.jobs.store",
    "SlotRepository": "ferry.jobs.limits",
    "open_board": "ferry.jobs.board",
    "parse_board_url": "ferry.board_url",
    "safe_board_url": "ferry.board_url",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ferry.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
