"""The simulator's database: XAPI objects per pool, their wire form, sessions, events, faults.

Every object lives in one pool's table of its class, keyed by its ``OpaqueRef:<uuid>``. Sets of
refs that XAPI derives from the other side of a relation (``VM.VBDs``, ``SR.PBDs``,
``host.resident_VMs`` ...) are computed on read, so they can never disagree. Keys starting with
``_`` are the simulator's own and never leave it. All access happens under ``Model.lock``.
"""

from __future__ import annotations

import threading
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.xapisim.clock import SimClock, WallClock

NULL = "OpaqueRef:NULL"

# field types
STR, INT, FLOAT, BOOL, REF, REFS, STRS, MAP, DATE = (
    "string",
    "int",
    "float",
    "bool",
    "ref",
    "refs",
    "strings",
    "map",
    "datetime",
)

_NAMED = {"uuid": STR, "name_label": STR, "name_description": STR}

SCHEMA: dict[str, dict[str, str]] = {
    "pool": {
        **_NAMED,
        "master": REF,
        "default_SR": REF,
        "suspend_image_SR": REF,
        "other_config": MAP,
    },
    "host": {
        **_NAMED,
        "hostname": STR,
        "address": STR,
        "enabled": BOOL,
        "API_version_major": INT,
        "API_version_minor": INT,
        "software_version": MAP,
        "metrics": REF,
        "memory_overhead": INT,
        "cpu_info": MAP,
        "suspend_image_sr": REF,
        "other_config": MAP,
    },
    "host_metrics": {"uuid": STR, "memory_total": INT, "memory_free": INT, "live": BOOL},
    "VM": {
        **_NAMED,
        "power_state": STR,
        "resident_on": REF,
        "affinity": REF,
        "memory_static_max": INT,
        "memory_dynamic_max": INT,
        "memory_dynamic_min": INT,
        "memory_static_min": INT,
        "memory_target": INT,
        "VCPUs_max": INT,
        "VCPUs_at_startup": INT,
        "domid": INT,
        "is_a_template": BOOL,
        "is_a_snapshot": BOOL,
        "is_control_domain": BOOL,
        "allowed_operations": STRS,
        "current_operations": MAP,
        "snapshots": REFS,
        "suspend_VDI": REF,
        "tags": STRS,
        "other_config": MAP,
    },
    "VBD": {
        "uuid": STR,
        "VM": REF,
        "VDI": REF,
        "device": STR,
        "userdevice": STR,
        "bootable": BOOL,
        "mode": STR,
        "type": STR,
        "empty": BOOL,
        "currently_attached": BOOL,
        "other_config": MAP,
    },
    "VDI": {
        **_NAMED,
        "SR": REF,
        "virtual_size": INT,
        "physical_utilisation": INT,
        "type": STR,
        "sharable": BOOL,
        "read_only": BOOL,
        "managed": BOOL,
        "location": STR,
        "is_a_snapshot": BOOL,
        "snapshot_of": REF,
        "on_boot": STR,
        "cbt_enabled": BOOL,
        "sm_config": MAP,
        "other_config": MAP,
    },
    "VIF": {
        "uuid": STR,
        "device": STR,
        "network": REF,
        "VM": REF,
        "MAC": STR,
        "MTU": INT,
        "currently_attached": BOOL,
        "other_config": MAP,
    },
    "SR": {
        **_NAMED,
        "type": STR,
        "content_type": STR,
        "shared": BOOL,
        "physical_size": INT,
        "physical_utilisation": INT,
        "virtual_allocation": INT,
        "sm_config": MAP,
        "other_config": MAP,
    },
    "PBD": {
        "uuid": STR,
        "host": REF,
        "SR": REF,
        "device_config": MAP,
        "currently_attached": BOOL,
        "other_config": MAP,
    },
    "network": {**_NAMED, "bridge": STR, "MTU": INT, "managed": BOOL, "other_config": MAP},
    "PIF": {
        "uuid": STR,
        "device": STR,
        "network": REF,
        "host": REF,
        "MAC": STR,
        "MTU": INT,
        "VLAN": INT,
        "physical": BOOL,
        "currently_attached": BOOL,
        "management": BOOL,
        "ip_configuration_mode": STR,
        "IP": STR,
        "netmask": STR,
        "gateway": STR,
        "DNS": STR,
        "IPv6": STRS,
        "other_config": MAP,
    },
    "task": {
        **_NAMED,
        "allowed_operations": STRS,
        "current_operations": MAP,
        "created": DATE,
        "finished": DATE,
        "status": STR,
        "resident_on": REF,
        "progress": FLOAT,
        "type": STR,
        "result": STR,
        "error_info": STRS,
        "other_config": MAP,
        "subtask_of": REF,
        "subtasks": REFS,
        "backtrace": STR,
    },
    "session": {
        "uuid": STR,
        "this_host": REF,
        "this_user": REF,
        "last_active": DATE,
        "pool": BOOL,
        "originator": STR,
        "other_config": MAP,
    },
}

