"""The one way a migration runs (see :mod:`ferry.runner.runner`).

Import from the modules: :mod:`ferry.runner.lease` (the lease, its heartbeat and the lost-owner
signals; light, for readers such as the graph view), :mod:`ferry.runner.engine` (logbooks and
engines) and :mod:`ferry.runner.runner` (:class:`~ferry.runner.runner.Runner`).
"""
