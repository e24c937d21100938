"""Hypervisor drivers behind one contract (:mod:`ferry.drivers.base`).

Nothing heavy is imported here: each driver lives in its own subpackage and is imported only
when configured (the libvirt and XenAPI drivers need optional extras).
"""
