"""The XAPI simulator, driven by the real XenAPI SDK (and raw XML-RPC where the envelope matters).

Time is a SimClock: tasks move only when a test advances it; nothing here sleeps.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
import tomllib
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from ferry.config import parse_settings
from tests.xapisim import SimClock, XapiSimulator, filter as dbfilter

GIB = 1024**3


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def xsim(clock: SimClock) -> Iterator[XapiSimulator]:
    with XapiSimulator(clock=clock) as s:
        yield s


def login(sim: XapiSimulator, pool: str) -> Any:
    session = XenAPI.Session(sim.url(pool))
    session.xenapi.login_with_password(sim.username, sim.password, "1.0", "ferry-tests")
    return session.xenapi


@pytest.fixture
def a(xsim: XapiSimulator) -> Any:
    return login(xsim, "pool-a")


@pytest.fixture
def b(xsim: XapiSimulator) -> Any:
    return login(xsim, "pool-b")


def failure(fn: Callable[..., Any], *args: Any) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def raw(sim: XapiSimulator, pool: str) -> Any:
    return xmlrpc.client.ServerProxy(sim.url(pool), allow_none=True)


def raw_login(sim: XapiSimulator, pool: str) -> str:
    reply = getattr(raw(sim, pool), "session.login_with_password")(sim.username, sim.password)
    return reply["Value"]


def vm(x: Any, name: str) -> str:
    (ref,) = x.VM.get_by_name_label(name)
    return ref


def host(x: Any, name: str) -> str:
    (ref,) = x.host.get_by_name_label(name)
    return ref


def result_ref(x: Any, task: str) -> Any:
    body = f"<params><param>{x.task.get_result(task)}</param></params>"
    return xmlrpc.client.loads(f"<methodResponse>{body}</methodResponse>")[0][0]


def cross_pool_args(a: Any, b: Any, name: str) -> tuple[str, dict[str, str], dict, dict]:
    """What a driver passes to migrate_send for ``name`` -> xs-b1: every disk to local-b1,
    every VIF to mgmt-b."""
    ref = vm(a, name)
    dest_host = host(b, "xs-b1")
    (mgmt,) = b.PIF.get_all_records_where(
        f'field "management"="true" and field "host"="{dest_host}"'
    ).values()
    dest = b.host.migrate_receive(dest_host, mgmt["network"], {})
    (sr,) = b.SR.get_by_name_label("local-b1")
    vdi_map = {}
    for vbd in a.VM.get_VBDs(ref):
        rec = a.VBD.get_record(vbd)
        if rec["type"] != "CD":
            vdi_map[rec["VDI"]] = sr
    vif_map = {vif: mgmt["network"] for vif in a.VM.get_VIFs(ref)}
    return ref, dest, vdi_map, vif_map


# -- wire format ------------------------------------------------------------------------------
def test_envelopes_void_and_errors_are_xapi_shaped(xsim: XapiSimulator) -> None:
    proxy = raw(xsim, "pool-a")
    bad = getattr(proxy, "session.login_with_password")("root", "wrong")
    assert bad == {
        "Status": "Failure",
        "ErrorDescription": ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"],
    }
    session = raw_login(xsim, "pool-a")
    assert session.startswith("OpaqueRef:")
    assert getattr(proxy, "VM.get_all_things")(session) == {
        "Status": "Failure",
        "ErrorDescription": ["MESSAGE_METHOD_UNKNOWN", "VM.get_all_things"],
    }
    assert getattr(proxy, "VM.get_record")(session)["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_record",
        "1",
        "0",
    ]
    assert getattr(proxy, "VM.get_record")(session, "OpaqueRef:gone") == {
        "Status": "Failure",
        "ErrorDescription": ["HANDLE_INVALID", "VM", "OpaqueRef:gone"],
    }
    assert getattr(proxy, "VM.get_by_uuid")(session, "no-such")["ErrorDescription"] == [
        "UUID_INVALID",
        "VM",
        "no-such",
    ]
    web = getattr(proxy, "VM.get_by_name_label")(session, "web-1")["Value"][0]
    xs_a1 = getattr(proxy, "host.get_by_name_label")(session, "xs-a1")["Value"][0]
    void = getattr(proxy, "VM.assert_can_boot_here")(session, web, xs_a1)
    assert void == {"Status": "Success", "Value": ""}
    # a bool parameter must be a real <boolean>
    typed = getattr(proxy, "VM.assert_can_migrate")(session, web, {}, "true", {}, {}, {})
    assert typed["ErrorDescription"] == ["FIELD_TYPE_ERROR", "live"]


def test_int64_as_strings_null_refs_and_dates(xsim: XapiSimulator, a: Any) -> None:
    web = a.VM.get_record(vm(a, "web-1"))
    assert web["memory_static_max"] == str(2 * GIB)
    assert web["power_state"] == "Running"
    assert web["affinity"].startswith("OpaqueRef:")
    old = a.VM.get_record(vm(a, "old-1"))
    assert old["resident_on"] == "OpaqueRef:NULL"
    assert old["domid"] == "-1"
    metrics = a.host_metrics.get_record(a.host.get_metrics(host(a, "xs-a1")))
    assert metrics["memory_total"] == str(64 * GIB)
    # 64 GiB - 512 MiB overhead - dom0 4 GiB - web-1 2 GiB - db-1 4 GiB
    assert int(metrics["memory_free"]) == 64 * GIB - 512 * 2**20 - 10 * GIB
    assert a.host.compute_free_memory(host(a, "xs-a1")) == metrics["memory_free"]
    assert a.PIF.get_all_records()[a.PIF.get_all()[0]]["VLAN"] == "-1"
    task = a.Async.VM.assert_can_boot_here(vm(a, "web-1"), host(a, "xs-a2"))
    created = a.task.get_created(task)
    assert isinstance(created, xmlrpc.client.DateTime)
    assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", created.value)
    assert a.task.get_result(task) == "<value></value>"


def test_large_ints_never_leave_as_xmlrpc_ints(xsim: XapiSimulator) -> None:
    session = raw_login(xsim, "pool-a")
    web = getattr(raw(xsim, "pool-a"), "VM.get_by_name_label")(session, "web-1")["Value"][0]
    body = xmlrpc.client.dumps((session, web), "VM.get_record")
    conn = http.client.HTTPConnection(xsim.url("pool-a").removeprefix("http://"))
    conn.request("POST", "/", body, {"Content-Type": "text/xml"})
    reply = conn.getresponse()
    text = reply.read().decode()
    assert reply.status == 200
    assert "<i4>" not in text and "<int>" not in text and "<nil/>" not in text
    assert f"<string>{2 * GIB}</string>" in text


def test_sdk_reports_missing_login_as_fault_401(xsim: XapiSimulator) -> None:
    session = XenAPI.Session(xsim.url("pool-a"))
    with pytest.raises(xmlrpc.client.Fault) as info:
        session.xenapi.VM.get_all()
    assert info.value.faultCode == 401


def test_sdk_api_version_and_this_host(xsim: XapiSimulator) -> None:
    session = XenAPI.Session(xsim.url("pool-b"))
    session.xenapi.login_with_password(xsim.username, xsim.password)
    assert session.API_version == "2.21"
    this_host = session.xenapi.session.get_this_host(session.handle)
    assert session.xenapi.host.get_name_label(this_host) == "xs-b1"


# -- sessions ---------------------------------------------------------------------------------
def test_session_invalid_then_sdk_logs_in_again(xsim: XapiSimulator, a: Any) -> None:
    old = xsim.session_ids()[-1]
    xsim.invalidate_sessions("pool-a")
    reply = getattr(raw(xsim, "pool-a"), "VM.get_all")(old)
    assert reply["ErrorDescription"] == ["SESSION_INVALID", old]
    logins = xsim.calls.count(("pool-a", "session.login_with_password"))
    assert len(a.VM.get_all()) == 7  # 5 guests and 2 control domains
    assert xsim.calls.count(("pool-a", "session.login_with_password")) == logins + 1
    assert len(xsim.session_ids()) == 2


def test_sessions_belong_to_their_pool_and_logout_ends_them(xsim: XapiSimulator) -> None:
    session = raw_login(xsim, "pool-a")
    assert getattr(raw(xsim, "pool-b"), "host.get_all")(session)["ErrorDescription"] == [
        "SESSION_INVALID",
        session,
    ]
    proxy = raw(xsim, "pool-a")
    assert getattr(proxy, "session.logout")(session) == {"Status": "Success", "Value": ""}
    assert getattr(proxy, "host.get_all")(session)["ErrorDescription"][0] == "SESSION_INVALID"
    assert session in xsim.session_ids()


# -- get_all_records_where -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "tree"),
    [
        ('field "a"="1"', ("eq", dbfilter.Field("a"), dbfilter.Literal("1"))),
        ("true and false or true", ("or", ("and", ("true",), ("false",)), ("true",))),
        ("true or false and false", ("and", ("or", ("true",), ("false",)), ("false",))),
        ("not true and false", ("not", ("and", ("true",), ("false",)))),
        ("false or not true or true", ("or", ("false",), ("not", ("or", ("true",), ("true",))))),
        ("(not true) and false", ("and", ("not", ("true",)), ("false",))),
        ('"x"=field "y"', ("eq", dbfilter.Literal("x"), dbfilter.Field("y"))),
    ],
)
def test_filter_grammar_follows_xapi_precedence(expr: str, tree: tuple) -> None:
    assert dbfilter.parse(expr) == tree


@pytest.mark.parametrize("expr", ["", 'field "a"', 'field "a"="b" and', "(true", "maybe", "true)"])
def test_filter_grammar_rejects(expr: str) -> None:
    with pytest.raises(dbfilter.FilterSyntaxError):
        dbfilter.parse(expr)


def test_get_all_records_where_over_the_wire(xsim: XapiSimulator, a: Any) -> None:
    xs_a2 = host(a, "xs-a2")
    pifs = a.PIF.get_all_records_where(f'field "management"="true" and field "host"="{xs_a2}"')
    assert [p["IP"] for p in pifs.values()] == ["10.0.1.12"]
    assert len(a.PIF.get_all_records_where('field "management"="true"')) == 2
    names = {
        r["name_label"]
        for r in a.VM.get_all_records_where(
            'field "is_control_domain"="false" and not field "power_state"="Halted"'
        ).values()
    }
    assert names == {"web-1", "db-1", "api-1", "vol-1"}
    either = a.VM.get_all_records_where(
        'field "name__label"="web-1" or field "name__label"="api-1"'
    )
    assert sorted(r["name_label"] for r in either.values()) == ["api-1", "web-1"]
    assert a.SR.get_all_records_where('field "physical_size"="2199023255552"')  # nfs-a, 2 TiB
    assert a.VM.get_all_records_where("false") == {}
    assert failure(a.VM.get_all_records_where, 'field "name_label"=')[:2] == [
        "INVALID_VALUE",
        'field "name_label"=',
    ]
    assert failure(a.VM.get_all_records_where, 'field "no_such"="x"')[0] == "INTERNAL_ERROR"


# -- tasks, progress, cancel ------------------------------------------------------------------
def test_pool_migrate_progresses_with_the_clock_and_keeps_the_ref(
    xsim: XapiSimulator, clock: SimClock, a: Any
) -> None:
    web, xs_a2 = vm(a, "web-1"), host(a, "xs-a2")
    task = a.Async.VM.pool_migrate(web, xs_a2, {"live": "true"})
    a.task.add_to_other_config(task, "ferry_migration", "m-1")
    assert failure(a.task.add_to_other_config, task, "ferry_migration", "m-2") == [
        "MAP_DUPLICATE_KEY",
        "task",
        "other_config",
        task,
        "ferry_migration",
    ]
    assert a.task.get_status(task) == "pending"
    assert a.task.get_progress(task) == 0.0
    assert a.task.get_allowed_operations(task) == ["cancel"]
    assert a.VM.get_current_operations(web) == {task: "pool_migrate"}
    clock.advance(1.0)  # 2 GiB at 1024 MiB/s: half way
    assert a.task.get_progress(task) == 0.5
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a1")
    clock.advance(1.0)
    assert a.task.get_status(task) == "success"
    assert result_ref(a, task) == web
    assert a.VM.get_resident_on(web) == xs_a2
    assert a.VM.get_power_state(web) == "Running"
    assert a.VM.get_current_operations(web) == {}
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a2")
    tagged = [
        ref
        for ref, rec in a.task.get_all_records().items()
        if rec["other_config"].get("ferry_migration") == "m-1"
    ]
    assert tagged == [task]
    found = a.task.get_all_records_where('field "name__label"="Async.VM.pool_migrate"')
    assert list(found) == [task]
    a.task.destroy(task)
    assert failure(a.task.get_status, task) == ["HANDLE_INVALID", "task", task]


def test_a_second_migration_of_a_busy_vm_is_refused(clock: SimClock, a: Any) -> None:
    web = vm(a, "web-1")
    first = a.Async.VM.pool_migrate(web, host(a, "xs-a2"), {"live": "true"})
    second = a.Async.VM.pool_migrate(web, host(a, "xs-a2"), {"live": "true"})
    assert a.task.get_status(second) == "failure"
    assert a.task.get_error_info(second) == [
        "OTHER_OPERATION_IN_PROGRESS",
        "VM",
        web,
        "pool_migrate",
        first,
    ]


def test_cancel_leaves_the_vm_on_the_source(xsim: XapiSimulator, clock: SimClock, a: Any) -> None:
    web = vm(a, "web-1")
    task = a.Async.VM.pool_migrate(web, host(a, "xs-a2"), {"live": "true"})
    clock.advance(1.0)
    assert a.task.cancel(task) == ""
    assert a.task.get_status(task) == "cancelling"
    assert a.task.get_status(task) == "cancelling"  # until the next checkpoint
    clock.advance(0.1)
    assert a.task.get_status(task) == "cancelled"
    assert a.task.get_error_info(task) == []
    clock.advance(10.0)
    assert a.task.get_status(task) == "cancelled"
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a1")
    assert a.VM.get_current_operations(web) == {}


def test_cancel_too_late_is_ignored(xsim: XapiSimulator, clock: SimClock, a: Any) -> None:
    task = a.Async.VM.pool_migrate(vm(a, "web-1"), host(a, "xs-a2"), {"live": "true"})
    clock.advance(1.9)
    assert a.task.get_allowed_operations(task) == []
    a.task.cancel(task)
    assert a.task.get_status(task) == "pending"
    clock.advance(0.1)
    assert a.task.get_status(task) == "success"
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a2")


def test_sync_pool_migrate_blocks_until_the_clock_moves(
    xsim: XapiSimulator, clock: SimClock, a: Any
) -> None:
    web, xs_a2 = vm(a, "web-1"), host(a, "xs-a2")
    out: dict[str, Any] = {}
    worker_api = login(xsim, "pool-a")
    worker = threading.Thread(
        target=lambda: out.update(ref=worker_api.VM.pool_migrate(web, xs_a2, {"live": "true"}))
    )
    worker.start()
    while worker.is_alive():
        clock.advance(0.5)
        worker.join(0.05)
    assert out["ref"] == web
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a2")


def test_event_from_reports_task_progress(xsim: XapiSimulator, clock: SimClock, a: Any) -> None:
    task = a.Async.VM.pool_migrate(vm(a, "web-1"), host(a, "xs-a2"), {"live": "true"})
    first = getattr(a.event, "from")([f"task/{task}"], "", 0.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in first["events"]] == [
        ("task", "add", task)
    ]
    assert first["valid_ref_counts"] == {"task": 1}
    assert first["events"][0]["snapshot"]["status"] == "pending"
    clock.advance(1.0)
    later = getattr(a.event, "from")([f"task/{task}"], first["token"], 0.0)
    assert [e["snapshot"]["progress"] for e in later["events"]] == [0.5]
    assert getattr(a.event, "from")(["task"], later["token"], 0.0)["events"] == []
    # a waiting event.from wakes when the clock moves (the wait is simulated time)
    out: dict[str, Any] = {}
    waiter_api = login(xsim, "pool-a")
    waiter = threading.Thread(
        target=lambda: out.update(
            r=getattr(waiter_api.event, "from")(["task"], later["token"], 30.0)
        )
    )
    waiter.start()
    while waiter.is_alive():
        clock.advance(1.0)
        waiter.join(0.05)
    snapshots = [e["snapshot"] for e in out["r"]["events"] if e["ref"] == task]
    assert snapshots[-1]["status"] == "success"


# -- cross-pool migration ----------------------------------------------------------------------
def test_migrate_receive_hands_out_a_real_destination_session(xsim: XapiSimulator, b: Any) -> None:
    xs_b1 = host(b, "xs-b1")
    (net,) = b.network.get_by_name_label("mgmt-b")
    dest = b.host.migrate_receive(xs_b1, net, {})
    assert set(dest) == {"SM", "xenops", "session_id", "host", "master"}
    assert dest["host"] == xs_b1
    assert dest["session_id"] in xsim.session_ids()
    assert dest["xenops"].endswith(f"?session_id={dest['session_id']}")
    assert dest["master"] == xsim.url("pool-b") + "/"
    proxy = raw(xsim, "pool-b")
    assert getattr(proxy, "host.get_all")(dest["session_id"])["Value"] == [xs_b1]
    no_pif = b.network.create({"name_label": "lonely", "other_config": {}})
    assert failure(b.host.migrate_receive, xs_b1, no_pif, {}) == [
        "HOST_CANNOT_ATTACH_NETWORK",
        xs_b1,
        no_pif,
    ]
    assert ("pool-b", "host.migrate_receive") in xsim.calls


def test_cross_pool_migrate_send_replaces_the_vm_on_the_destination(
    xsim: XapiSimulator, clock: SimClock, a: Any, b: Any
) -> None:
    web, dest, vdi_map, vif_map = cross_pool_args(a, b, "web-1")
    uuid = a.VM.get_uuid(web)
    assert a.VM.assert_can_migrate(web, dest, True, vdi_map, vif_map, {}) == ""
    task = a.Async.VM.migrate_send(web, dest, True, vdi_map, vif_map, {})
    clock.advance(9.0)  # 8 GiB disk at 512 MiB/s + 2 GiB memory at 1024 MiB/s = 18 s
    assert a.task.get_progress(task) == 0.5
    assert xsim.vms_named("web-1") == [("pool-a", "xs-a1", "Running")]
    clock.advance(9.0)
    assert a.task.get_status(task) == "success"
    new = result_ref(a, task)
    assert new != web
    assert xsim.vms_named("web-1") == [("pool-b", "xs-b1", "Running")]
    assert failure(a.VM.get_record, web) == ["HANDLE_INVALID", "VM", web]
    rec = b.VM.get_record(new)
    assert (rec["uuid"], rec["name_label"], rec["resident_on"]) == (uuid, "web-1", dest["host"])
    assert b.VM.get_by_uuid(uuid) == new
    (vbd,) = rec["VBDs"]
    vdi = b.VBD.get_VDI(vbd)
    assert "base_mirror" in b.VDI.get_sm_config(vdi)
    assert b.VDI.remove_from_sm_config(vdi, "base_mirror") == ""
    assert "base_mirror" not in b.VDI.get_sm_config(vdi)
    assert b.VDI.get_SR(vdi) == next(iter(vdi_map.values()))
    (vif,) = rec["VIFs"]
    assert b.VIF.get_network(vif) == next(iter(vif_map.values()))
    assert xsim.leftovers("pool-b") == []


def test_cross_pool_ejects_the_cd_and_needs_no_map_for_it(
    xsim: XapiSimulator, clock: SimClock, a: Any, b: Any
) -> None:
    db, dest, vdi_map, vif_map = cross_pool_args(a, b, "db-1")
    assert len(vdi_map) == 1  # the ISO is not mapped
    task = a.Async.VM.migrate_send(db, dest, True, vdi_map, vif_map, {})
    clock.advance(60.0)
    assert a.task.get_status(task) == "success"
    new = result_ref(a, task)
    vbds = [b.VBD.get_record(v) for v in b.VM.get_VBDs(new)]
    cd = [v for v in vbds if v["type"] == "CD"]
    assert [(v["empty"], v["VDI"]) for v in cd] == [(True, "OpaqueRef:NULL")]


def test_migrate_send_map_checks(xsim: XapiSimulator, a: Any, b: Any) -> None:
    web, dest, vdi_map, vif_map = cross_pool_args(a, b, "web-1")
    (vdi,) = vdi_map
    assert failure(a.VM.assert_can_migrate, web, dest, True, {}, vif_map, {}) == [
        "VDI_NOT_IN_MAP",
        vdi,
    ]
    (vif,) = vif_map
    assert failure(a.VM.assert_can_migrate, web, dest, True, vdi_map, {}, {}) == [
        "VIF_NOT_IN_MAP",
        vif,
    ]
    # an interim network on the destination qualifies only when it says it is shared
    interim = b.network.create({"name_label": "interim", "other_config": {}})
    assert failure(a.VM.assert_can_migrate, web, dest, True, vdi_map, {vif: interim}, {}) == [
        "VM_REQUIRES_NETWORK",
        web,
        interim,
    ]
    b.network.add_to_other_config(interim, "assume_network_is_shared", "true")
    a.VM.assert_can_migrate(web, dest, True, vdi_map, {vif: interim}, {})
    # intra-pool migrate_send: no VIF map allowed
    (net,) = a.network.get_by_name_label("mgmt-a")
    intra = a.host.migrate_receive(host(a, "xs-a2"), net, {})
    (nfs,) = a.SR.get_by_name_label("nfs-a")
    assert (
        failure(a.VM.assert_can_migrate, web, intra, True, {vdi: nfs}, {vif: net}, {})[0]
        == "OPERATION_NOT_ALLOWED"
    )
    a.VM.assert_can_migrate(web, intra, True, {vdi: nfs}, {}, {})
    # a dest whose session died
    xsim.invalidate_sessions("pool-b")
    assert failure(a.VM.assert_can_migrate, web, dest, True, vdi_map, vif_map, {}) == [
        "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    ]


def test_async_errors_land_in_the_task(a: Any) -> None:
    task = a.Async.VM.migrate_send("OpaqueRef:gone", {}, True, {}, {}, {})
    assert a.task.get_status(task) == "failure"
    assert a.task.get_error_info(task) == ["HANDLE_INVALID", "VM", "OpaqueRef:gone"]
    old = vm(a, "old-1")
    task = a.Async.VM.pool_migrate(old, host(a, "xs-a2"), {"live": "true"})
    assert a.task.get_error_info(task) == ["VM_BAD_POWER_STATE", old, "running", "halted"]


# -- faults ------------------------------------------------------------------------------------
def test_host_short_of_memory(xsim: XapiSimulator, a: Any, b: Any) -> None:
    web, dest, vdi_map, vif_map = cross_pool_args(a, b, "web-1")
    xsim.inject("host_short_of_memory", host="xs-b1")
    xs_b1 = host(b, "xs-b1")
    (net,) = b.network.get_by_name_label("mgmt-b")
    assert failure(b.host.migrate_receive, xs_b1, net, {}) == [
        "HOST_NOT_ENOUGH_FREE_MEMORY",
        str(256 * 2**20 + 1),
        str(256 * 2**20),
    ]
    details = failure(a.VM.assert_can_migrate, web, dest, True, vdi_map, vif_map, {})
    assert details == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(2 * GIB), str(256 * 2**20)]
    task = a.Async.VM.migrate_send(web, dest, True, vdi_map, vif_map, {})
    assert a.task.get_error_info(task)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    xsim.inject("host_short_of_memory", host="xs-a2")
    task = a.Async.VM.pool_migrate(web, host(a, "xs-a2"), {"live": "true"})
    assert a.task.get_error_info(task)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    xsim.clear_faults()
    a.VM.assert_can_migrate(web, dest, True, vdi_map, vif_map, {})


def test_vdi_not_in_map_fault(xsim: XapiSimulator, a: Any, b: Any) -> None:
    web, dest, vdi_map, vif_map = cross_pool_args(a, b, "web-1")
    xsim.inject("vdi_not_in_map", vm="web-1")
    assert failure(a.VM.assert_can_migrate, web, dest, True, vdi_map, vif_map, {}) == [
        "VDI_NOT_IN_MAP",
        next(iter(vdi_map)),
    ]


def test_mirror_failed_half_way_changes_nothing(
    xsim: XapiSimulator, clock: SimClock, a: Any, b: Any
) -> None:
    web, dest, vdi_map, vif_map = cross_pool_args(a, b, "web-1")
    xsim.inject("mirror_failed", vm="web-1", at=0.5)
    task = a.Async.VM.migrate_send(web, dest, True, vdi_map, vif_map, {})
    clock.advance(8.9)
    assert a.task.get_status(task) == "pending"
    clock.advance(0.2)
    assert a.task.get_status(task) == "failure"
    assert a.task.get_error_info(task) == ["MIRROR_FAILED", next(iter(vdi_map))]
    assert a.task.get_progress(task) == 0.5
    clock.advance(30.0)
    assert xsim.vms_named("web-1") == [("pool-a", "xs-a1", "Running")]
    assert b.VDI.get_all_records_where('field "name__label"="web-1 disk 0"') == {}


def test_task_fails_half_way_with_the_given_code(
    xsim: XapiSimulator, clock: SimClock, a: Any
) -> None:
    web, xs_a2 = vm(a, "web-1"), host(a, "xs-a2")
    xsim.inject("task_fails", vm="web-1", at=0.5, code="VM_MIGRATE_FAILED")
    task = a.Async.VM.pool_migrate(web, xs_a2, {"live": "true"})
    clock.advance(1.0)
    assert a.task.get_error_info(task) == [
        "VM_MIGRATE_FAILED",
        a.VM.get_uuid(web),
        a.host.get_uuid(host(a, "xs-a1")),
        a.host.get_uuid(xs_a2),
        "simulated failure",
    ]
    assert xsim.vm_location("web-1") == ("pool-a", "xs-a1")
    with pytest.raises(ValueError):
        xsim.inject("disk_on_fire", vm="web-1")


# -- destination preparation and its rollback ------------------------------------------------
def test_volume_and_interim_network_on_the_destination_then_rollback(
    xsim: XapiSimulator, clock: SimClock, a: Any, b: Any
) -> None:
    (src_sr,) = a.SR.get_by_name_label("vol-1-data")
    sr_rec = a.SR.get_record(src_sr)
    device_config = a.PBD.get_device_config(sr_rec["PBDs"][0])
    xs_b1 = host(b, "xs-b1")
    sr = b.SR.introduce(
        sr_rec["uuid"], "vol-1-data", "", sr_rec["type"], sr_rec["content_type"], True, {}
    )
    assert failure(b.SR.introduce, sr_rec["uuid"], "again", "", "lvmoiscsi", "", True, {}) == [
        "SR_UUID_EXISTS",
        sr_rec["uuid"],
    ]
    pbd = b.PBD.create({"host": xs_b1, "SR": sr, "device_config": device_config})
    assert failure(b.SR.scan, sr) == ["SR_HAS_NO_PBDS", sr]
    b.PBD.plug(pbd)
    b.SR.scan(sr)
    (volume,) = b.SR.get_VDIs(sr)
    (src_volume,) = sr_rec["VDIs"]
    assert b.VDI.get_uuid(volume) == a.VDI.get_uuid(src_volume)
    net = b.network.create(
        {
            "name_label": "interim-vif-0",
            "name_description": "",
            "MTU": "1500",
            "other_config": {"assume_network_is_shared": "true"},
        }
    )
    assert xsim.leftovers("pool-b") == [
        "PBD:vol-1-data@xs-b1",
        "SR:vol-1-data",
        "network:interim-vif-0",
    ]
    assert xsim.leftovers("pool-b", "xs-a1") == ["SR:vol-1-data", "network:interim-vif-0"]
    # rollback at the destination
    assert failure(b.SR.forget, sr) == ["SR_HAS_PBD", sr]
    b.PBD.unplug(pbd)
    b.SR.forget(sr)
    b.network.destroy(net)
    assert xsim.leftovers("pool-b") == []
    assert failure(b.SR.get_by_uuid, sr_rec["uuid"]) == ["UUID_INVALID", "SR", sr_rec["uuid"]]


def test_volume_vm_cross_pool_reuses_the_destination_volume(
    xsim: XapiSimulator, clock: SimClock, a: Any, b: Any
) -> None:
    (src_sr,) = a.SR.get_by_name_label("vol-1-data")
    sr_rec = a.SR.get_record(src_sr)
    sr = b.SR.introduce(sr_rec["uuid"], "vol-1-data", "", "lvmoiscsi", "", True, {})
    b.PBD.plug(
        b.PBD.create({"host": host(b, "xs-b1"), "SR": sr, "device_config": {"target": "10.0.9.1"}})
    )
    b.SR.scan(sr)
    ref, dest, vdi_map, vif_map = cross_pool_args(a, b, "vol-1")
    (volume_vdi,) = sr_rec["VDIs"]
    vdi_map[volume_vdi] = sr
    task = a.Async.VM.migrate_send(ref, dest, True, vdi_map, vif_map, {})
    clock.advance(8.9)  # only the 4 GiB nfs disk is copied (8 s), then 1 GiB of memory (1 s)
    assert a.task.get_status(task) == "pending"
    clock.advance(0.1)
    assert a.task.get_status(task) == "success"
    new = result_ref(a, task)
    vdis = {b.VBD.get_VDI(v) for v in b.VM.get_VBDs(new)}
    assert b.SR.get_VDIs(sr)[0] in vdis
    assert xsim.vms_named("vol-1") == [("pool-b", "xs-b1", "Running")]
    # the source still has the volume's SR until the driver forgets it
    assert a.VDI.get_SR(volume_vdi) == src_sr
    assert len(a.SR.get_PBDs(src_sr)) == 2


# -- ferry config --------------------------------------------------------------------------------
def test_ferry_config_lists_every_host_with_the_agreed_keys(xsim: XapiSimulator) -> None:
    text = xsim.ferry_config()
    assert xsim.password not in text
    hosts = tomllib.loads(text)["hosts"]
    assert [(h["name"], h["pool"], h["url"]) for h in hosts] == [
        ("xs-a1", "pool-a", xsim.url("pool-a")),
        ("xs-a2", "pool-a", xsim.url("pool-a")),
        ("xs-b1", "pool-b", xsim.url("pool-b")),
    ]
    assert hosts[0] == {
        "name": "xs-a1",
        "driver": "xenapi",
        "url": xsim.url("pool-a"),
        "username": "root",
        "password_env": "FERRY_XENAPI_PASSWORD",
        "verify_tls": False,
        "host": "xs-a1",
        "pool": "pool-a",
    }
    settings = parse_settings(tomllib.loads(text), "test")
    assert [h.driver for h in settings.hosts] == ["xenapi"] * 3


def test_intra_pool_migrate_send_moves_storage_and_keeps_the_ref(
    xsim: XapiSimulator, clock: SimClock, a: Any
) -> None:
    db = vm(a, "db-1")
    (net,) = a.network.get_by_name_label("mgmt-a")
    dest = a.host.migrate_receive(host(a, "xs-a2"), net, {})
    (local_a2,) = a.SR.get_by_name_label("local-a2")
    (disk,) = [a.VBD.get_VDI(v) for v in a.VM.get_VBDs(db) if a.VBD.get_type(v) == "Disk"]
    task = a.Async.VM.migrate_send(db, dest, True, {disk: local_a2}, {}, {})
    clock.advance(44.0)  # 20 GiB at 512 MiB/s (40 s) + 4 GiB at 1024 MiB/s (4 s)
    assert a.task.get_status(task) == "success"
    assert result_ref(a, task) == db
    assert a.VM.get_resident_on(db) == host(a, "xs-a2")
    (moved,) = [a.VBD.get_VDI(v) for v in a.VM.get_VBDs(db) if a.VBD.get_type(v) == "Disk"]
    assert moved != disk and a.VDI.get_SR(moved) == local_a2
    assert "base_mirror" in a.VDI.get_sm_config(moved)
    assert failure(a.VDI.get_record, disk) == ["HANDLE_INVALID", "VDI", disk]
    # the CD stays in an intra-pool move
    assert [a.VBD.get_empty(v) for v in a.VM.get_VBDs(db) if a.VBD.get_type(v) == "CD"] == [False]


SMALL = {
    "username": "admin",
    "password": "other-pw",
    "migrate_speed_mib_s": 1e9,
    "storage_speed_mib_s": 1e9,
    "pools": {
        "p1": {
            "master": "h1",
            "default_sr": "shared",
            "hosts": {"h1": {"address": "10.9.0.1", "memory_gib": 16}, "h2": {"memory_gib": 8}},
            "srs": {"shared": {"type": "nfs", "shared": True}},
            "networks": {"mgmt": {"management": True}},
            "vms": {
                "big": {"host": "h1", "memory_mib": 6144, "disks": [{"sr": "shared"}]},
                "small": {"host": "h1", "memory_mib": 512, "disks": [{"sr": "shared"}]},
            },
        }
    },
}


def test_custom_scenario_on_wall_time() -> None:
    with XapiSimulator(SMALL) as sim:
        assert sim.username == "admin" and sim.password == "other-pw"
        x = login(sim, "p1")
        h2 = host(x, "h2")
        # 8 GiB - 4 GiB control domain - 512 MiB overhead leaves 3.5 GiB: "big" does not fit
        big = vm(x, "big")
        free = str(8 * GIB - 4 * GIB - 512 * 2**20)
        assert failure(x.VM.assert_can_boot_here, big, h2) == [
            "HOST_NOT_ENOUGH_FREE_MEMORY",
            str(6 * GIB),
            free,
        ]
        task = x.Async.VM.pool_migrate(vm(x, "small"), h2, {"live": "true"})
        statuses = [x.task.get_status(task) for _ in range(50)]  # wall time moves by itself
        assert statuses[-1] == "success"
        assert sim.vm_location("small") == ("p1", "h2")


def test_running_it_by_hand_writes_a_ferry_config(tmp_path: Any) -> None:
    config = tmp_path / "ferry.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.xapisim", "--config-out", str(config)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving"):
                break
        out = "".join(lines)
        assert "export FERRY_XENAPI_PASSWORD='sim-Secret-pw-7f3a'" in out
        url = re.search(r"pool-b: (http://127\.0\.0\.1:\d+)", out)
        assert url is not None
        hosts = tomllib.loads(config.read_text())["hosts"]
        assert hosts[-1]["url"] == url.group(1)
        session = XenAPI.Session(url.group(1))
        session.xenapi.login_with_password("root", "sim-Secret-pw-7f3a")
        assert session.xenapi.VM.get_by_name_label("batch-1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
