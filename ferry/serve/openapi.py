"""The OpenAPI 3.1 document of ``/api/v1``, built from :mod:`ferry.serve.schemas` (the objects
that validate the request bodies). ``GET /api/v1/openapi.json`` serves it; a test checks every
route of the server against it (openapi-core)."""

from __future__ import annotations

from typing import Any

from ferry.serve import schemas as s

_JSON = "application/json"


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _body({"$ref": "#/components/schemas/Error"}, description)


_ID = {"name": "migration_id", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTH = {"401": _error("No or an unknown token."), "403": _error("The token's role is too low.")}
_MIGRATION = {"$ref": "#/components/schemas/Migration"}


def _read(summary: str, ok: dict[str, Any], *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": list(params),
        "responses": {"200": ok, **_AUTH, "404": _error("Unknown id.")},
    }


def _action(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_ID],
        "responses": {
            "200": _body(_MIGRATION, "The record after the request."),
            **_AUTH,
            "404": _error("Unknown id."),
            "409": _error("Not possible in the migration's status."),
        },
    }


_HOST_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_DRAIN_ID = {"name": "drain_id", "in": "path", "required": True, "schema": {"type": "string"}}
_HOST = {"$ref": "#/components/schemas/Host"}
_DRAIN = {"$ref": "#/components/schemas/Drain"}


def _host_action(summary: str, body: dict[str, Any] | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_HOST_NAME],
        "responses": {
            "200": _body(_HOST, "The host after the request."),
            **({"400": _error("Not a valid body.")} if body else {}),
            **_AUTH,
            "404": _error("Unknown host."),
            "409": _error("A drain of the host is running."),
            **(
                {"413": _error("The body is too large."), "415": _error("The body is not JSON.")}
                if body
                else {}
            ),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    return op


def _drain_paths() -> dict[str, Any]:
    return {
        "/api/v1/hosts/{name}/disable": {
            "post": _host_action(
                "Disable the host for scheduling, with a reason.",
                {"$ref": "#/components/schemas/HostDisable"},
            )
        },
        "/api/v1/hosts/{name}/enable": {
            "post": _host_action("Enable the host again (refused while a drain runs).", None)
        },
        "/api/v1/drains": {
            "get": {
                "summary": "Drains, newest first.",
                "responses": {
                    "200": _body({"$ref": "#/components/schemas/DrainList"}, "Drains."),
                    **_AUTH,
                },
            },
            "post": {
                "summary": "Drain a host (persisted before the reply); dry_run: its plan only.",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/DrainRequest"}}},
                },
                "responses": {
                    "200": _body({"$ref": "#/components/schemas/DrainPlan"}, "The plan."),
                    "202": {
                        **_body({"$ref": "#/components/schemas/DrainAccepted"}, "Accepted."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Not a valid request, or one that cannot be done."),
                    **_AUTH,
                    "409": _error("The host is being drained already."),
                    "413": _error("The body is too large."),
                    "415": _error("The body is not JSON."),
                },
            },
        },
        "/api/v1/drains/{drain_id}": {
            "get": _read("One drain with its guests.", _body(_DRAIN, "The drain."), _DRAIN_ID)
        },
        "/api/v1/drains/{drain_id}/abort": {
            "post": {
                "summary": "Abort: no new migrations; those in flight abort before switchover.",
                "parameters": [_DRAIN_ID],
                "responses": {
                    "200": _body(_DRAIN, "The drain after the request."),
                    **_AUTH,
                    "404": _error("Unknown id."),
                },
            }
        },
    }


def document(version: str) -> dict[str, Any]:
    query = [
        {"name": "status", "in": "query", "schema": s.STATUS},
        {"name": "instance", "in": "query", "schema": {"type": "string"}},
        {"name": "host", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    ]
    fmt = {
        "name": "format",
        "in": "query",
        "schema": {"type": "string", "enum": ["json", "dot", "svg"]},
    }
    events_q = [
        {"name": "migration", "in": "query", "schema": {"type": "string"}},
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "ferry", "version": version, "description": "Live migrations."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "MigrationRequest": s.MIGRATION_REQUEST,
                "Migration": s.MIGRATION,
                "MigrationPage": s.MIGRATION_PAGE,
                "Accepted": s.ACCEPTED,
                "Error": s.ERROR,
                "Host": s.HOST,
                "HostDisable": s.HOST_DISABLE,
                "DrainRequest": s.DRAIN_REQUEST,
                "Drain": s.DRAIN,
                "DrainList": s.DRAIN_LIST,
                "DrainPlan": s.DRAIN_PLAN,
                "DrainAccepted": s.DRAIN_ACCEPTED,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": _body({"type": "object"}, "OpenAPI 3.1.")},
                }
            },
            "/api/v1/migrations": {
                "get": {
                    "summary": "Migrations, newest first.",
                    "parameters": query,
                    "responses": {
                        "200": _body({"$ref": "#/components/schemas/MigrationPage"}, "A page."),
                        "400": _error("A bad filter."),
                        **_AUTH,
                    },
                },
                "post": {
                    "summary": "Accept a live migration (persisted before the reply).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {"schema": {"$ref": "#/components/schemas/MigrationRequest"}}
                        },
                    },
                    "responses": {
                        "202": {
                            **_body({"$ref": "#/components/schemas/Accepted"}, "Accepted."),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "400": _error("Not a valid request, or one that cannot be done."),
                        **_AUTH,
                        "409": _error("The instance is being migrated already."),
                        "413": _error("The body is too large."),
                        "415": _error("The body is not JSON."),
                    },
                },
            },
            "/api/v1/migrations/{migration_id}": {
                "get": _read(
                    "One migration with its phases.", _body(_MIGRATION, "The record."), _ID
                )
            },
            "/api/v1/migrations/{migration_id}/abort": {"post": _action("Abort and revert.")},
            "/api/v1/migrations/{migration_id}/force-complete": {
                "post": _action("Make the transfer finish now.")
            },
            "/api/v1/migrations/{migration_id}/graph": {
                "get": _read(
                    "The flow graph coloured by persisted state.",
                    {
                        "description": "JSON, DOT or SVG.",
                        "content": {
                            _JSON: {"schema": {"type": "object"}},
                            "text/vnd.graphviz": {},
                            "image/svg+xml": {},
                        },
                    },
                    _ID,
                    fmt,
                )
            },
            "/api/v1/migrations/{migration_id}/timeline": {
                "get": _read("Every atom's spans.", _body(s.TIMELINE, "Rows in flow order."), _ID)
            },
            "/api/v1/hosts": {
                "get": {
                    "summary": "Hosts with capacity, usage and claims.",
                    "responses": {"200": _body(s.HOSTS, "Hosts."), **_AUTH},
                }
            },
            **_drain_paths(),
            "/api/v1/events": {
                "get": {
                    "summary": "Server-Sent Events: status (with ids), phase, progress.",
                    "parameters": events_q,
                    "responses": {
                        "200": {
                            "description": "An event stream.",
                            "content": {"text/event-stream": {}},
                        },
                        **_AUTH,
                    },
                }
            },
        },
    }
