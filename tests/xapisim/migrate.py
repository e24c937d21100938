"""VM migration: the checks XAPI makes before it starts (``VM.assert_can_migrate``,
``VM.pool_migrate``), the plan a migrate task carries out, and the atomic move at progress 1.0.

Intra-pool keeps the VM ref and changes ``resident_on``; cross-pool creates the VM on the
destination pool (new ref, same uuid and name) and destroys the source record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.xapisim.model import MIB, NULL, Model, XapiError
from tests.xapisim.scenario import HALTED_OPS, RUNNING_OPS


@dataclass
class Plan:
    kind: str  # "pool_migrate" | "migrate_send"
    pool: str  # source pool
    vm: str
    dest_pool: str
    dest_host: str
    vdi_map: dict[str, str] = field(default_factory=dict)  # source VDI -> SR on dest_pool
    vif_map: dict[str, str] = field(default_factory=dict)  # source VIF -> network on dest_pool
    copy_bytes: int = 0
    memory_bytes: int = 0

    @property
    def cross_pool(self) -> bool:
        return self.pool != self.dest_pool

    def duration(self, model: Model) -> float:
        return self.copy_bytes / (model.storage_speed_mib_s * MIB) + self.memory_bytes / (
            model.migrate_speed_mib_s * MIB
        )

    def copied_vdis(self, model: Model) -> list[str]:
        """VDIs whose data moves: not those already on their SR, nor volumes the destination
        sees itself (an introduced SR holding the same VDI uuid)."""
        out = []
        for vdi, sr in self.vdi_map.items():
            rec = model.get(self.pool, "VDI", vdi)
            if self.cross_pool:
                if not same_volume(model, self.dest_pool, sr, rec["uuid"]):
                    out.append(vdi)
            elif rec["SR"] != sr:
                out.append(vdi)
        return out


def same_volume(model: Model, pool: str, sr: str, vdi_uuid: str) -> str | None:
    """The VDI with that uuid on ``sr`` (a volume SR introduced on the destination), or None."""
    found = model.find(pool, "VDI", SR=sr, uuid=vdi_uuid)
    return found[0] if found else None


def disk_vdis(model: Model, pool: str, vm: str) -> list[str]:
    """The VDIs XAPI mirrors: every non-empty, non-CD VBD's VDI."""
    out = []
    for vbd in model.field_value(pool, "VM", vm, "VBDs"):
        rec = model.get(pool, "VBD", vbd)
        if rec["type"] != "CD" and not rec["empty"] and rec["VDI"] != NULL:
            out.append(rec["VDI"])
    return out


def _host_sees_sr(model: Model, pool: str, host: str, sr: str) -> bool:
    return any(
        model.get(pool, "PBD", pbd)["currently_attached"]
        for pbd in model.find(pool, "PBD", host=host, SR=sr)
    )


def _host_on_network(model: Model, pool: str, host: str, net: str) -> bool:
    rec = model.get(pool, "network", net)
    if rec["other_config"].get("assume_network_is_shared") == "true":
        return True
    return bool(model.find(pool, "PIF", host=host, network=net))


def _check_vm(model: Model, pool: str, vm: str, *, running: bool) -> dict[str, Any]:
    rec = model.get(pool, "VM", vm)
    if rec["is_a_template"]:
        raise XapiError("VM_IS_TEMPLATE", vm)
    if rec["is_control_domain"]:
        raise XapiError("OPERATION_NOT_ALLOWED", "Cannot migrate a control domain")
    allowed = ("Running",) if running else ("Running", "Halted", "Suspended")
    if rec["power_state"] not in allowed:
        raise XapiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    for task, op in rec["current_operations"].items():
        raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm, op, task)
    return rec


def check_memory(model: Model, pool: str, host: str, vm_rec: dict[str, Any] | None) -> None:
    """HOST_NOT_ENOUGH_FREE_MEMORY when the host cannot take the VM (or the fault is injected)."""
    host_rec = model.get(pool, "host", host)
    if not host_rec["enabled"]:
        raise XapiError("HOST_DISABLED", host)
    available = model.memory_free(pool, host)
    needed = vm_rec["memory_static_max"] if vm_rec else available + 1  # no VM: nothing fits
    injected = model.fault("host_short_of_memory", host=host_rec["name_label"])
    if injected or needed > available:
        raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, available)


