"""The JSON Schemas (2020-12, the dialect of OpenAPI 3.1) that validate request bodies and
describe responses. The OpenAPI document (:mod:`ferry.serve.openapi`) embeds these same
objects, so the document cannot drift from what the server accepts.

jsonschema (a well-kept implementation of the standard) validates; a test keeps
:data:`MIGRATION_REQUEST` equal to the fields of :class:`ferry.model.MigrationRequest`.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from ferry.model import MigrationRequest, MigrationStatus
from ferry.model.drain import ORDERS, DrainStatus

_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
_OPT_NAME = {"type": ["string", "null"], "minLength": 1, "maxLength": 255}

MIGRATION_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "A live migration request (ferry.model.MigrationRequest).",
    "additionalProperties": False,
    "required": ["instance"],
    "properties": {
        "instance": {**_NAME, "description": "The instance's name or UUID."},
        "destination": {**_OPT_NAME, "description": "Force this host (checks still run)."},
        "block_migration": {"type": ["boolean", "null"]},
        "max_attempts": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000},
        "overrides": {
            "type": "object",
            "description": (
                "[migration] and [libvirt] settings for this run, e.g. live_migration_downtime "
                "or tls."
            ),
            "maxProperties": 64,
        },
        "to_group": _OPT_NAME,
        "not_with": {"type": "array", "items": _NAME, "maxItems": 256},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

STATUS = {"type": "string", "enum": [s.value for s in MigrationStatus]}

MIGRATION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "instance", "history"],
    "properties": {
        "id": {"type": "string"},
        "status": STATUS,
        "instance": {"type": "string"},
        "instance_uuid": {"type": "string"},
        "source": {"type": ["string", "null"]},
        "destination": {"type": ["string", "null"]},
        "requested_destination": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "leftovers": {"type": "array", "items": {"type": "string"}},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "block_migration": {"type": ["boolean", "null"]},
        "attempts": {"type": "array", "items": {"type": "object"}},
        "phases": {"type": "array", "items": {"type": "object"}},
        "history": {"type": "array", "items": {"type": "object"}},
        "progress": {"type": "object"},
        "transfer_started_at": {"type": ["number", "null"]},
    },
}

ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": STATUS},
}

MIGRATION_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["migrations", "next"],
    "properties": {
        "migrations": {"type": "array", "items": MIGRATION},
        "next": {"type": ["string", "null"], "description": "The URL of the next page."},
    },
}

HOST: dict[str, Any] = {
    "type": "object",
    "required": ["name", "enabled"],
    "properties": {
        "name": {"type": "string"},
        "enabled": {"type": "boolean"},
        "up": {"type": "boolean"},
        "drain": {"type": ["string", "null"], "description": "The drain that disabled it."},
        "disabled_reason": {"type": ["string", "null"]},
    },
}
HOSTS: dict[str, Any] = {"type": "array", "items": HOST}

_REASON = {"type": ["string", "null"], "maxLength": 1024}

HOST_DISABLE: dict[str, Any] = {
    "type": "object",
    "description": "Why the host is disabled for scheduling.",
    "additionalProperties": False,
    "properties": {"reason": _REASON},
}

DRAIN_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "Empty a host with live migrations (Orchestrator.drain).",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {
        "host": _NAME,
        "max_parallel": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "to": {**_OPT_NAME, "description": "Every guest to this host."},
        "to_group": _OPT_NAME,
        "order": {"type": "string", "enum": list(ORDERS)},
        "reason": _REASON,
        "dry_run": {"type": "boolean", "description": "Plan only: nothing is recorded."},
    },
}

DRAIN: dict[str, Any] = {
    "type": "object",
    "required": ["id", "host", "status", "guests"],
    "properties": {
        "id": {"type": "string"},
        "host": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in DrainStatus]},
        "reason": {"type": ["string", "null"]},
        "options": {"type": "object"},
        "counts": {"type": "object"},
        "guests": {"type": "array", "items": {"type": "object"}},
    },
}

DRAIN_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["drains"],
    "properties": {"drains": {"type": "array", "items": DRAIN}},
}

DRAIN_PLAN: dict[str, Any] = {
    "type": "object",
    "required": ["host", "plan"],
    "properties": {
        "host": {"type": "string"},
        "plan": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["instance", "destination", "skipped"],
                "properties": {
                    "instance": {"type": "string"},
                    "destination": {"type": ["string", "null"]},
                    "skipped": {"type": ["string", "null"]},
                    "reasons": {"type": "object"},
                },
            },
        },
    },
}

DRAIN_ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": DRAIN["properties"]["status"]},
}
TIMELINE: dict[str, Any] = {"type": "array", "items": {"type": "object"}}

#: the request bodies' validators
REQUEST_VALIDATOR = Draft202012Validator(MIGRATION_REQUEST)
DRAIN_VALIDATOR = Draft202012Validator(DRAIN_REQUEST)
DISABLE_VALIDATOR = Draft202012Validator(HOST_DISABLE)


def request_errors(body: Any, validator: Draft202012Validator = REQUEST_VALIDATOR) -> list[str]:
    """Why ``body`` is not a valid body (a migration request by default; empty: it is)."""
    out = []
    for err in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.path]):
        where = "/".join(str(p) for p in err.path) or "body"
        out.append(f"{where}: {err.message}")
    return out


def to_request(body: dict[str, Any]) -> MigrationRequest:
    """The request of a body that passed :func:`request_errors`."""
    return MigrationRequest.from_dict(
        {"overrides": {}, "not_with": [], **{k: v for k, v in body.items() if v is not None}}
    )
