"""XAPI records as the driver uses them (a VM, its disks and VIFs, a task) and small helpers to
read XAPI's wire values (int64 as strings, DateTimes, power states)."""

from __future__ import annotations

import calendar
import time
import uuid as uuidlib
import xmlrpc.client
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ferry.errors import ConfigError
from ferry.model import PowerState

from .faults import XapiError, XapiUnreachable
from .session import NULL_REF, PoolSession

#: SAN SR types; such an SR introduced with an empty content_type (as Nova's ``volume_utils``
#: introduced one SR per Cinder volume) is a *volume SR*: it moves with the VM (introduced on the
#: destination pool, forgotten on the source) instead of being copied
VOLUME_SR_TYPES = frozenset({"iscsi", "lvmoiscsi", "lvmohba"})
#: other_config keys of what ferry creates or starts (tasks, PBDs, interim networks)
TAG_INSTANCE = "ferry_instance"
TAG_TOKEN = "ferry_token"
TAG_DESTINATION = "ferry_destination"
TAG_VIF_DEVICE = "ferry_vif_device"
#: task states of a migration still in flight
IN_FLIGHT = frozenset({"pending", "cancelling"})
#: the problems translated into ferry's typed errors at the driver's edge
XAPI_PROBLEMS = (XapiError, XapiUnreachable, ConfigError)

_POWER_STATES = {
    "running": PowerState.RUNNING.value,
    "paused": PowerState.PAUSED.value,
    "halted": PowerState.SHUTDOWN.value,
    "suspended": "suspended",
    "crashed": PowerState.CRASHED.value,
}


class Refused(Exception):
    """A check or an operation found a reason to refuse (translated like a XAPI error)."""


@dataclass
class Vm:
    """One VM record in one pool."""

    pool: PoolSession
    ref: str
    rec: dict[str, Any]

    @property
    def uuid(self) -> str:
        return str(self.rec.get("uuid", ""))

    @property
    def name(self) -> str:
        return str(self.rec.get("name_label", ""))

    @property
    def power(self) -> str:
        return str(self.rec.get("power_state", "")).lower()

    @property
    def resident_on(self) -> str:
        return str(self.rec.get("resident_on") or NULL_REF)

    @property
    def live(self) -> bool:
        """Running or paused on a host."""
        return self.power in ("running", "paused") and self.resident_on != NULL_REF


@dataclass
class Disk:
    """A VM's disk (not a CD): its VBD, VDI and SR."""

    vbd: str
    userdevice: str
    vdi: str
    vdi_uuid: str
    size: int
    sm_config: dict[str, str]
    sr: str
    sr_uuid: str
    sr_type: str
    sr_content_type: str
    shared: bool

    @property
    def volume(self) -> bool:
        """On a volume SR (see :data:`VOLUME_SR_TYPES`)."""
        return self.sr_type in VOLUME_SR_TYPES and not self.sr_content_type


@dataclass
class Vif:
    ref: str
    device: str
    network: str
    network_name: str
    mtu: str


@dataclass
class Task:
    pool: PoolSession
    ref: str
    rec: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.rec.get("status", "")).lower()

    @property
    def tags(self) -> dict[str, str]:
        return tags_of(self.rec)


def is_guest(rec: dict[str, Any]) -> bool:
    """Not a control domain, a template or a snapshot."""
    return not (
        rec.get("is_control_domain") or rec.get("is_a_template") or rec.get("is_a_snapshot")
    )


def pick(copies: Sequence[Vm]) -> Vm | None:
    """The copy that runs (mid-migration a real XAPI has a second one, not running yet)."""
    if not copies:
        return None
    return sorted(copies, key=lambda vm: (not vm.live, vm.power != "running"))[0]


def power_state(state: str) -> str:
    """XAPI's power state as ferry's (``Halted`` -> ``shutdown``)."""
    return _POWER_STATES.get(state.lower(), PowerState.NOSTATE.value)


def tags_of(rec: dict[str, Any]) -> dict[str, str]:
    return dict(rec.get("other_config") or {})


def to_int(value: Any) -> int:
    """An int64 field (a decimal string on the wire); 0 when missing."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def quote(value: str) -> str:
    """A literal for XAPI's filter grammar (refs and ferry's names hold no quotes)."""
    if '"' in value or "\\" in value:
        raise Refused(f"cannot filter on {value!r}")
    return value


def looks_like_uuid(ref: str) -> bool:
    try:
        uuidlib.UUID(ref)
    except ValueError:
        return False
    return True


def version_number(software: dict[str, Any]) -> int:
    """``platform_version`` (else ``product_version``, ``xapi``) as Nova's integer:
    major * 1000000 + minor * 1000 + patch."""
    for key in ("platform_version", "product_version", "xapi"):
        parts = str(software.get(key) or "").split(".")
        if parts and parts[0].isdigit():
            nums = [int(p) if p.isdigit() else 0 for p in parts[:3]] + [0, 0]
            return nums[0] * 1_000_000 + nums[1] * 1_000 + nums[2]
    return 1


def epoch(value: Any) -> float:
    """A XAPI DateTime (``YYYYMMDDTHH:MM:SSZ``; the SDK's ``DateTime`` or a string) in epoch
    seconds; 0 when absent (XAPI's null date is the epoch) or unparseable."""
    if isinstance(value, xmlrpc.client.DateTime):
        value = value.value
    text = str(value or "").strip()
    if not text or text.startswith("19700101T00:00:00"):
        return 0.0
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    return 0.0
