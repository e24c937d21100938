"""The OpenAPI document: a valid OpenAPI 3.1 document (openapi-core validates it), naming every
route of the server, and every request and reply of a session with the real server conforms to
it (openapi-core validates each against the document)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from ferry import Orchestrator
from ferry.model import MigrationRequest
from ferry.serve.schemas import MIGRATION_REQUEST
from tests.serve.conftest import Service
from tests.serve.helpers import Reply, call, read_events


@pytest.fixture
def spec(service: Service) -> OpenAPI:
    reply = call(service.url, "GET", "/api/v1/openapi.json")
    assert reply.status == 200
    return OpenAPI.from_dict(reply.json)  # raises when the document is not valid OpenAPI


def checked(spec: OpenAPI, service: Service, method: str, path: str, **kw: Any) -> Reply:
    """Call the real server; validate the request and its reply against the document."""
    reply = call(service.url, method, path, **kw)
    headers = dict(kw.get("headers") or {})
    if kw.get("token"):
        headers["Authorization"] = f"Bearer {kw['token']}"
    data = kw.get("raw")
    if kw.get("body") is not None:
        data = json.dumps(kw["body"]).encode()
        headers.setdefault("Content-Type", "application/json")
    parts = urlsplit(service.url)
    request = EnvironBuilder(
        path=path, base_url=f"http://{parts.netloc}", method=method, headers=headers, data=data
    ).get_request()
    if reply.status < 400:  # a refused request is refused for not conforming
        spec.validate_request(WerkzeugOpenAPIRequest(request))
    response = Response(reply.body, status=reply.status, headers=reply.headers)
    spec.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))
    return reply


def test_every_route_is_in_the_document(service: Service, spec: OpenAPI) -> None:
    doc = call(service.url, "GET", "/api/v1/openapi.json").json
    routes: dict[str, set[str]] = {}
    for rule in service.server.app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            routes.setdefault(path, set()).update(methods)
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    assert routes == documented


def test_the_request_schema_is_the_request_type() -> None:
    fields = {f.name for f in dataclasses.fields(MigrationRequest)}
    assert set(MIGRATION_REQUEST["properties"]) == fields
    assert MIGRATION_REQUEST["additionalProperties"] is False


def test_a_session_conforms(service: Service, spec: OpenAPI, orch: Orchestrator) -> None:
    op, rd = service.operator, service.reader
    made = checked(
        spec,
        service,
        "POST",
        "/api/v1/migrations",
        token=op,
        body={"instance": "web-1", "not_with": ["web-2"], "overrides": {}},
    )
    mid = made.json["id"]
    service.finished.wait(mid)
    checked(spec, service, "GET", "/api/v1/migrations?status=completed&limit=1", token=rd)
    checked(spec, service, "GET", f"/api/v1/migrations/{mid}", token=rd)
    checked(spec, service, "GET", f"/api/v1/migrations/{mid}/graph?format=json", token=rd)
    checked(spec, service, "GET", f"/api/v1/migrations/{mid}/graph?format=dot", token=rd)
    checked(spec, service, "GET", f"/api/v1/migrations/{mid}/timeline", token=rd)
    checked(spec, service, "GET", "/api/v1/hosts", token=rd)
    checked(spec, service, "POST", f"/api/v1/migrations/{mid}/abort", token=op)  # 409
    checked(spec, service, "POST", f"/api/v1/migrations/{mid}/force-complete", token=op)  # 409
    waiting = orch.create("web-2")
    checked(spec, service, "POST", f"/api/v1/migrations/{waiting}/abort", token=op)
    checked(spec, service, "GET", "/api/v1/migrations/nope", token=rd)  # 404
    checked(spec, service, "GET", "/api/v1/hosts")  # 401
    checked(spec, service, "POST", "/api/v1/migrations", token=rd, body={"instance": "x"})  # 403
    checked(spec, service, "POST", "/api/v1/migrations", token=op, body={"instance": 1})  # 400
    checked(
        spec,
        service,
        "POST",
        "/api/v1/migrations",
        token=op,
        raw=b"x",
        headers={"Content-Type": "text/plain"},
    )  # 415
    checked(
        spec, service, "POST", "/api/v1/migrations", token=op, body={"instance": "x" * 70_000}
    )  # 413
    events = read_events(
        service.url,
        rd,
        f"?migration={mid}",
        until=lambda e: e["data"].get("status") in ("completed", "failed"),
    )
    assert events
    request = EnvironBuilder(
        path=f"/api/v1/events?migration={mid}",
        base_url=service.url,
        headers={"Authorization": f"Bearer {rd}"},
    ).get_request()
    spec.validate_request(WerkzeugOpenAPIRequest(request))


def test_a_hosts_and_drains_session_conforms(service: Service, spec: OpenAPI) -> None:
    op, rd = service.operator, service.reader
    disable = "/api/v1/hosts/compute-5/disable"
    checked(spec, service, "POST", disable, token=op, body={"reason": "psu"})
    checked(spec, service, "POST", disable, token=op, body={"reason": 1})  # 400
    checked(spec, service, "POST", "/api/v1/hosts/nope/disable", token=op, body={})  # 404
    checked(spec, service, "POST", "/api/v1/hosts/compute-5/enable", token=op)
    checked(spec, service, "POST", "/api/v1/hosts/compute-5/enable", token=rd)  # 403
    drain = {"host": "compute-4", "max_parallel": 1, "order": "name", "reason": "bios"}
    checked(spec, service, "POST", "/api/v1/drains", token=op, body={**drain, "dry_run": True})
    made = checked(spec, service, "POST", "/api/v1/drains", token=op, body=drain)
    assert made.status == 202
    drain_id = made.json["id"]
    checked(spec, service, "POST", "/api/v1/drains", token=op, body=drain)  # 409
    checked(spec, service, "POST", "/api/v1/hosts/compute-4/enable", token=op)  # 409
    checked(spec, service, "POST", "/api/v1/drains", token=op, body={"host": 4})  # 400
    checked(spec, service, "GET", "/api/v1/drains", token=rd)
    checked(spec, service, "GET", f"/api/v1/drains/{drain_id}", token=rd)
    checked(spec, service, "GET", "/api/v1/drains/nope", token=rd)  # 404
    checked(spec, service, "POST", f"/api/v1/drains/{drain_id}/abort", token=op)
    checked(spec, service, "POST", "/api/v1/drains/nope/abort", token=op)  # 404
    checked(spec, service, "GET", "/api/v1/drains")  # 401
