"""``XapiSimulator``: one threaded XML-RPC server per pool master on 127.0.0.1, all answering from
one model under one lock, plus the inspection and fault-injection API the tests use."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import xmlrpc.client
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from tests.xapisim.calls import REGISTRY, Call, Ctx, check_type
from tests.xapisim.clock import SimClock, WallClock
from tests.xapisim.model import NULL, Fault, Model, XapiError
from tests.xapisim.scenario import build
from tests.xapisim.tasks import DONE, Tasks

log = logging.getLogger(__name__)

PASSWORD_ENV = "FERRY_XENAPI_PASSWORD"

FAULT_KINDS = {
    "host_short_of_memory": "host",
    "vdi_not_in_map": "vm",
    "mirror_failed": "vm",
    "task_fails": "vm",
}


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ()  # any path, as XAPI

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class _PoolMaster:
    """The XML-RPC instance behind one pool's port."""

    def __init__(self, sim: XapiSimulator, pool: str) -> None:
        self.sim = sim
        self.pool = pool

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        return self.sim._handle(self.pool, method, list(params))


class XapiSimulator:
    """A fake XenServer: pools of hosts, VMs, storage and networks behind XAPI's XML-RPC."""

    def __init__(
        self, scenario: dict[str, Any] | None = None, clock: SimClock | None = None
    ) -> None:
        self.clock: SimClock | WallClock = clock if clock is not None else WallClock()
        self.model = Model(self.clock, "", "")
        with self.model.lock:
            build(self.model, scenario)
        self._tasks = Tasks(self.model)
        self._servers: dict[str, tuple[_Server, threading.Thread]] = {}
        self.clock.subscribe(self._on_clock)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, ports: dict[str, int] | None = None) -> XapiSimulator:
        """Serve every pool master on 127.0.0.1 (``ports[pool]``, default ephemeral)."""
        for pool in self.model.pools:
            if pool in self._servers:
                continue
            server = _Server(
                ("127.0.0.1", (ports or {}).get(pool, 0)),
                requestHandler=_Handler,
                logRequests=False,
                allow_none=False,
            )
            server.register_instance(_PoolMaster(self, pool))
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"xapisim-{pool}",
                daemon=True,
            )
            thread.start()
            self._servers[pool] = (server, thread)
            with self.model.lock:
                self.model.urls[pool] = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        for server, thread in self._servers.values():
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def __enter__(self) -> XapiSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, pool: str) -> str:
        with self.model.lock:
            if pool not in self.model.urls:
                raise KeyError(f"pool {pool!r} is not served (started? known: {self.model.pools})")
            return self.model.urls[pool]

    @property
    def username(self) -> str:
        return self.model.username

    @property
    def password(self) -> str:
        return self.model.password

    def host_configs(self, password_env: str = PASSWORD_ENV) -> list[dict[str, Any]]:
        """ferry ``[[hosts]]`` entries for every XAPI host (see README: the agreed keys)."""
        m = self.model
        with m.lock:
            return [
                {
                    "name": rec["name_label"],
                    "driver": "xenapi",
                    "url": self.url(pool),
                    "username": m.username,
                    "password_env": password_env,
                    "verify_tls": False,
                    "host": rec["name_label"],
                    "pool": pool,
                }
                for pool in m.pools
                for _, rec in m.all(pool, "host")
            ]

    def ferry_config(self, password_env: str = PASSWORD_ENV) -> str:
        """A ferry TOML config with :meth:`host_configs` (the password stays in the env var)."""
        out = ["# ferry hosts served by the XAPI simulator (python -m tests.xapisim)"]
        for entry in self.host_configs(password_env):
            out.append("\n[[hosts]]")
            for key, value in entry.items():
                text = "false" if value is False else json.dumps(value)
                out.append(f"{key} = {text}")
        return "\n".join(out) + "\n"

    # -- inspection -----------------------------------------------------------------------
    @property
    def calls(self) -> list[tuple[str, str]]:
        with self.model.lock:
            return list(self.model.calls)

    def session_ids(self) -> list[str]:
        with self.model.lock:
            return list(self.model.issued_sessions)

    def vms_named(self, name: str) -> list[tuple[str, str | None, str]]:
        """Every VM record called ``name``: (pool, host name or None, power_state)."""
        m = self.model
        with m.lock:
            out = []
            for pool in m.pools:
                for ref in m.find(pool, "VM", name_label=name):
                    rec = m.get(pool, "VM", ref)
                    host = rec["resident_on"]
                    label = m.get(pool, "host", host)["name_label"] if host != NULL else None
                    out.append((pool, label, rec["power_state"]))
            return out

    def vm_location(self, name: str) -> tuple[str, str] | None:
        """(pool, host) where the VM called ``name`` is resident, or None."""
        for pool, host, _ in self.vms_named(name):
            if host is not None:
                return pool, host
        return None

    def leftovers(self, pool: str, host: str | None = None) -> list[str]:
        """Networks, SRs and PBDs created through the API on ``pool`` that still exist."""
        m = self.model
        out = []
        with m.lock:
            for ref in m.created_by_api:
                where = m.locate(ref)
                if where is None or where[0] != pool:
                    continue
                cls = where[1]
                rec = m.get(pool, cls, ref)
                if cls == "PBD":
                    host_name = m.get(pool, "host", rec["host"])["name_label"]
                    if host is None or host == host_name:
                        sr = m.tables[pool]["SR"].get(rec["SR"], {}).get("name_label", rec["SR"])
                        out.append(f"PBD:{sr}@{host_name}")
                else:
                    out.append(f"{cls}:{rec['name_label']}")
        return sorted(out)

    def tasks(self, pool: str | None = None) -> list[dict[str, Any]]:
        """Task records (wire form plus ``ref`` and ``pool``)."""
        m = self.model
        with m.lock:
            return [
                {**m.render(p, "task", ref), "ref": ref, "pool": p}
                for p in ([pool] if pool else m.pools)
                for ref, _ in m.all(p, "task")
            ]

    # -- faults ---------------------------------------------------------------------------
    def inject(
        self,
        kind: str,
        *,
        host: str | None = None,
        vm: str | None = None,
        at: float = 0.5,
        code: str = "VM_MIGRATE_FAILED",
    ) -> None:
        """Arm a fault (see README); it stays until :meth:`clear_faults`."""
        target = FAULT_KINDS.get(kind)
        if target is None:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if (target == "host" and not host) or (target == "vm" and not vm):
            raise ValueError(f"fault {kind!r} needs {target}=")
        if not 0.0 <= at <= 1.0:
            raise ValueError("at must be a progress between 0 and 1")
        with self.model.lock:
            self.model.faults.append(Fault(kind, host=host, vm=vm, at=at, code=code))
            self._tasks.tick()

    def clear_faults(self) -> None:
        with self.model.lock:
            self.model.faults.clear()

    def invalidate_sessions(self, pool: str | None = None) -> None:
        with self.model.lock:
            self.model.invalidate_sessions(pool)

    # -- request handling -----------------------------------------------------------------
    def _on_clock(self) -> None:
        with self.model.lock:
            self._tasks.tick()
            self.model.changed.notify_all()

    def _handle(self, pool: str, method: str, params: list[Any]) -> dict[str, Any]:
        with self.model.lock:
            self.model.calls.append((pool, method))
            try:
                self._tasks.tick()
                return {"Status": "Success", "Value": self._invoke(pool, method, params)}
            except XapiError as exc:
                return {"Status": "Failure", "ErrorDescription": exc.description}
            except Exception as exc:  # a simulator bug; still answer in XAPI's shape
                log.exception("xapisim: %s failed", method)
                return {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", repr(exc)]}

    def _invoke(self, pool: str, method: str, params: list[Any]) -> Any:
        is_async = method.startswith("Async.")
        c = REGISTRY.get(method[len("Async.") :] if is_async else method)
        if c is None or (is_async and not (c.async_ok or c.long)):
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        session, args = (params[0] if params else None, params[1:]) if c.session else (None, params)
        total = len(c.params)
        if not total - c.optional <= len(args) <= total:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, total, len(args))
        for (name, kind), value in zip(c.params, args, strict=False):
            check_type(name, kind, value)
        if c.session:
            self.model.check_session(pool, session)
        ctx = Ctx(self.model, self._tasks, pool, session or "")
        if is_async:
            return self._run_async(ctx, c, method, args)
        if c.long:
            return self._run_and_wait(ctx, c, method, args)
        return c.fn(ctx, *args)

    def _run_async(self, ctx: Ctx, c: Call, method: str, args: list[Any]) -> str:
        task = self._tasks.create(ctx.pool, method, cancellable=c.long)
        try:
            if c.long:
                self._tasks.start(ctx.pool, task, c.fn(ctx, *args))
            else:
                self._tasks.succeed(ctx.pool, task, c.fn(ctx, *args))
        except XapiError as exc:
            self._tasks.fail(ctx.pool, task, exc)
        return task

    def _run_and_wait(self, ctx: Ctx, c: Call, method: str, args: list[Any]) -> Any:
        """A synchronous long call: blocks until its task ends (the clock must move)."""
        m = self.model
        plan = c.fn(ctx, *args)
        task = self._tasks.create(ctx.pool, method, cancellable=True)
        self._tasks.start(ctx.pool, task, plan)
        while m.get(ctx.pool, "task", task)["status"] not in DONE:
            m.changed.wait(0.5 if m.clock.stepped else 0.05)
            self._tasks.tick()
        rec = m.get(ctx.pool, "task", task)
        m.delete(ctx.pool, "task", task)
        if rec["status"] == "cancelled":
            raise XapiError("TASK_CANCELLED", task)
        if rec["status"] == "failure":
            raise XapiError(*rec["error_info"])
        param = f"<params><param>{rec['result']}</param></params>"
        return xmlrpc.client.loads(f"<methodResponse>{param}</methodResponse>")[0][0]