def _check_dest(model: Model, dest: dict[str, Any]) -> tuple[str, str]:
    """(pool, host) named by a ``host.migrate_receive`` result."""
    for key in ("session_id", "host", "xenops", "master", "SM"):
        if not isinstance(dest.get(key), str):
            raise XapiError("INTERNAL_ERROR", "Not_found")
    session = dest["session_id"]
    for pool in model.pools:
        if model.exists(pool, "session", session):
            if not model.exists(pool, "host", dest["host"]):
                raise XapiError("HANDLE_INVALID", "host", dest["host"])
            return pool, dest["host"]
    raise XapiError("VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED")


def plan_migrate_send(
    model: Model,
    pool: str,
    vm: str,
    dest: dict[str, Any],
    live: bool,
    vdi_map: dict[str, Any],
    vif_map: dict[str, Any],
) -> Plan:
    """Everything ``VM.assert_can_migrate`` checks; returns what the migrate task will do."""
    rec = _check_vm(model, pool, vm, running=live)
    dest_pool, dest_host = _check_dest(model, dest)
    plan = Plan("migrate_send", pool, vm, dest_pool, dest_host)
    if not plan.cross_pool and vif_map:
        raise XapiError(
            "OPERATION_NOT_ALLOWED", "VIF mapping is not allowed for intra-pool migration"
        )
    for vdi, sr in vdi_map.items():
        model.get(pool, "VDI", vdi)
        model.get(dest_pool, "SR", sr)
        if not _host_sees_sr(model, dest_pool, dest_host, sr):
            raise XapiError("VM_REQUIRES_SR", vm, sr)
    disks = disk_vdis(model, pool, vm)
    for vdi in disks:
        if vdi not in vdi_map or model.fault("vdi_not_in_map", vm=rec["name_label"]):
            raise XapiError("VDI_NOT_IN_MAP", vdi)
    plan.vdi_map = {vdi: vdi_map[vdi] for vdi in disks}
    if plan.cross_pool:
        vifs = model.field_value(pool, "VM", vm, "VIFs")
        for vif, net in vif_map.items():
            model.get(pool, "VIF", vif)
            model.get(dest_pool, "network", net)
        by_mac = {model.get(pool, "VIF", v)["MAC"]: n for v, n in vif_map.items()}
        for vif in vifs:
            net = vif_map.get(vif) or by_mac.get(model.get(pool, "VIF", vif)["MAC"])
            if net is None:
                raise XapiError("VIF_NOT_IN_MAP", vif)
            if not _host_on_network(model, dest_pool, dest_host, net):
                raise XapiError("VM_REQUIRES_NETWORK", vm, net)
            plan.vif_map[vif] = net
    if rec["power_state"] == "Running" and rec["resident_on"] != dest_host:
        check_memory(model, dest_pool, dest_host, rec)
    plan.copy_bytes = sum(
        model.get(pool, "VDI", vdi)["virtual_size"] for vdi in plan.copied_vdis(model)
    )
    plan.memory_bytes = rec["memory_static_max"] if live else 0
    return plan


def plan_pool_migrate(model: Model, pool: str, vm: str, host: str) -> Plan:
    rec = _check_vm(model, pool, vm, running=True)
    model.get(pool, "host", host)
    for vbd in model.field_value(pool, "VM", vm, "VBDs"):
        vdi = model.get(pool, "VBD", vbd)["VDI"]
        if vdi != NULL:
            sr = model.get(pool, "VDI", vdi)["SR"]
            if not _host_sees_sr(model, pool, host, sr):
                raise XapiError("VM_REQUIRES_SR", vm, sr)
    for vif in model.field_value(pool, "VM", vm, "VIFs"):
        net = model.get(pool, "VIF", vif)["network"]
        if not _host_on_network(model, pool, host, net):
            raise XapiError("VM_REQUIRES_NETWORK", vm, net)
    if rec["resident_on"] != host:
        check_memory(model, pool, host, rec)
    return Plan("pool_migrate", pool, vm, pool, host, memory_bytes=rec["memory_static_max"])


