"""The Flask application of ``ferry web``: GET routes only, everything read from the database.

Pages: ``/`` (migrations and drains), ``/migrations/ID`` (one run: live graph, progress, hosts
tried, timeline) and ``/drains/ID`` (one drain: its guests and its graph, each guest linking to
its migration's page; ``/drains/ID/graph.svg``, ``.dot``, ``.json``; ``/api/drains``,
``/api/drains/ID``). JSON: ``/api/migrations``, ``/api/migrations/ID`` (the export of a run),
``/api/migrations/ID/live`` (what the page refreshes). Graph files: ``/migrations/ID/graph.svg``
(needs Graphviz), ``.dot``, ``.json``.

Only requests that name this machine's loopback in their Host header are answered: a page of
another site whose name a DNS rebinding points at 127.0.0.1 sends its own name, and gets a 400.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request

from ferry import errors
from ferry.model.drain import Drain
from ferry.viz import GraphvizMissing, export_run, run_graph
from ferry.viz.drain import drain_graph
from ferry.viz.output import graph_bytes
from ferry.viz.run import RunStore, RunView
from ferry.web.fragments import drain_row, drain_view, live_view, migration_row

LIST_LIMIT = 200
GRAPH_TYPES = {
    "svg": "image/svg+xml",
    "dot": "text/vnd.graphviz; charset=utf-8",
    "json": "application/json",
}
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
#: the host names a request may give (with any port, or none): the loopback address the server
#: binds (ferry.web.HOST) and the other names of loopback
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_allowed(host: str) -> bool:
    """Whether a Host header (``name`` or ``name:port``) names this machine's loopback."""
    name, port = host.lower(), ""
    if not name.endswith("]") and ":" in name:  # "[::1]" alone has colons but no port
        name, _, port = name.rpartition(":")
        if not (port.isascii() and port.isdigit()):
            return False
    return name in LOOPBACK_NAMES


def create_app(store: RunStore, *, refresh_seconds: float = 1.0) -> Flask:
    """The read-only web app over ``store``; pages refresh every ``refresh_seconds``."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    refresh_ms = max(100, int(refresh_seconds * 1000))

    def load(migration_id: str) -> RunView:
        try:
            return store.load(migration_id)
        except errors.MigrationNotFound:
            abort(404, f"migration {migration_id} not found")

    @app.before_request
    def loopback_only() -> Response | None:
        if host_allowed(request.host):
            return None
        return Response(
            "ferry web: wrong Host header; open the page at 127.0.0.1\n", 400, mimetype="text/plain"
        )

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def load_drain(drain_id: str) -> Drain:
        try:
            return store.drains.get(drain_id)
        except errors.DrainNotFound:
            abort(404, f"drain {drain_id} not found")

    @app.get("/")
    def index() -> str:
        rows = [migration_row(m) for m in store.list(limit=LIST_LIMIT)]
        drains = [drain_row(d) for d in store.drains.list()[:LIST_LIMIT]]
        return render_template("index.html", rows=rows, drains=drains, refresh_ms=refresh_ms)

    @app.get("/drains/<drain_id>")
    def drain(drain_id: str) -> str:
        view = drain_view(load_drain(drain_id))
        return render_template("drain.html", drain=view, refresh_ms=refresh_ms)

    @app.get("/api/drains")
    def api_drains() -> Response:
        return jsonify([drain_row(d) for d in store.drains.list()[:LIST_LIMIT]])

    @app.get("/api/drains/<drain_id>")
    def api_drain(drain_id: str) -> Response:
        return jsonify(load_drain(drain_id).to_dict())

    @app.get("/drains/<drain_id>/graph.<fmt>")
    def drain_graph_file(drain_id: str, fmt: str) -> Any:
        if fmt not in GRAPH_TYPES:
            abort(404)
        try:
            data = graph_bytes(drain_graph(load_drain(drain_id)), fmt)
        except GraphvizMissing as exc:
            abort(404, str(exc))
        return Response(data, mimetype=GRAPH_TYPES[fmt])

    @app.get("/api/migrations")
    def api_list() -> Response:
        return jsonify([migration_row(m) for m in store.list(limit=LIST_LIMIT)])

    @app.get("/migrations/<migration_id>")
    def migration(migration_id: str) -> str:
        live = live_view(load(migration_id))
        return render_template("migration.html", run=live, refresh_ms=refresh_ms)

    @app.get("/api/migrations/<migration_id>/live")
    def api_live(migration_id: str) -> Response:
        return jsonify(live_view(load(migration_id)))

    @app.get("/api/migrations/<migration_id>")
    def api_export(migration_id: str) -> Response:
        return jsonify(export_run(load(migration_id)))

    @app.get("/migrations/<migration_id>/graph.<fmt>")
    def graph_file(migration_id: str, fmt: str) -> Any:
        if fmt not in GRAPH_TYPES:
            abort(404)
        try:
            data = graph_bytes(run_graph(load(migration_id)), fmt)
        except GraphvizMissing as exc:
            abort(404, str(exc))
        return Response(data, mimetype=GRAPH_TYPES[fmt])

    return app
