"""Hosts and drains under ``/api/v1``: list hosts, disable and enable one (the maintenance row a
drain also writes), and drains -- plan (``dry_run``), start (run by the server's workers), list,
show, abort."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, url_for

from ferry import errors
from ferry.api import Orchestrator
from ferry.drain.service import DrainOptions
from ferry.serve import schemas
from ferry.serve.replies import ApiError, ferry_error, json_body, needs
from ferry.serve.tokens import Role
from ferry.serve.workers import Workers


def add_host_and_drain_routes(bp: Blueprint, orch: Orchestrator, workers: Workers) -> None:
    def host_json(name: str) -> dict[str, Any]:
        return next(h for h in orch.hosts() if h["name"] == name)

    def host_error(exc: errors.FerryError) -> ApiError:
        if isinstance(exc, errors.HostNotFound):
            return ApiError(404, type(exc).__name__, str(exc))
        return ferry_error(exc)

    @bp.get("/hosts")
    @needs(Role.READER)
    def hosts() -> Response:
        return jsonify(orch.hosts())

    @bp.post("/hosts/<name>/disable")
    @needs(Role.OPERATOR)
    def disable_host(name: str) -> Response:
        body = json_body(schemas.DISABLE_VALIDATOR)
        try:
            orch.disable_host(name, body.get("reason"))
        except errors.FerryError as exc:
            raise host_error(exc) from None
        return jsonify(host_json(name))

    @bp.post("/hosts/<name>/enable")
    @needs(Role.OPERATOR)
    def enable_host(name: str) -> Response:
        try:
            orch.enable_host(name)
        except errors.FerryError as exc:
            raise host_error(exc) from None
        return jsonify(host_json(name))

    @bp.post("/drains")
    @needs(Role.OPERATOR)
    def create_drain() -> Any:
        body = json_body(schemas.DRAIN_VALIDATOR)
        options = DrainOptions(
            host=body["host"],
            max_parallel=body.get("max_parallel"),
            to=body.get("to"),
            to_group=body.get("to_group"),
            order=body.get("order") or "smallest",
            reason=body.get("reason"),
        )
        if body.get("dry_run"):
            plan = orch.drain_service.plan(options)
            return jsonify({"host": options.host, "plan": [e.to_dict() for e in plan]})
        drain_id = orch.drain_service.start(options)
        workers.start_drain(drain_id)
        resp = jsonify({"id": drain_id, "status": orch.get_drain(drain_id).status})
        resp.status_code = 202
        resp.headers["Location"] = url_for("api_v1.show_drain", drain_id=drain_id)
        return resp

    @bp.get("/drains")
    @needs(Role.READER)
    def drains() -> Response:
        return jsonify({"drains": [d.to_dict() for d in orch.drains()]})

    @bp.get("/drains/<drain_id>")
    @needs(Role.READER)
    def show_drain(drain_id: str) -> Response:
        return jsonify(orch.get_drain(drain_id).to_dict())

    @bp.post("/drains/<drain_id>/abort")
    @needs(Role.OPERATOR)
    def abort_drain(drain_id: str) -> Response:
        return jsonify(orch.abort_drain(drain_id).to_dict())