def failure_for(model: Model, plan: Plan, code: str) -> XapiError:
    """The error an injected mid-task fault raises, with XAPI's parameters."""
    if code == "MIRROR_FAILED":
        copied = plan.copied_vdis(model)
        return XapiError(code, copied[0] if copied else NULL)
    if code == "VM_MIGRATE_FAILED":
        vm = model.get(plan.pool, "VM", plan.vm)
        src = vm["resident_on"]
        return XapiError(
            code,
            vm["uuid"],
            model.get(plan.pool, "host", src)["uuid"] if src != NULL else "",
            model.get(plan.dest_pool, "host", plan.dest_host)["uuid"],
            "simulated failure",
        )
    return XapiError(code)


def apply(model: Model, plan: Plan) -> str:
    """Make the move (at progress 1.0); returns the VM's ref on the destination."""
    model.get(plan.pool, "VM", plan.vm)  # still there?
    if plan.cross_pool:
        return _move_cross_pool(model, plan)
    for vdi, sr in plan.vdi_map.items():
        if model.get(plan.pool, "VDI", vdi)["SR"] != sr:
            new = _copy_vdi(model, plan.pool, vdi, plan.pool, sr)
            for vbd in model.find(plan.pool, "VBD", VDI=vdi):
                model.update(plan.pool, "VBD", vbd, VDI=new)
            model.delete(plan.pool, "VDI", vdi)
    if model.get(plan.pool, "VM", plan.vm)["power_state"] == "Running":
        model.update(plan.pool, "VM", plan.vm, resident_on=plan.dest_host)
    return plan.vm


def _copy_vdi(model: Model, pool: str, vdi: str, dest_pool: str, sr: str) -> str:
    src = model.get(pool, "VDI", vdi)
    src_sr = model.get(pool, "SR", src["SR"])
    fields = {k: v for k, v in src.items() if k not in ("uuid", "SR") and not k.startswith("_")}
    new = model.add(
        dest_pool,
        "VDI",
        **{
            **fields,
            "SR": sr,
            "sm_config": {**src["sm_config"], "base_mirror": f"{src_sr['uuid']}/{src['uuid']}"},
        },
    )
    model.update(dest_pool, "VDI", new, location=model.get(dest_pool, "VDI", new)["uuid"])
    return new


def _move_cross_pool(model: Model, plan: Plan) -> str:
    pool, dest_pool = plan.pool, plan.dest_pool
    src = model.get(pool, "VM", plan.vm)
    keep = {k: v for k, v in src.items() if not k.startswith("_")}
    running = src["power_state"] == "Running"
    domid = 1 + max(
        (model.get(dest_pool, "VM", v)["domid"] for v in model.find(dest_pool, "VM")), default=0
    )
    new_vm = model.add(
        dest_pool,
        "VM",
        **{
            **keep,
            "resident_on": plan.dest_host if running else NULL,
            "affinity": NULL,
            "domid": domid if running else -1,
            "current_operations": {},
            "allowed_operations": list(RUNNING_OPS if running else HALTED_OPS),
        },
    )
    for vbd in model.field_value(pool, "VM", plan.vm, "VBDs"):
        rec = model.get(pool, "VBD", vbd)
        vdi = rec["VDI"]
        fields = {k: v for k, v in rec.items() if k not in ("uuid", "VM", "VDI")}
        if vdi in plan.vdi_map:
            sr = plan.vdi_map[vdi]
            volume = same_volume(model, dest_pool, sr, model.get(pool, "VDI", vdi)["uuid"])
            new_vdi = volume or _copy_vdi(model, pool, vdi, dest_pool, sr)
            model.add(dest_pool, "VBD", **{**fields, "VM": new_vm, "VDI": new_vdi})
        else:  # a CD (or empty drive): ejected, as XAPI does before a cross-pool migration
            volume = None
            model.add(dest_pool, "VBD", **{**fields, "VM": new_vm, "VDI": NULL, "empty": True})
        model.delete(pool, "VBD", vbd)
        if vdi in plan.vdi_map and not volume:  # a volume stays until its SR is forgotten
            model.delete(pool, "VDI", vdi)
    for vif in model.field_value(pool, "VM", plan.vm, "VIFs"):
        rec = model.get(pool, "VIF", vif)
        fields = {k: v for k, v in rec.items() if k not in ("uuid", "VM", "network")}
        model.add(dest_pool, "VIF", **{**fields, "VM": new_vm, "network": plan.vif_map[vif]})
        model.delete(pool, "VIF", vif)
    model.delete(pool, "VM", plan.vm)
    return new_vm
