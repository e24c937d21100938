"""Scenarios: plain dicts describing pools, hosts, storage, networks and VMs; ``build`` loads one
into a :class:`~tests.xapisim.model.Model`.

Shape (every key of a VM/SR/host optional unless marked)::

    {"username": str, "password": str, "migrate_speed_mib_s": float, "storage_speed_mib_s": float,
     "pools": {pool_name: {
        "master": host_name,                     # required
        "default_sr": sr_name | None,
        "hosts": {host_name: {"address": ip, "memory_gib": int, "cpus": int (default 32)}},
        "srs": {sr_name: {"type": "nfs", "shared": bool, "host": host_name (local SRs),
                          "content_type": str, "size_gib": int, "isos": [iso_name, ...],
                          "volume": bool (a LUN: SR.scan of this SR uuid anywhere finds its
                                          VDIs), "device_config": {...} (its PBDs')}},
        "networks": {net_name: {"bridge": str, "management": bool}},
        "vms": {vm_name: {"host": host_name | None, "power_state": "Running",
                          "memory_mib": int, "vcpus": int,
                          "disks": [{"sr": sr_name, "size_gib": int}],   # volume SR: its LUN
                          "cd": iso_name | None, "networks": [net_name]}}}}}
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from tests.xapisim.model import MIB, NULL, Model

GIB = 1024 * MIB
CONTROL_DOMAIN_MIB = 4096
HOST_OVERHEAD_MIB = 512

DEFAULT_SCENARIO: dict[str, Any] = {
    "username": "root",
    "password": "sim-Secret-pw-7f3a",
    "migrate_speed_mib_s": 1024,
    "storage_speed_mib_s": 512,
    "pools": {
        "pool-a": {
            "master": "xs-a1",
            "default_sr": "nfs-a",
            "hosts": {
                "xs-a1": {"address": "10.0.1.11", "memory_gib": 64},
                "xs-a2": {"address": "10.0.1.12", "memory_gib": 64},
            },
            "srs": {
                "nfs-a": {"type": "nfs", "shared": True, "size_gib": 2048},
                "local-a1": {"type": "ext", "host": "xs-a1", "size_gib": 512},
                "local-a2": {"type": "ext", "host": "xs-a2", "size_gib": 512},
                "vol-1-data": {
                    "type": "lvmoiscsi",
                    "content_type": "",
                    "shared": True,
                    "size_gib": 2,
                    "volume": True,
                    "device_config": {
                        "target": "10.0.9.1",
                        "targetIQN": "iqn.2026-01.sim.storage:vol-1-data",
                        "SCSIid": "36001405f0e5c3a1b2c4d5e6f7a8b9c01",
                    },
                },
                "iso-a": {
                    "type": "iso",
                    "content_type": "iso",
                    "shared": True,
                    "size_gib": 64,
                    "isos": ["guest-tools.iso"],
                },
            },
            "networks": {"mgmt-a": {"bridge": "xenbr0", "management": True}},
            "vms": {
                "web-1": {
                    "host": "xs-a1",
                    "memory_mib": 2048,
                    "vcpus": 2,
                    "disks": [{"sr": "nfs-a", "size_gib": 8}],
                    "networks": ["mgmt-a"],
                },
                "db-1": {
                    "host": "xs-a1",
                    "memory_mib": 4096,
                    "vcpus": 4,
                    "disks": [{"sr": "local-a1", "size_gib": 20}],
                    "cd": "guest-tools.iso",
                    "networks": ["mgmt-a"],
                },
                "api-1": {
                    "host": "xs-a2",
                    "memory_mib": 1024,
                    "disks": [{"sr": "nfs-a", "size_gib": 4}],
                    "networks": ["mgmt-a"],
                },
                "vol-1": {
                    "host": "xs-a2",
                    "memory_mib": 1024,
                    "disks": [{"sr": "nfs-a", "size_gib": 4}, {"sr": "vol-1-data", "size_gib": 2}],
                    "networks": ["mgmt-a"],
                },
                "old-1": {
                    "host": None,
                    "power_state": "Halted",
                    "memory_mib": 1024,
                    "disks": [{"sr": "nfs-a", "size_gib": 4}],
                },
            },
        },
        "pool-b": {
            "master": "xs-b1",
            "default_sr": "local-b1",
            "hosts": {"xs-b1": {"address": "10.0.2.11", "memory_gib": 64}},
            "srs": {"local-b1": {"type": "ext", "host": "xs-b1", "size_gib": 1024}},
            "networks": {"mgmt-b": {"bridge": "xenbr0", "management": True}},
            "vms": {
                "batch-1": {
                    "host": "xs-b1",
                    "memory_mib": 2048,
                    "disks": [{"sr": "local-b1", "size_gib": 10}],
                    "networks": ["mgmt-b"],
                },
            },
        },
    },
}

SOFTWARE_VERSION = {
    "product_brand": "XCP-ng",
    "product_version": "8.3.0",
    "platform_name": "XCP",
    "xapi": "26.21",
    "xen": "4.17.5",
}

RUNNING_OPS = ["pool_migrate", "migrate_send", "clean_shutdown", "hard_shutdown", "suspend"]
HALTED_OPS = ["start", "migrate_send", "destroy", "export"]

_macs = itertools.count(1)


def new_mac() -> str:
    n = next(_macs)
    return f"aa:16:3e:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


def build(model: Model, scenario: dict[str, Any] | None) -> None:
    sc = copy.deepcopy(scenario if scenario is not None else DEFAULT_SCENARIO)
    model.username = sc.get("username", DEFAULT_SCENARIO["username"])
    model.password = sc.get("password", DEFAULT_SCENARIO["password"])
    model.migrate_speed_mib_s = float(sc.get("migrate_speed_mib_s", 1024))
    model.storage_speed_mib_s = float(sc.get("storage_speed_mib_s", 512))
    for pool_name, spec in sc["pools"].items():
        _build_pool(model, pool_name, spec)


def _build_pool(model: Model, pool: str, spec: dict[str, Any]) -> None:
    model.add_pool(pool)
    hosts: dict[str, str] = {}
    for name, h in spec.get("hosts", {}).items():
        memory = int(h.get("memory_gib", 64)) * GIB
        ref = model.add(
            pool,
            "host",
            name_label=name,
            name_description=f"simulated XAPI host {name}",
            hostname=name,
            address=h.get("address", "127.0.0.1"),
            enabled=True,
            API_version_major=2,
            API_version_minor=21,
            software_version=dict(SOFTWARE_VERSION),
            memory_overhead=HOST_OVERHEAD_MIB * MIB,
            cpu_info={"cpu_count": str(int(h.get("cpus", 32))), "socket_count": "2"},
            _memory_total=memory,
        )
        metrics = model.add(pool, "host_metrics", memory_total=memory, live=True, _host=ref)
        model.update(pool, "host", ref, metrics=metrics)
        model.add(
            pool,
            "VM",
            name_label=f"Control domain on host: {name}",
            power_state="Running",
            resident_on=ref,
            affinity=ref,
            is_control_domain=True,
            domid=0,
            allowed_operations=[],
            **_memory(CONTROL_DOMAIN_MIB),
        )
        hosts[name] = ref

    srs: dict[str, str] = {}
    volume_srs: set[str] = set()
    isos: dict[str, str] = {}
    for name, s in spec.get("srs", {}).items():
        size = int(s.get("size_gib", 100)) * GIB
        ref = model.add(
            pool,
            "SR",
            name_label=name,
            type=s.get("type", "ext"),
            content_type=s.get("content_type", "user"),
            shared=bool(s.get("shared", False)),
            physical_size=size,
        )
        srs[name] = ref
        if s.get("volume"):
            volume_srs.add(ref)
        on = list(hosts.values()) if s.get("shared") else [hosts[s["host"]]]
        for host in on:
            model.add(
                pool,
                "PBD",
                host=host,
                SR=ref,
                device_config=dict(s.get("device_config", {"location": f"/run/sr-mount/{name}"})),
                currently_attached=True,
            )
        for iso in s.get("isos", []):
            isos[iso] = model.add(
                pool,
                "VDI",
                name_label=iso,
                SR=ref,
                virtual_size=512 * MIB,
                physical_utilisation=512 * MIB,
                type="user",
                read_only=True,
                managed=True,
                location=iso,
                on_boot="persist",
            )

    networks: dict[str, str] = {}
    for name, n in spec.get("networks", {}).items():
        ref = model.add(
            pool, "network", name_label=name, bridge=n.get("bridge", name), MTU=1500, managed=True
        )
        networks[name] = ref
        management = bool(n.get("management", False))
        for host_name, host in hosts.items():
            model.add(
                pool,
                "PIF",
                device="eth0" if management else "eth1",
                network=ref,
                host=host,
                MAC=new_mac(),
                MTU=1500,
                VLAN=-1,
                physical=True,
                currently_attached=True,
                management=management,
                ip_configuration_mode="Static" if management else "None",
                IP=spec["hosts"][host_name].get("address", "") if management else "",
                netmask="255.255.255.0" if management else "",
            )

    model.add(
        pool,
        "pool",
        name_label=pool,
        master=hosts[spec["master"]],
        default_SR=srs[spec["default_sr"]] if spec.get("default_sr") else NULL,
    )

    domids = itertools.count(1)
    for name, v in spec.get("vms", {}).items():
        host = hosts[v["host"]] if v.get("host") else NULL
        power = v.get("power_state", "Running" if host != NULL else "Halted")
        vm = model.add(
            pool,
            "VM",
            name_label=name,
            power_state=power,
            resident_on=host if power in ("Running", "Paused") else NULL,
            affinity=host,
            VCPUs_max=int(v.get("vcpus", 1)),
            VCPUs_at_startup=int(v.get("vcpus", 1)),
            domid=next(domids) if power == "Running" else -1,
            allowed_operations=list(RUNNING_OPS if power == "Running" else HALTED_OPS),
            **_memory(int(v.get("memory_mib", 1024))),
        )
        for i, disk in enumerate(v.get("disks", [])):
            size = int(disk.get("size_gib", 10)) * GIB
            vdi = model.add(
                pool,
                "VDI",
                name_label=f"{name} disk {i}",
                SR=srs[disk["sr"]],
                virtual_size=size,
                physical_utilisation=size // 2,
                type="user",
                managed=True,
                on_boot="persist",
            )
            model.update(pool, "VDI", vdi, location=model.get(pool, "VDI", vdi)["uuid"])
            if srs[disk["sr"]] in volume_srs:  # the LUN holds it: SR.scan elsewhere finds it
                rec = model.get(pool, "VDI", vdi)
                sr_uuid = model.get(pool, "SR", rec["SR"])["uuid"]
                model.backend.setdefault(sr_uuid, {})[rec["uuid"]] = {
                    k: v for k, v in rec.items() if k not in ("uuid", "SR")
                }
            add_vbd(model, pool, vm, vdi, str(i), power == "Running")
        if v.get("cd"):
            add_vbd(model, pool, vm, isos[v["cd"]], "3", power == "Running", cd=True)
        for i, net in enumerate(v.get("networks", [])):
            model.add(
                pool,
                "VIF",
                device=str(i),
                network=networks[net],
                VM=vm,
                MAC=new_mac(),
                MTU=1500,
                currently_attached=power == "Running",
            )


def add_vbd(
    model: Model, pool: str, vm: str, vdi: str, userdevice: str, attached: bool, cd: bool = False
) -> str:
    return model.add(
        pool,
        "VBD",
        VM=vm,
        VDI=vdi,
        userdevice=userdevice,
        device="xvd" + "abcdefgh"[int(userdevice)],
        bootable=userdevice == "0",
        mode="RO" if cd else "RW",
        type="CD" if cd else "Disk",
        empty=vdi == NULL,
        currently_attached=attached,
    )


def _memory(mib: int) -> dict[str, Any]:
    b = mib * MIB
    return {
        "memory_static_max": b,
        "memory_dynamic_max": b,
        "memory_dynamic_min": b,
        "memory_static_min": b // 2,
        "memory_target": b,
    }
