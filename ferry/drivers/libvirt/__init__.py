"""The libvirt driver (``ferry[libvirt]``): live migration of QEMU/KVM guests between libvirt
hosts. libvirt-python is imported when a connection is first needed, never by ``import ferry``."""

from ferry.drivers.libvirt.connection import HostSpec
from ferry.drivers.libvirt.driver import LibvirtDriver

__all__ = ["HostSpec", "LibvirtDriver"]
