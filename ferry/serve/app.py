"""The Flask application of ``ferry serve``: today's web pages (:mod:`ferry.web`), the JSON API
under ``/api/v1``, ``/metrics``; bearer-token checks and JSON errors.

Who may call what: every ``/api/v1`` route and ``/metrics`` need a token (a ``reader`` for
GETs, an ``operator`` for writes) except the OpenAPI document; the web pages need none when the
server listens on loopback only (``pages_open``), a reader's otherwise. No response carries a
traceback; no log line, record or error carries a token.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ferry import errors
from ferry.api import Orchestrator
from ferry.metrics import ProcessCollector
from ferry.serve.metrics import (
    CONTENT_TYPE,
    MigrationCollector,
    exposition,
    rejection_reasons,
)
from ferry.serve.replies import ApiError, error_response, ferry_error
from ferry.serve.routes import make_blueprint
from ferry.serve.tokens import Role, TokenStore
from ferry.serve.workers import Workers
from ferry.viz.run import RunStore
from ferry.web import create_app

LOG = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
_JSON_PREFIXES = ("/api/v1", "/metrics")


def create_service_app(
    orch: Orchestrator,
    workers: Workers,
    *,
    tokens: TokenStore | None = None,
    pages_open: bool = True,
    refresh_seconds: float = 1.0,
    poll_seconds: float = 0.5,
    stopping: threading.Event | None = None,
) -> Flask:
    tokens = tokens if tokens is not None else TokenStore(orch.db)
    app = create_app(RunStore.of(orch), refresh_seconds=refresh_seconds)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    stopping = stopping if stopping is not None else threading.Event()
    app.register_blueprint(
        make_blueprint(orch, workers, stopping=stopping, poll_seconds=poll_seconds)
    )
    collector = MigrationCollector(
        lambda: orch.migrations.list(), _driver_names(orch), lambda: rejection_reasons(orch.db)
    )

    def metrics() -> Response:
        return Response(exposition(collector, ProcessCollector()), content_type=CONTENT_TYPE)

    metrics.ferry_role = Role.READER  # type: ignore[attr-defined]
    app.add_url_rule("/metrics", "metrics", metrics)

    @app.before_request
    def authorize() -> Response | None:
        view = app.view_functions.get(request.endpoint or "")
        if view is None:
            return None  # 404/405 follow
        needed: Role | None = getattr(view, "ferry_role", None)
        if needed is None and not request.path.startswith(_JSON_PREFIXES):
            needed = None if pages_open else Role.READER
        if needed is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        info = tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            resp = error_response(401, "Unauthorized", "a valid bearer token is needed")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="ferry"'
            return resp
        if not info.role.allows(needed):
            return error_response(403, "Forbidden", f"this needs an {needed.value} token")
        g.token_name = info.name
        return None

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(errors.FerryError)
    def ferry_failure(exc: errors.FerryError) -> Response:
        return api_error(ferry_error(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not request.path.startswith(_JSON_PREFIXES):
            return exc
        code = exc.code or 500
        return error_response(code, type(exc).__name__, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        LOG.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
        LOG.debug("details", exc_info=exc)
        return error_response(500, "InternalError", "the server failed; see its log")

    return app


def _driver_names(orch: Orchestrator) -> Any:
    def driver_of(host: str | None) -> str:
        if host is None or not orch.drivers.has_host(host):
            return "unknown"
        return str(orch.drivers.driver_for(host).name)

    return driver_of
