"""The JSON API under ``/api/v1`` (a Flask blueprint). Each route names the role it needs;
:mod:`ferry.serve.app` checks the bearer token before the route runs."""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for

from ferry import __version__
from ferry.api import Orchestrator
from ferry.model import Migration
from ferry.serve import schemas
from ferry.serve.events import EventFeed
from ferry.serve.openapi import document
from ferry.serve.replies import ApiError, json_body, needs
from ferry.serve.routes_hosts import add_host_and_drain_routes
from ferry.serve.tokens import Role
from ferry.serve.workers import Workers
from ferry.viz import GraphvizMissing, run_graph, timeline_rows
from ferry.viz.output import graph_bytes
from ferry.viz.run import RunStore

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
GRAPH_TYPES = {
    "json": "application/json",
    "dot": "text/vnd.graphviz; charset=utf-8",
    "svg": "image/svg+xml",
}


def make_blueprint(
    orch: Orchestrator, workers: Workers, *, stopping: threading.Event, poll_seconds: float
) -> Blueprint:
    bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
    store = RunStore.of(orch)

    def record(migration_id: str) -> dict[str, Any]:
        return _migration_json(orch.get(migration_id))

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(document(__version__))

    @bp.post("/migrations")
    @needs(Role.OPERATOR)
    def create() -> Any:
        body = json_body(schemas.REQUEST_VALIDATOR)
        migration_id = workers.accept(schemas.to_request(body))
        status = orch.migrations.get(migration_id).status
        resp = jsonify({"id": migration_id, "status": status})
        resp.status_code = 202
        resp.headers["Location"] = url_for("api_v1.show", migration_id=migration_id)
        return resp

    @bp.get("/migrations")
    @needs(Role.READER)
    def index() -> Response:
        status = request.args.get("status") or None
        instance = request.args.get("instance") or None
        host = request.args.get("host") or None
        limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_arg("offset", 0, 0, None)
        rows = orch.list(status=status)
        if instance is not None:
            rows = [m for m in rows if instance in (m.instance, m.instance_name)]
        if host is not None:
            rows = [m for m in rows if host in (m.source, m.destination)]
        page = rows[offset : offset + limit]
        nxt = None
        if offset + limit < len(rows):
            args: dict[str, Any] = {
                **request.args.to_dict(),
                "offset": offset + limit,
                "limit": limit,
            }
            nxt = url_for("api_v1.index", **args)
        return jsonify({"migrations": [_migration_json(m) for m in page], "next": nxt})

    @bp.get("/migrations/<migration_id>")
    @needs(Role.READER)
    def show(migration_id: str) -> Response:
        return jsonify(record(migration_id))

    @bp.post("/migrations/<migration_id>/abort")
    @needs(Role.OPERATOR)
    def abort(migration_id: str) -> Response:
        return jsonify(_migration_json(orch.abort(migration_id)))

    @bp.post("/migrations/<migration_id>/force-complete")
    @needs(Role.OPERATOR)
    def force_complete(migration_id: str) -> Response:
        return jsonify(_migration_json(orch.force_complete(migration_id)))

    @bp.get("/migrations/<migration_id>/graph")
    @needs(Role.READER)
    def graph(migration_id: str) -> Response:
        fmt = request.args.get("format", "json")
        if fmt not in GRAPH_TYPES:
            raise ApiError(400, "InvalidRequest", f"format: one of {', '.join(GRAPH_TYPES)}")
        try:
            data = graph_bytes(run_graph(store.load(migration_id)), fmt)
        except GraphvizMissing as exc:
            raise ApiError(404, "GraphvizMissing", str(exc)) from None
        return Response(data, mimetype=GRAPH_TYPES[fmt])

    @bp.get("/migrations/<migration_id>/timeline")
    @needs(Role.READER)
    def timeline(migration_id: str) -> Response:
        view = store.load(migration_id)
        return jsonify([row.to_dict() for row in timeline_rows(view)])

    add_host_and_drain_routes(bp, orch, workers)

    @bp.get("/events")
    @needs(Role.READER)
    def events() -> Response:
        last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
        if not last.isdigit():
            raise ApiError(400, "InvalidRequest", "Last-Event-ID: a status event id")
        feed = EventFeed(
            orch.db,
            migration=request.args.get("migration") or None,
            after=int(last),
            poll_seconds=poll_seconds,
            stopping=stopping,
        )
        resp = Response(stream_with_context(feed.stream()), mimetype="text/event-stream")
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    return bp


def _migration_json(m: Migration) -> dict[str, Any]:
    """A record as the API shows it: every field, with the headline's instance name."""
    return {**m.to_dict(), **m.headline()}


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ApiError(400, "InvalidRequest", f"{name}: an integer {bound}")
    return int(raw)
