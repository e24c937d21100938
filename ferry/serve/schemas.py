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

HOSTS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
TIMELINE: dict[str, Any] = {"type": "array", "items": {"type": "object"}}

#: the request bodies' validators
REQUEST_VALIDATOR = Draft202012Validator(MIGRATION_REQUEST)


def request_errors(body: Any) -> list[str]:
    """Why ``body`` is not a migration request (empty: it is one)."""
    out = []
    for err in sorted(REQUEST_VALIDATOR.iter_errors(body), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.path) or "body"
        out.append(f"{where}: {err.message}")
    return out


def to_request(body: dict[str, Any]) -> MigrationRequest:
    """The request of a body that passed :func:`request_errors`."""
    return MigrationRequest.from_dict(
        {"overrides": {}, "not_with": [], **{k: v for k, v in body.items() if v is not None}}
    )