# field -> (class holding the back-reference, its field): computed on read
DERIVED: dict[str, dict[str, tuple[str, str]]] = {
    "host": {
        "resident_VMs": ("VM", "resident_on"),
        "PBDs": ("PBD", "host"),
        "PIFs": ("PIF", "host"),
    },
    "VM": {"VBDs": ("VBD", "VM"), "VIFs": ("VIF", "VM")},
    "VDI": {"VBDs": ("VBD", "VDI")},
    "SR": {"PBDs": ("PBD", "SR"), "VDIs": ("VDI", "SR")},
    "network": {"PIFs": ("PIF", "network"), "VIFs": ("VIF", "network")},
}

_DEFAULTS: dict[str, Any] = {
    STR: "",
    INT: 0,
    FLOAT: 0.0,
    BOOL: False,
    REF: NULL,
    REFS: [],
    STRS: [],
    MAP: {},
    DATE: 0.0,
}

MIB = 1024 * 1024
EVENT_LOG_SIZE = 10_000


def new_ref() -> str:
    return f"OpaqueRef:{uuid.uuid4()}"


def xapi_date(ts: float) -> xmlrpc.client.DateTime:
    """XAPI's DateTime form, ``YYYYMMDDTHH:MM:SSZ``."""
    return xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(ts)))


def db_field(name: str) -> str:
    """The database column of a record field: namespaced fields use ``__``."""
    return "name__" + name[5:] if name.startswith("name_") else name


def _sexpr(items: list[str]) -> str:
    return "(" + " ".join("'" + i.replace("'", "\\'") + "'" for i in items) + ")"


class XapiError(Exception):
    """A XAPI ``Failure``: ``ErrorDescription = [code, *params]``, every param a string."""

    def __init__(self, code: str, *params: object) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]


@dataclass
class Fault:
    kind: str
    host: str | None = None  # host name_label
    vm: str | None = None  # VM name_label
    at: float = 0.5
    code: str = "VM_MIGRATE_FAILED"


@dataclass
class Event:
    id: int
    pool: str
    cls: str
    operation: str
    ref: str
    timestamp: float
    snapshot: dict[str, Any] = field(default_factory=dict)


