"""The arguments of ``VM.migrate_send`` / ``VM.assert_can_migrate`` for a block migration: the
migrate-send data of the destination (``host.migrate_receive``, kept in memory only), the SR the
disks go to, and the VDI and VIF maps."""

from __future__ import annotations

from ferry.model import MigrateData

from . import networks
from .lookup import Lookup
from .receive import ReceiveStore
from .records import Refused, Vm
from .session import PoolSession
from .tasks import token_of


def receive_data(
    lookup: Lookup, receive: ReceiveStore, data: MigrateData, *, fresh: bool = False
) -> dict[str, str]:
    """This migration's migrate-send data: kept in memory, else (after a restart, or
    ``fresh`` for the transfer) from ``host.migrate_receive`` again."""
    token = token_of(data)
    kept = receive.get(token)
    if kept is not None and not fresh:
        return kept
    dpool = lookup.pool_of(data.destination)
    host_ref = lookup.host_ref(dpool, lookup.hosts[data.destination])
    network_uuid = data.driver_data.get("migration_network")
    if network_uuid:
        network = lookup.network_by_uuid(dpool, str(network_uuid))
    else:
        network, _ = networks.migration_network(dpool, host_ref)
    return receive.receive(token, dpool, host_ref, network)


def default_sr_uuid(lookup: Lookup, pool: PoolSession) -> str:
    """The uuid of the pool's default SR (where block-migrated disks go)."""
    sr_uuid = lookup.default_sr(pool).get("uuid")
    if not sr_uuid:
        raise Refused(f"the pool at {pool.url} has no default SR for the disks")
    return str(sr_uuid)


def destination_sr(lookup: Lookup, pool: PoolSession, data: MigrateData) -> str:
    """The ref of the SR the destination check chose for the disks."""
    sr = lookup.sr_by_uuid(pool, str(data.driver_data.get("destination_sr")))
    if sr is None:
        raise Refused("the destination SR no longer exists")
    return sr


def transfer_maps(
    lookup: Lookup, vm: Vm, dpool: PoolSession, data: MigrateData
) -> tuple[dict[str, str], dict[str, str]]:
    """(vdi_map, vif_map) for ``VM.migrate_send``: every non-CD VDI -> the destination SR
    (a volume -> its SR, connected by pre_live_migration); across pools every VIF -> the
    network pre_live_migration chose."""
    dest_sr = destination_sr(lookup, dpool, data)
    vdi_map: dict[str, str] = {}
    for d in lookup.disks(vm):
        target = lookup.sr_by_uuid(dpool, d.sr_uuid) if d.volume else dest_sr
        if target is None:
            raise Refused(f"volume SR {d.sr_uuid} is not connected on the destination")
        vdi_map[d.vdi] = target
    vif_map: dict[str, str] = {}
    if vm.pool is not dpool:
        chosen = dict(data.driver_data.get("interim_networks") or {})
        for vif in lookup.vifs(vm):
            name = chosen.get(vif.device)
            if name is None:
                raise Refused(f"no destination network was prepared for VIF {vif.device}")
            found = lookup.networks_named(dpool, str(name))
            if not found:
                raise Refused(f"the destination network {name!r} no longer exists")
            vif_map[vif.ref] = sorted(found)[0]
    return vdi_map, vif_map
