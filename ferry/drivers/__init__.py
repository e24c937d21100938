"""Hypervisor drivers behind one contract (:mod:`ferry.drivers.base`).

Nothing heavy is imported here: each driver lives in its own subpackage, is found through its
``ferry.drivers`` entry point (:mod:`ferry.plugins`, :mod:`ferry.drivers.registry`) and is
imported only when configured (the libvirt and XenAPI drivers need optional extras).
"""
