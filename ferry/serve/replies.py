"""What every route of ``/api/v1`` shares: JSON error replies, typed errors to HTTP statuses,
the checked JSON body, and the mark of the role a route needs."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from ferry import errors
from ferry.serve import schemas
from ferry.serve.tokens import Role

#: a typed error -> (HTTP status, code); anything else a FerryError is 400
STATUS_OF: dict[type[errors.FerryError], int] = {
    errors.MigrationNotFound: 404,
    errors.MigrationInProgress: 409,
    errors.AbortTooLate: 409,
    errors.InvalidMigrationState: 409,
    errors.DrainNotFound: 404,
    errors.HostDraining: 409,
    errors.JobBoardUnavailable: 503,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> Response:
    resp = jsonify({"error": {"code": code, "message": " ".join(message.split())}})
    resp.status_code = status
    return resp


def json_body(validator: Any) -> Any:
    """The request's JSON body, checked by ``validator`` (a schema's validator): 415 unless it
    is sent as JSON, 400 when it is not JSON or not valid."""
    if not request.is_json:
        raise ApiError(415, "UnsupportedMediaType", "send the request as application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "MalformedJSON", "the body is not valid JSON")
    problems = schemas.request_errors(body, validator)
    if problems:
        raise ApiError(400, "InvalidRequest", "; ".join(problems))
    return body


def ferry_error(exc: errors.FerryError) -> ApiError:
    status = next((v for k, v in STATUS_OF.items() if isinstance(exc, k)), 400)
    return ApiError(status, type(exc).__name__, str(exc))


def needs(role: Role) -> Any:
    """Mark a view with the role it needs (read by the app's token check)."""

    def mark(fn: Any) -> Any:
        fn.ferry_role = role
        return fn

    return mark
