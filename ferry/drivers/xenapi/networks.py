"""Networks of a migration: the destination's management network (for ``host.migrate_receive``)
and the interim networks a VM's VIFs get on another pool (Nova's ``create_interim_networks``).

A VIF whose network has a namesake on the destination pool is mapped to it; otherwise ferry
creates ``ferry-interim-<instance uuid>-vif<device>`` there, tagged with the instance and
``assume_network_is_shared = true`` (XAPI then lets a VM on any host use it). The rollback and,
after a later migration away, the post step at the source destroy it.
"""

from __future__ import annotations

import logging

from .lookup import Lookup
from .records import TAG_INSTANCE, TAG_VIF_DEVICE, Refused, Vif, quote, tags_of
from .session import PoolSession

LOG = logging.getLogger("ferry.drivers.xenapi")
INTERIM_PREFIX = "ferry-interim"


def interim_network_name(instance_uuid: str, device: str) -> str:
    """The name_label of the interim network of VIF ``device`` of an instance."""
    return f"{INTERIM_PREFIX}-{instance_uuid}-vif{device}"


def migration_network(pool: PoolSession, host_ref: str) -> tuple[str, str]:
    """(ref, uuid) of the host's management network (``PIF.get_all_records_where``); its PIF
    must have an IP address."""
    where = f'field "management"="true" and field "host"="{quote(host_ref)}"'
    pifs = pool.call("PIF.get_all_records_where", where)
    if len(pifs) != 1:
        raise Refused(f"the host has {len(pifs)} management interfaces (expected 1)")
    pif = next(iter(pifs.values()))
    if not pif.get("IP") and not any(pif.get("IPv6") or []):
        raise Refused("the host's management interface has no IP address")
    network = str(pif["network"])
    return network, str(pool.call("network.get_uuid", network))


def destination_network(lookup: Lookup, pool: PoolSession, instance_uuid: str, vif: Vif) -> str:
    """The name of the network ``vif`` gets on ``pool``: its network's namesake there, else the
    instance's interim network (created when missing). Safe to call again."""
    if vif.network_name and lookup.networks_named(pool, vif.network_name):
        return vif.network_name
    name = interim_network_name(instance_uuid, vif.device)
    if not lookup.networks_named(pool, name):
        pool.call(
            "network.create",
            {
                "name_label": name,
                "name_description": (
                    f"ferry: interim network of VIF {vif.device} of instance {instance_uuid}"
                ),
                "MTU": vif.mtu,
                "other_config": {
                    "assume_network_is_shared": "true",
                    TAG_INSTANCE: instance_uuid,
                    TAG_VIF_DEVICE: vif.device,
                },
                "tags": [],
            },
        )
        LOG.info("xenapi pool %s: interim network %s created", pool.url, name)
    return name


def destroy_interim_network(
    lookup: Lookup, pool: PoolSession, instance_uuid: str, device: str
) -> None:
    """Destroy the instance's interim network of VIF ``device`` in ``pool`` (none: nothing).

    :raises Refused: a VIF is still attached to it.
    """
    name = interim_network_name(instance_uuid, device)
    for ref, rec in lookup.networks_named(pool, name).items():
        if tags_of(rec).get(TAG_INSTANCE) != instance_uuid:
            continue
        if rec.get("VIFs"):
            raise Refused(f"interim network {name} still has VIFs attached")
        pool.call("network.destroy", ref)
        LOG.info("xenapi pool %s: interim network %s destroyed", pool.url, name)