class Model:
    def __init__(self, clock: SimClock | WallClock, username: str, password: str) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.clock = clock
        self.username = username
        self.password = password
        self.tables: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.index: dict[str, tuple[str, str]] = {}  # ref -> (pool, class)
        self.urls: dict[str, str] = {}
        self.events: list[Event] = []
        self.next_event = 1
        self.faults: list[Fault] = []
        self.issued_sessions: list[str] = []
        self.created_by_api: set[str] = set()
        # what the storage itself holds, by SR uuid: VDI uuid -> fields (SR.scan finds them)
        self.backend: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.migrate_speed_mib_s = 1024.0
        self.storage_speed_mib_s = 512.0

    # -- pools and objects ------------------------------------------------------------------
    def add_pool(self, pool: str) -> None:
        self.tables[pool] = {cls: {} for cls in SCHEMA}

    @property
    def pools(self) -> list[str]:
        return list(self.tables)

    def add(self, pool: str, cls: str, ref: str | None = None, **fields: Any) -> str:
        schema = SCHEMA[cls]
        unknown = [k for k in fields if k not in schema and not k.startswith("_")]
        if unknown:
            raise KeyError(f"{cls} has no field(s) {unknown}")
        rec: dict[str, Any] = {k: _copy(_DEFAULTS[t]) for k, t in schema.items()}
        rec["uuid"] = str(uuid.uuid4())
        rec.update(fields)
        ref = ref or new_ref()
        self.tables[pool][cls][ref] = rec
        self.index[ref] = (pool, cls)
        self.emit(pool, cls, "add", ref)
        return ref

    def get(self, pool: str, cls: str, ref: Any) -> dict[str, Any]:
        rec = self.tables[pool][cls].get(ref) if isinstance(ref, str) else None
        if rec is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return rec

    def exists(self, pool: str, cls: str, ref: str) -> bool:
        return ref in self.tables[pool][cls]

    def update(self, pool: str, cls: str, ref: str, **changes: Any) -> None:
        rec = self.get(pool, cls, ref)
        if any(rec.get(k) != v for k, v in changes.items()):
            rec.update(changes)
            self.emit(pool, cls, "mod", ref)

    def delete(self, pool: str, cls: str, ref: str) -> None:
        snapshot = self.render(pool, cls, ref)
        del self.tables[pool][cls][ref]
        self.index.pop(ref, None)
        self.created_by_api.discard(ref)
        self.emit(pool, cls, "del", ref, snapshot)

    def all(self, pool: str, cls: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from list(self.tables[pool][cls].items())

    def find(self, pool: str, cls: str, **match: Any) -> list[str]:
        return [
            ref
            for ref, rec in self.all(pool, cls)
            if all(rec.get(k) == v for k, v in match.items())
        ]

    def one(self, pool: str, cls: str, **match: Any) -> str:
        refs = self.find(pool, cls, **match)
        if len(refs) != 1:
            raise LookupError(f"{len(refs)} {cls} objects match {match} in {pool}")
        return refs[0]

    def locate(self, ref: str) -> tuple[str, str] | None:
        """(pool, class) of any ref."""
        return self.index.get(ref)

    def field_value(self, pool: str, cls: str, ref: str, name: str) -> Any:
        """A field's value in Python form, derived sets included."""
        rec = self.get(pool, cls, ref)
        derived = DERIVED.get(cls, {}).get(name)
        if derived:
            child, back = derived
            return self.find(pool, child, **{back: ref})
        if cls == "host_metrics" and name == "memory_free":
            return self.memory_free(pool, rec["_host"])
        return rec[name]

    def field_type(self, cls: str, name: str) -> str | None:
        if name in DERIVED.get(cls, {}):
            return REFS
        return SCHEMA[cls].get(name)

    def fields(self, cls: str) -> list[str]:
        return [*SCHEMA[cls], *DERIVED.get(cls, {})]

    # -- wire forms -----------------------------------------------------------------------
    def wire(self, cls: str, name: str, value: Any) -> Any:
        kind = self.field_type(cls, name)
        if kind == INT:
            return str(value)
        if kind == DATE:
            return xapi_date(value)
        if kind == FLOAT:
            return float(value)
        if kind in (REFS, STRS):
            return list(value)
        if kind == MAP:
            return dict(value)
        return value

    def render(self, pool: str, cls: str, ref: str) -> dict[str, Any]:
        return {
            name: self.wire(cls, name, self.field_value(pool, cls, ref, name))
            for name in self.fields(cls)
        }

    def db_value(self, pool: str, cls: str, ref: str, column: str) -> str:
        """A field's database form, as ``get_all_records_where`` compares it."""
        names = {db_field(n): n for n in self.fields(cls)}
        if column not in names:
            raise XapiError("INTERNAL_ERROR", f'DBCache_NotFound("missing field", "{column}", "")')
        name = names[column]
        value, kind = self.field_value(pool, cls, ref, name), self.field_type(cls, name)
        if kind == BOOL:
            return "true" if value else "false"
        if kind == FLOAT:
            return repr(float(value))
        if kind == DATE:
            return str(xapi_date(value))
        if kind in (REFS, STRS):
            return _sexpr(list(value))
        if kind == MAP:
            return "(" + " ".join(_sexpr([k, v]) for k, v in value.items()) + ")"
        return str(value)

    # -- memory ---------------------------------------------------------------------------
    def memory_free(self, pool: str, host: str) -> int:
        """Bytes free on a host: total - control domain - resident VMs; or the injected value."""
        host_rec = self.get(pool, "host", host)
        if self.fault("host_short_of_memory", host=host_rec["name_label"]):
            return 256 * MIB
        used = sum(
            self.get(pool, "VM", vm)["memory_static_max"]
            for vm in self.find(pool, "VM", resident_on=host)
        )
        return max(0, host_rec["_memory_total"] - host_rec["memory_overhead"] - used)

    # -- faults ---------------------------------------------------------------------------
    def fault(self, kind: str, *, host: str | None = None, vm: str | None = None) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and f.host in (None, host) and f.vm in (None, vm):
                return f
        return None

    # -- sessions -------------------------------------------------------------------------
    def login(self, pool: str, originator: str = "") -> str:
        master = self.get(pool, "pool", self.one(pool, "pool"))["master"]
        ref = self.add(
            pool,
            "session",
            this_host=master,
            last_active=self.clock.now(),
            originator=originator,
        )
        self.issued_sessions.append(ref)
        return ref

    def check_session(self, pool: str, session: Any) -> str:
        if not isinstance(session, str) or not self.exists(pool, "session", session):
            raise XapiError("SESSION_INVALID", session if isinstance(session, str) else "")
        self.tables[pool]["session"][session]["last_active"] = self.clock.now()
        return session

    def invalidate_sessions(self, pool: str | None = None) -> None:
        for p in [pool] if pool else self.pools:
            for ref, _ in self.all(p, "session"):
                self.delete(p, "session", ref)

    # -- events ---------------------------------------------------------------------------
    def emit(
        self, pool: str, cls: str, op: str, ref: str, snapshot: dict[str, Any] | None = None
    ) -> None:
        if cls == "session":
            return
        if snapshot is None:
            snapshot = self.render(pool, cls, ref)
        self.events.append(
            Event(self.next_event, pool, cls.lower(), op, ref, self.clock.now(), snapshot)
        )
        self.next_event += 1
        del self.events[:-EVENT_LOG_SIZE]
        self.changed.notify_all()


def _copy(value: Any) -> Any:
    if isinstance(value, list | dict):
        return type(value)(value)
    return value
