"""The XAPI calls the simulator answers: a registry ``name -> Call`` with XAPI's parameter lists.

Generic calls (``<class>.get_record``, ``get_all``, ``get_all_records[_where]``, ``get_by_uuid``,
``get_by_name_label``, ``get_<field>``, ``add_to_/remove_from_/set_<map>``, ``set_name_*``) are
generated from the schema; the rest are written out below. Every handler runs under the model
lock with a :class:`Ctx`; it returns a wire value (``""`` for void) or raises ``XapiError``.
A handler marked ``long`` returns a :class:`~tests.xapisim.migrate.Plan` that a task carries out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tests.xapisim import filter as dbfilter, migrate
from tests.xapisim.model import DERIVED, NULL, SCHEMA, STRS, Model, XapiError
from tests.xapisim.tasks import DONE, Tasks

# parameter types as XAPI unmarshals them
REF, STRING, BOOL, MAPT, FLOAT, SET, RECORD = "ref", "string", "bool", "map", "float", "set", "rec"


@dataclass
class Ctx:
    model: Model
    tasks: Tasks
    pool: str
    session: str


@dataclass(frozen=True)
class Call:
    name: str
    fn: Callable[..., Any]
    params: tuple[tuple[str, str], ...] = ()
    optional: int = 0  # how many trailing params may be left out
    session: bool = True  # first wire param is the session
    async_ok: bool = False  # has an Async.* twin
    long: bool = False  # returns a Plan that a task runs


REGISTRY: dict[str, Call] = {}


def call(name: str, *params: tuple[str, str], **opts: Any) -> Callable[[Callable[..., Any]], Any]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = Call(name, fn, tuple(params), **opts)
        return fn

    return register


def check_type(name: str, kind: str, value: Any) -> None:
    ok = {
        REF: isinstance(value, str),
        STRING: isinstance(value, str),
        BOOL: isinstance(value, bool),
        MAPT: isinstance(value, dict),
        RECORD: isinstance(value, dict),
        SET: isinstance(value, list),
        FLOAT: isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise XapiError("FIELD_TYPE_ERROR", name)


# -- generic per-class calls --------------------------------------------------------------
WRITABLE_MAPS = {"other_config", "sm_config", "device_config"}


def _records(ctx: Ctx, cls: str, expr: Any = None) -> dict[str, Any]:
    m = ctx.model

    def wanted(ref: str) -> bool:
        return expr is None or dbfilter.evaluate(expr, partial(m.db_value, ctx.pool, cls, ref))

    return {ref: m.render(ctx.pool, cls, ref) for ref, _ in m.all(ctx.pool, cls) if wanted(ref)}


def _generic(cls: str) -> None:
    schema = SCHEMA[cls]
    self_p = ("self", REF)

    def add(suffix: str, fn: Callable[..., Any], *params: tuple[str, str]) -> None:
        REGISTRY[f"{cls}.{suffix}"] = Call(f"{cls}.{suffix}", fn, params)

    def get_record(ctx: Ctx, ref: str) -> Any:
        ctx.model.get(ctx.pool, cls, ref)
        return ctx.model.render(ctx.pool, cls, ref)

    def get_by_uuid(ctx: Ctx, u: str) -> str:
        found = ctx.model.find(ctx.pool, cls, uuid=u)
        if not found:
            raise XapiError("UUID_INVALID", cls, u)
        return found[0]

    def where(ctx: Ctx, expr: str) -> Any:
        try:
            parsed = dbfilter.parse(expr)
        except dbfilter.FilterSyntaxError as exc:
            raise XapiError("INVALID_VALUE", expr, str(exc)) from None
        return _records(ctx, cls, parsed)

    def getter(f: str) -> Callable[..., Any]:
        return lambda ctx, ref: ctx.model.wire(cls, f, ctx.model.field_value(ctx.pool, cls, ref, f))

    add("get_record", get_record, self_p)
    add("get_by_uuid", get_by_uuid, ("uuid", STRING))
    if cls != "session":
        add("get_all", lambda ctx: [r for r, _ in ctx.model.all(ctx.pool, cls)])
        add("get_all_records", lambda ctx: _records(ctx, cls))
        add("get_all_records_where", where, ("expr", STRING))
    if "name_label" in schema:
        add(
            "get_by_name_label",
            lambda ctx, label: ctx.model.find(ctx.pool, cls, name_label=label),
            ("label", STRING),
        )
        for f in ("name_label", "name_description"):
            add(f"set_{f}", partial(_set, cls=cls, f=f), self_p, ("value", STRING))
    for f in [*schema, *DERIVED.get(cls, {})]:
        add(f"get_{f}", getter(f), self_p)
    for f in WRITABLE_MAPS.intersection(schema):
        add(
            f"add_to_{f}",
            partial(_add_to_map, cls=cls, f=f),
            self_p,
            ("key", STRING),
            ("value", STRING),
        )
        add(f"remove_from_{f}", partial(_remove_from_map, cls=cls, f=f), self_p, ("key", STRING))
        add(f"set_{f}", partial(_set, cls=cls, f=f), self_p, ("value", MAPT))
    if schema.get("tags") == STRS:
        add("add_tags", partial(_tags, cls=cls, add=True), self_p, ("value", STRING))
        add("remove_tags", partial(_tags, cls=cls, add=False), self_p, ("value", STRING))


def _set(ctx: Ctx, ref: str, value: Any, *, cls: str, f: str) -> str:
    ctx.model.get(ctx.pool, cls, ref)
    if isinstance(value, dict):
        value = {str(k): str(v) for k, v in value.items()}
    ctx.model.update(ctx.pool, cls, ref, **{f: value})
    return ""


def _add_to_map(ctx: Ctx, ref: str, key: str, value: str, *, cls: str, f: str) -> str:
    current = ctx.model.get(ctx.pool, cls, ref)[f]
    if key in current:
        raise XapiError("MAP_DUPLICATE_KEY", cls, f, ref, key)
    ctx.model.update(ctx.pool, cls, ref, **{f: {**current, key: value}})
    return ""


def _remove_from_map(ctx: Ctx, ref: str, key: str, *, cls: str, f: str) -> str:
    current = ctx.model.get(ctx.pool, cls, ref)[f]
    ctx.model.update(ctx.pool, cls, ref, **{f: {k: v for k, v in current.items() if k != key}})
    return ""


def _tags(ctx: Ctx, ref: str, tag: str, *, cls: str, add: bool) -> str:
    tags = ctx.model.get(ctx.pool, cls, ref)["tags"]
    new = sorted(set(tags) | {tag}) if add else [t for t in tags if t != tag]
    ctx.model.update(ctx.pool, cls, ref, tags=new)
    return ""


for _cls in SCHEMA:
    _generic(_cls)


# -- session --------------------------------------------------------------------------------
@call(
    "session.login_with_password",
    ("uname", STRING),
    ("pwd", STRING),
    ("version", STRING),
    ("originator", STRING),
    optional=2,
    session=False,
)
def login_with_password(ctx: Ctx, uname: str, pwd: str, version: str = "", orig: str = "") -> str:
    if uname != ctx.model.username or pwd != ctx.model.password:
        raise XapiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
    return ctx.model.login(ctx.pool, orig)


@call("session.logout")
def logout(ctx: Ctx) -> str:
    ctx.model.delete(ctx.pool, "session", ctx.session)
    return ""


# -- host -----------------------------------------------------------------------------------
@call("host.compute_free_memory", ("host", REF))
def compute_free_memory(ctx: Ctx, host: str) -> str:
    ctx.model.get(ctx.pool, "host", host)
    return str(ctx.model.memory_free(ctx.pool, host))


@call("host.migrate_receive", ("host", REF), ("network", REF), ("options", MAPT))
def migrate_receive(ctx: Ctx, host: str, network: str, options: dict[str, str]) -> dict[str, str]:
    m, pool = ctx.model, ctx.pool
    host_rec = m.get(pool, "host", host)
    m.get(pool, "network", network)
    pifs = m.find(pool, "PIF", host=host, network=network)
    if not pifs:
        raise XapiError("HOST_CANNOT_ATTACH_NETWORK", host, network)
    pif = m.get(pool, "PIF", pifs[0])
    if not pif["IP"]:
        raise XapiError("INTERFACE_HAS_NO_IP", pifs[0])
    if m.fault("host_short_of_memory", host=host_rec["name_label"]):
        migrate.check_memory(m, pool, host, None)
    session = m.login(pool, "migrate_receive")
    url = m.urls.get(pool, f"http://{pif['IP']}")
    return {
        "SM": f"{url}/services/SM?session_id={session}",
        "xenops": f"{url}/services/xenops?session_id={session}",
        "session_id": session,
        "host": host,
        "master": f"{url}/",
    }


# -- VM -------------------------------------------------------------------------------------
_MIGRATE_PARAMS = (
    ("vm", REF),
    ("dest", MAPT),
    ("live", BOOL),
    ("vdi_map", MAPT),
    ("vif_map", MAPT),
    ("options", MAPT),
    ("vgpu_map", MAPT),
)


@call("VM.assert_can_migrate", *_MIGRATE_PARAMS, optional=1, async_ok=True)
def assert_can_migrate(
    ctx: Ctx, vm: str, dest: Any, live: bool, vdi: Any, vif: Any, *_: Any
) -> str:
    migrate.plan_migrate_send(ctx.model, ctx.pool, vm, dest, live, vdi, vif)
    return ""


@call("VM.migrate_send", *_MIGRATE_PARAMS, ("vdi_format_map", MAPT), optional=2, long=True)
def migrate_send(
    ctx: Ctx, vm: str, dest: Any, live: bool, vdi: Any, vif: Any, *_: Any
) -> migrate.Plan:
    return migrate.plan_migrate_send(ctx.model, ctx.pool, vm, dest, live, vdi, vif)


@call("VM.pool_migrate", ("vm", REF), ("host", REF), ("options", MAPT), long=True)
def pool_migrate(ctx: Ctx, vm: str, host: str, options: dict[str, str]) -> migrate.Plan:
    return migrate.plan_pool_migrate(ctx.model, ctx.pool, vm, host)


@call("VM.assert_can_boot_here", ("self", REF), ("host", REF), async_ok=True)
def assert_can_boot_here(ctx: Ctx, vm: str, host: str) -> str:
    rec = ctx.model.get(ctx.pool, "VM", vm)
    migrate.check_memory(ctx.model, ctx.pool, host, rec)
    return ""


# -- storage --------------------------------------------------------------------------------
@call(
    "SR.introduce",
    ("uuid", STRING),
    ("name_label", STRING),
    ("name_description", STRING),
    ("type", STRING),
    ("content_type", STRING),
    ("shared", BOOL),
    ("sm_config", MAPT),
    optional=2,
    async_ok=True,
)
def sr_introduce(
    ctx: Ctx,
    uuid: str,
    label: str,
    desc: str,
    sr_type: str,
    content_type: str,
    shared: bool = False,
    sm_config: dict[str, str] | None = None,
) -> str:
    if ctx.model.find(ctx.pool, "SR", uuid=uuid):
        raise XapiError("SR_UUID_EXISTS", uuid)
    ref = ctx.model.add(
        ctx.pool,
        "SR",
        uuid=uuid,
        name_label=label,
        name_description=desc,
        type=sr_type,
        content_type=content_type,
        shared=shared,
        sm_config=dict(sm_config or {}),
    )
    ctx.model.created_by_api.add(ref)
    return ref


@call("SR.forget", ("sr", REF), async_ok=True)
def sr_forget(ctx: Ctx, sr: str) -> str:
    m = ctx.model
    m.get(ctx.pool, "SR", sr)
    pbds = m.find(ctx.pool, "PBD", SR=sr)
    if any(m.get(ctx.pool, "PBD", p)["currently_attached"] for p in pbds):
        raise XapiError("SR_HAS_PBD", sr)
    for ref in [*pbds, *m.find(ctx.pool, "VDI", SR=sr)]:
        m.delete(ctx.pool, m.locate(ref)[1], ref)  # type: ignore[index]
    m.delete(ctx.pool, "SR", sr)
    return ""


@call("SR.scan", ("sr", REF), async_ok=True)
def sr_scan(ctx: Ctx, sr: str) -> str:
    """Finds the VDIs the storage holds for this SR uuid (a volume's LUN) and adds the missing."""
    m = ctx.model
    rec = m.get(ctx.pool, "SR", sr)
    pbds = m.find(ctx.pool, "PBD", SR=sr)
    if not any(m.get(ctx.pool, "PBD", p)["currently_attached"] for p in pbds):
        raise XapiError("SR_HAS_NO_PBDS", sr)
    for vdi_uuid, fields in m.backend.get(rec["uuid"], {}).items():
        if not m.find(ctx.pool, "VDI", SR=sr, uuid=vdi_uuid):
            m.add(ctx.pool, "VDI", **{**fields, "uuid": vdi_uuid, "SR": sr})
    return ""


@call("PBD.create", ("args", RECORD), async_ok=True)
def pbd_create(ctx: Ctx, args: dict[str, Any]) -> str:
    m = ctx.model
    host, sr = args.get("host", NULL), args.get("SR", NULL)
    m.get(ctx.pool, "host", host)
    m.get(ctx.pool, "SR", sr)
    ref = m.add(
        ctx.pool,
        "PBD",
        host=host,
        SR=sr,
        device_config={str(k): str(v) for k, v in args.get("device_config", {}).items()},
        other_config={str(k): str(v) for k, v in args.get("other_config", {}).items()},
    )
    m.created_by_api.add(ref)
    return ref


def _plug(ctx: Ctx, pbd: str, attached: bool) -> str:
    ctx.model.get(ctx.pool, "PBD", pbd)
    ctx.model.update(ctx.pool, "PBD", pbd, currently_attached=attached)
    return ""


call("PBD.plug", ("self", REF), async_ok=True)(lambda ctx, pbd: _plug(ctx, pbd, True))
call("PBD.unplug", ("self", REF), async_ok=True)(lambda ctx, pbd: _plug(ctx, pbd, False))


@call("PBD.destroy", ("self", REF), async_ok=True)
def pbd_destroy(ctx: Ctx, pbd: str) -> str:
    if ctx.model.get(ctx.pool, "PBD", pbd)["currently_attached"]:
        raise XapiError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    ctx.model.delete(ctx.pool, "PBD", pbd)
    return ""


# -- network --------------------------------------------------------------------------------
@call("network.create", ("args", RECORD), async_ok=True)
def network_create(ctx: Ctx, args: dict[str, Any]) -> str:
    m = ctx.model
    n = len(m.find(ctx.pool, "network"))
    ref = m.add(
        ctx.pool,
        "network",
        name_label=str(args.get("name_label", "")),
        name_description=str(args.get("name_description", "")),
        MTU=int(args.get("MTU", 1500)),
        bridge=str(args.get("bridge") or f"xapi{n}"),
        managed=bool(args.get("managed", True)),
        other_config={str(k): str(v) for k, v in args.get("other_config", {}).items()},
    )
    m.created_by_api.add(ref)
    return ref


@call("network.destroy", ("self", REF), async_ok=True)
def network_destroy(ctx: Ctx, net: str) -> str:
    m = ctx.model
    m.get(ctx.pool, "network", net)
    vifs = [
        v
        for v in m.find(ctx.pool, "VIF", network=net)
        if m.get(ctx.pool, "VIF", v)["currently_attached"]
    ]
    if vifs:
        raise XapiError("NETWORK_CONTAINS_VIF", *vifs)
    pifs = m.find(ctx.pool, "PIF", network=net)
    if pifs:
        raise XapiError("NETWORK_CONTAINS_PIF", *pifs)
    for vif in m.find(ctx.pool, "VIF", network=net):
        m.update(ctx.pool, "VIF", vif, network=NULL)
    m.delete(ctx.pool, "network", net)
    return ""


# -- tasks ----------------------------------------------------------------------------------
@call("task.create", ("label", STRING), ("description", STRING))
def task_create(ctx: Ctx, label: str, description: str) -> str:
    ref = ctx.tasks.create(ctx.pool, label)
    ctx.model.update(ctx.pool, "task", ref, name_description=description)
    return ref


@call("task.cancel", ("task", REF))
def task_cancel(ctx: Ctx, task: str) -> str:
    ctx.tasks.cancel(ctx.pool, task)
    return ""


@call("task.destroy", ("self", REF))
def task_destroy(ctx: Ctx, task: str) -> str:
    rec = ctx.model.get(ctx.pool, "task", task)
    if rec["status"] in DONE:
        ctx.model.delete(ctx.pool, "task", task)
    else:  # XAPI marks a running task for destruction when it ends; the simulator drops it
        ctx.tasks.cancel(ctx.pool, task)
    return ""


# -- events ---------------------------------------------------------------------------------
@call("event.from", ("classes", SET), ("token", STRING), ("timeout", FLOAT))
def event_from(ctx: Ctx, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
    m = ctx.model
    try:
        since = int(token.split(",")[0]) if token else None
    except ValueError:
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None
    wanted = [c.lower() for c in classes]

    def matches(cls: str, ref: str) -> bool:
        return any(w in ("*", cls) or w == f"{cls}/{ref}".lower() for w in wanted)

    classes_by_lower = {c.lower(): c for c in SCHEMA}
    wall_deadline = time.monotonic() + max(0.0, timeout)
    sim_deadline = m.clock.now() + max(0.0, timeout)
    while True:
        last = m.next_event - 1
        if since is None:
            events = [
                {
                    "id": str(last),
                    "timestamp": f"{m.clock.now():.3f}",
                    "class": lower,
                    "operation": "add",
                    "ref": ref,
                    "snapshot": m.render(ctx.pool, cls, ref),
                }
                for lower, cls in classes_by_lower.items()
                if cls != "session"
                for ref, _ in m.all(ctx.pool, cls)
                if matches(lower, ref)
            ]
        else:
            events = [
                {
                    "id": str(e.id),
                    "timestamp": f"{e.timestamp:.3f}",
                    "class": e.cls,
                    "operation": e.operation,
                    "ref": e.ref,
                    "snapshot": e.snapshot,
                }
                for e in m.events
                if e.id > since and e.pool == ctx.pool and matches(e.cls, e.ref)
            ]
        if events or since is None:
            break
        if m.clock.now() >= sim_deadline or time.monotonic() >= wall_deadline:
            break
        since = last
        wait = wall_deadline - time.monotonic()
        m.changed.wait(wait if m.clock.stepped else min(wait, 0.05))
        ctx.tasks.tick()
    counts = {
        c.split("/")[0]: len(list(m.all(ctx.pool, classes_by_lower[c.split("/")[0]])))
        for c in wanted
        if c.split("/")[0] in classes_by_lower
    }
    return {"events": events, "valid_ref_counts": counts, "token": f"{last:020d}"}
